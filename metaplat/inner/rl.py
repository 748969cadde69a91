"""RL update math as pure functions: discounted returns, GAE, the PPO loss, and the
log-probabilities and entropies of categorical and diagonal-Gaussian policies.

Shapes are time-major: ``[T, B]`` for ``T`` steps of ``B`` parallel sequences.
"""

from __future__ import annotations

import math

import torch


def discounted_returns(
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    gamma: float,
    bootstrap: torch.Tensor | None = None,
) -> torch.Tensor:
    """``G_t = r_t + gamma * (1 - terminal_t) * G_{t+1}``; ``[T, B]`` in, ``[T, B]`` out.
    ``terminals[t]`` cuts the sum after step ``t``; ``bootstrap [B]`` values the state
    after the last step (zeros if None)."""
    g = torch.zeros_like(rewards[0]) if bootstrap is None else bootstrap
    out = torch.empty_like(rewards)
    for t in range(rewards.shape[0] - 1, -1, -1):
        g = rewards[t] + gamma * (~terminals[t]).to(rewards.dtype) * g
        out[t] = g
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminals: torch.Tensor,
    gamma: float,
    lam: float,
    bootstrap: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    ``delta_t = r_t + gamma (1 - term_t) V_{t+1} - V_t``,
    ``A_t = delta_t + gamma lam (1 - term_t) A_{t+1}``. Returns ``(advantages, returns)``
    with ``returns = advantages + values`` (the value targets); all ``[T, B]``.
    """
    next_v = torch.zeros_like(values[0]) if bootstrap is None else bootstrap
    adv = torch.empty_like(values)
    a = torch.zeros_like(values[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        live = (~terminals[t]).to(values.dtype)
        delta = rewards[t] + gamma * live * next_v - values[t]
        a = delta + gamma * lam * live * a
        adv[t] = a
        next_v = values[t]
    return adv, adv + values


def categorical_logp_entropy(
    logits: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of int64 ``actions [...]`` under ``softmax(logits [..., A])`` and
    the distribution's entropy; both ``[...]``."""
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def gaussian_logp_entropy(
    mean: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-density of ``x [..., D]`` under the diagonal Gaussian ``N(mean [..., D],
    exp(log_std [D])^2)`` (summed over the ``D`` coordinates) and its entropy; both ``[...]``.
    """
    log_std = log_std.expand_as(mean)
    z = (x - mean) * torch.exp(-log_std)
    logp = (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)
    return logp, entropy


def ppo_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    clip: float,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`clipped_ppo_loss` for a categorical policy: ``logits [..., A]``, int64
    ``actions [...]``."""
    logp, entropy = categorical_logp_entropy(logits, actions)
    return clipped_ppo_loss(
        logp, entropy, values, old_logp, advantages, returns, clip, value_coef, entropy_coef
    )


def clipped_ppo_loss(
    logp: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    clip: float,
    value_coef: float,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017) plus value loss minus entropy bonus,
    for any action distribution (it only needs the log-probabilities and entropies).

    ``loss = -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))
    + value_coef * mean((V - R)^2) / 2 - entropy_coef * mean(H)``, ``ratio = exp(logp -
    old_logp)``. All arguments ``[...]``. Returns the loss and detached diagnostics
    (``policy_loss``, ``value_loss``, ``entropy``, ``clip_frac``, ``approx_kl``).
    """
    ratio = torch.exp(logp - old_logp)
    surr = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    policy_loss = -surr.mean()
    value_loss = 0.5 * (values - returns).pow(2).mean()
    entropy = entropy.mean()
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    with torch.no_grad():
        info = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "clip_frac": ((ratio - 1).abs() > clip).float().mean(),
            "approx_kl": (old_logp - logp).mean(),
        }
    return loss, info

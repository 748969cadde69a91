"""RL update math as pure functions: discounted returns, GAE, the PPO loss.

Shapes are time-major: ``[T, B]`` for ``T`` steps of ``B`` parallel sequences.
"""

from __future__ import annotations

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
    """PPO's clipped surrogate (Schulman et al. 2017) plus value loss minus entropy bonus.

    ``loss = -mean(min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A))
    + value_coef * mean((V - R)^2) / 2 - entropy_coef * mean(H)``, ``ratio = exp(logp -
    old_logp)``. ``logits [..., A]``, everything else ``[...]``. Returns the loss and
    detached diagnostics (``policy_loss``, ``value_loss``, ``entropy``, ``clip_frac``,
    ``approx_kl``).
    """
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logp - old_logp)
    surr = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    policy_loss = -surr.mean()
    value_loss = 0.5 * (values - returns).pow(2).mean()
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
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

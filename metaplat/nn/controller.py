"""The NAS-RL / NOS controller: an LSTM that emits one token per decision of a search space.

Zoph & Le (2017): a 2-layer LSTM of 35 units; at step ``t`` it reads the embedding of the
token chosen at step ``t-1`` (a learned start vector at ``t=0``) and a per-decision softmax
picks decision ``t``'s token. Everything here is a pure function of a params dict; the
mutable parts (params, Adam moments, baseline, counters, seed) live in :class:`ControllerState`,
which round-trips through :meth:`ControllerState.state_dict` and ``torch.load(weights_only=True)``.

Two update rules (``ControllerConfig.algorithm``), both on advantages ``R - b`` with the same
exponential-moving-average baseline ``b``, the same entropy bonus, Adam and gradient clipping:

- ``reinforce`` (default; Zoph & Le 2017): one unbiased gradient step per batch, each child's
  reward used once. Use it for long searches (thousands of children, where the paper's small
  learning rate is safe), for ``update: async`` (one-program batches, where several epochs on
  one reward mostly overfit it), and to reproduce NAS-RL's setting.
- ``ppo`` (Zoph et al. 2018, Bello et al. 2017): ``ppo_epochs`` steps per batch on the clipped
  surrogate ``min(r A, clip(r, 1 - c, 1 + c) A)``, ``r = p / p_old``, ``p_old`` the policy
  before the update. It gets more learning out of each (expensive) child's reward, while the
  clip stops a batch from moving a program's probability by more than a factor ``1 +- c``;
  use it for short searches with expensive children and ``sync`` batches. It costs
  ``ppo_epochs`` controller forward/backward passes per batch (negligible next to training
  children); with ``ppo_epochs=1`` its step is REINFORCE's (``r = 1`` at the old policy).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from metaplat.seeding import derive_seed

Params = dict[str, torch.Tensor]

ALGORITHMS = ("reinforce", "ppo")


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """Controller architecture and update-rule settings (defaults: Zoph & Le 2017)."""

    hidden: int = 35
    """LSTM units per layer (also the token-embedding size)."""
    layers: int = 2
    """Number of stacked LSTM layers."""
    lr: float = 6e-4
    """Adam learning rate of the controller (the paper's 6e-4 suits 10k children; raise it
    for searches of a few hundred children)."""
    baseline_decay: float = 0.95
    """EMA decay of the reward baseline: ``b <- decay * b + (1 - decay) * mean(R)``."""
    entropy_coef: float = 1e-4
    """Weight of the entropy bonus (summed over decisions) in the loss."""
    init_range: float = 0.1
    """Parameters start uniform in ``[-init_range, init_range]``."""
    tanh_constant: float | None = None
    """If set, logits are ``c * tanh(logits)`` (ENAS's trick against early collapse)."""
    temperature: float = 1.0
    """Softmax temperature of the sampling policy (the gradient uses the same policy)."""
    grad_clip: float | None = 5.0
    """Clip the controller gradient to this global norm (``None``: no clipping)."""
    algorithm: Literal["reinforce", "ppo"] = "reinforce"
    """Update rule: ``reinforce`` (one step per batch) or ``ppo`` (see the module docstring)."""
    ppo_epochs: int = 4
    """``ppo`` only: gradient steps on the clipped surrogate per batch of programs."""
    ppo_clip: float = 0.2
    """``ppo`` only: the probability ratio is clipped to ``[1 - ppo_clip, 1 + ppo_clip]``."""

    def __post_init__(self) -> None:
        for name in ("hidden", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "init_range", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), got {self.baseline_decay}")
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.tanh_constant is not None and self.tanh_constant <= 0:
            raise ValueError(f"tanh_constant must be > 0 or None, got {self.tanh_constant}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"algorithm {self.algorithm!r} not allowed; allowed: {', '.join(ALGORITHMS)}"
            )
        if type(self.ppo_epochs) is not int or self.ppo_epochs < 1:
            raise ValueError(f"ppo_epochs must be an int >= 1, got {self.ppo_epochs!r}")
        if not 0.0 < self.ppo_clip < 1.0:
            raise ValueError(f"ppo_clip must be in (0, 1), got {self.ppo_clip}")

    @property
    def steps_per_update(self) -> int:
        """Adam steps per batch: 1 for ``reinforce``, ``ppo_epochs`` for ``ppo``."""
        return self.ppo_epochs if self.algorithm == "ppo" else 1


@dataclasses.dataclass
class ControllerState:
    """Everything that changes while the controller learns; saved and restored whole."""

    params: Params
    adam_m: Params
    adam_v: Params
    seed: int
    """Root seed: the ``k``-th sampling call uses ``derive_seed(seed, "sample", k)``."""
    num_sampled: int = 0
    """Number of sampling calls so far (not programs)."""
    num_updates: int = 0
    """Number of batches learned from; Adam's step count is ``num_updates *
    config.steps_per_update`` (derived, so PPO needs no extra state)."""
    baseline: float | None = None
    """EMA of rewards; ``None`` until the first update."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors, ints, floats and ``None`` only: loads with ``torch.load(weights_only=True)``."""
        return {
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "adam_m": {k: v.clone() for k, v in self.adam_m.items()},
            "adam_v": {k: v.clone() for k, v in self.adam_v.items()},
            "seed": int(self.seed),
            "num_sampled": int(self.num_sampled),
            "num_updates": int(self.num_updates),
            "baseline": None if self.baseline is None else float(self.baseline),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> ControllerState:
        return cls(
            params={k: v.clone() for k, v in d["params"].items()},
            adam_m={k: v.clone() for k, v in d["adam_m"].items()},
            adam_v={k: v.clone() for k, v in d["adam_v"].items()},
            seed=int(d["seed"]),
            num_sampled=int(d["num_sampled"]),
            num_updates=int(d["num_updates"]),
            baseline=None if d["baseline"] is None else float(d["baseline"]),
        )


@dataclasses.dataclass(frozen=True)
class Samples:
    """``m`` programs: ``tokens [m, T]`` int64, ``log_probs [m]`` and ``entropy [m]`` (summed
    over the ``T`` decisions)."""

    tokens: torch.Tensor
    log_probs: torch.Tensor
    entropy: torch.Tensor


def init_params(vocab: Sequence[int], config: ControllerConfig, seed: int) -> Params:
    """Fresh controller parameters for decisions with vocabulary sizes ``vocab``."""
    g = torch.Generator().manual_seed(derive_seed(seed, "controller_init") % 2**63)
    h, r = config.hidden, config.init_range

    def u(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) * 2 - 1) * r

    p: Params = {"start": u(h)}
    for layer in range(config.layers):
        p[f"lstm{layer}/w_ih"] = u(4 * h, h)
        p[f"lstm{layer}/w_hh"] = u(4 * h, h)
        p[f"lstm{layer}/b"] = u(4 * h)
    for i, v in enumerate(vocab):
        if i + 1 < len(vocab):  # the last token is never fed back
            p[f"embed{i}"] = u(v, h)
        p[f"head{i}/w"] = u(v, h)
        p[f"head{i}/b"] = torch.zeros(v)
    return p


def _rollout(
    params: Params,
    vocab: Sequence[int],
    config: ControllerConfig,
    m: int,
    tokens: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Samples:
    """Run the LSTM over all decisions; sample tokens (``tokens=None``) or score given ones."""
    h_dim = config.hidden
    hs = [params["start"].new_zeros(m, h_dim) for _ in range(config.layers)]
    cs = [params["start"].new_zeros(m, h_dim) for _ in range(config.layers)]
    x = params["start"].expand(m, h_dim)
    out_tokens, logps, ents = [], [], []
    for i, _ in enumerate(vocab):
        for layer in range(config.layers):
            gates = (
                x @ params[f"lstm{layer}/w_ih"].T
                + hs[layer] @ params[f"lstm{layer}/w_hh"].T
                + params[f"lstm{layer}/b"]
            )
            ig, fg, gg, og = gates.chunk(4, dim=-1)
            cs[layer] = torch.sigmoid(fg) * cs[layer] + torch.sigmoid(ig) * torch.tanh(gg)
            hs[layer] = torch.sigmoid(og) * torch.tanh(cs[layer])
            x = hs[layer]
        logits = x @ params[f"head{i}/w"].T + params[f"head{i}/b"]
        if config.tanh_constant is not None:
            logits = config.tanh_constant * torch.tanh(logits)
        log_p = torch.log_softmax(logits / config.temperature, dim=-1)
        if tokens is None:
            tok = torch.multinomial(log_p.detach().exp(), 1, generator=generator).squeeze(-1)
        else:
            tok = tokens[:, i]
        out_tokens.append(tok)
        logps.append(log_p.gather(-1, tok[:, None]).squeeze(-1))
        ents.append(-(log_p.exp() * log_p).sum(-1))
        if i + 1 < len(vocab):
            x = params[f"embed{i}"][tok]
    return Samples(
        torch.stack(out_tokens, 1), torch.stack(logps, 1).sum(1), torch.stack(ents, 1).sum(1)
    )


def log_probs(
    params: Params, vocab: Sequence[int], config: ControllerConfig, tokens: torch.Tensor
) -> Samples:
    """Teacher-forced scores of ``tokens [m, T]`` (differentiable in ``params``)."""
    return _rollout(params, vocab, config, tokens.shape[0], tokens=tokens.long())


class Controller:
    """The controller for one space: ``init``, ``sample``, ``update`` over :class:`ControllerState`.

    Holds only static facts (vocabulary sizes, config); all state is passed in and returned.
    """

    def __init__(self, vocab: Sequence[int], config: ControllerConfig | None = None):
        if not vocab or any(v < 1 for v in vocab):
            raise ValueError(f"vocab must be non-empty sizes >= 1, got {list(vocab)}")
        self.vocab = list(vocab)
        self.config = config or ControllerConfig()

    def init(self, seed: int) -> ControllerState:
        params = init_params(self.vocab, self.config, seed)
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return ControllerState(params, zeros, {k: v.clone() for k, v in zeros.items()}, seed)

    def sample(self, state: ControllerState, m: int) -> tuple[ControllerState, Samples]:
        """Sample ``m`` programs from the current policy; returns the advanced state."""
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        g = torch.Generator().manual_seed(
            derive_seed(state.seed, "sample", state.num_sampled) % 2**63
        )
        with torch.no_grad():
            s = _rollout(state.params, self.vocab, self.config, m, generator=g)
        return dataclasses.replace(state, num_sampled=state.num_sampled + 1), s

    def update(
        self, state: ControllerState, tokens: torch.Tensor, rewards: torch.Tensor
    ) -> tuple[ControllerState, dict[str, float]]:
        """Learn from programs ``tokens [m, T]`` with ``rewards [m]`` (one batch).

        Advantages ``A = R - b`` use the baseline ``b`` from before this batch (the first
        batch uses its own mean reward). ``reinforce``: one step on
        ``-mean(A log p) - entropy_coef * mean(H)``. ``ppo``: ``ppo_epochs`` steps on
        ``-mean(min(r A, clip(r) A)) - entropy_coef * mean(H)``, ``r = p / p_old`` with
        ``p_old`` scored under ``state.params`` (the policy before this update). Then, once
        per batch, ``b <- decay * b + (1 - decay) * mean(R)``. Metrics ``loss``, ``entropy``
        and ``grad_norm`` are those of the first step (the policy before the update); ``ppo``
        adds ``clip_fraction``, the share of programs whose ratio was outside the clip range,
        averaged over the epochs (a large one means too many epochs or too high a ``lr``).
        """
        cfg = self.config
        rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
        if rewards.shape[0] != tokens.shape[0]:
            raise ValueError(f"{tokens.shape[0]} programs but {rewards.shape[0]} rewards")
        b = float(rewards.mean()) if state.baseline is None else state.baseline
        adv = rewards - b
        old_log_probs = None
        if cfg.algorithm == "ppo":
            with torch.no_grad():
                old_log_probs = log_probs(state.params, self.vocab, cfg, tokens).log_probs
        baseline = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * float(rewards.mean())
        params, adam_m, adam_v = state.params, state.adam_m, state.adam_v
        steps = cfg.steps_per_update
        metrics: dict[str, float] = {}
        outside: list[float] = []  # per epoch: share of programs with the ratio clipped
        for epoch in range(steps):
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            loss, s, ratio = _loss(leaves, self.vocab, cfg, tokens, adv, old_log_probs)
            grads, gnorm = _clipped_grads(loss, leaves, cfg.grad_clip)
            t = state.num_updates * steps + epoch + 1
            params, adam_m, adam_v = _adam_step(params, adam_m, adam_v, grads, t, cfg.lr)
            if epoch == 0:
                metrics = {
                    "controller/loss": float(loss.detach()),
                    "controller/reward_mean": float(rewards.mean()),
                    "controller/advantage_mean": float(adv.mean()),
                    "controller/baseline": baseline,
                    "controller/entropy": float(s.entropy.detach().mean()),
                    "controller/grad_norm": gnorm,
                }
            if ratio is not None:
                outside.append(float(((ratio - 1).abs() > cfg.ppo_clip).float().mean()))
        if outside:
            metrics["controller/clip_fraction"] = sum(outside) / len(outside)
        new_state = dataclasses.replace(
            state, params=params, adam_m=adam_m, adam_v=adam_v,
            num_updates=state.num_updates + 1, baseline=baseline,
        )  # fmt: skip
        return new_state, metrics


def _loss(
    params: Params,
    vocab: Sequence[int],
    config: ControllerConfig,
    tokens: torch.Tensor,
    adv: torch.Tensor,
    old_log_probs: torch.Tensor | None,
) -> tuple[torch.Tensor, Samples, torch.Tensor | None]:
    """The loss to minimise at ``params``, its scores, and PPO's ratio ``p / p_old`` (detached).

    ``old_log_probs=None``: REINFORCE's ``-mean(A log p)``; else PPO's clipped surrogate
    ``-mean(min(r A, clip(r, 1 - c, 1 + c) A))``, whose gradient equals REINFORCE's at
    ``r = 1`` and vanishes for a program once ``r`` leaves the clip range in the direction its
    advantage pushes. Both subtract ``entropy_coef * mean(H)``.
    """
    s = log_probs(params, vocab, config, tokens)
    if old_log_probs is None:
        ratio = None
        objective = (adv * s.log_probs).mean()
    else:
        ratio = (s.log_probs - old_log_probs).exp()
        clipped = ratio.clamp(1 - config.ppo_clip, 1 + config.ppo_clip)
        objective = torch.minimum(ratio * adv, clipped * adv).mean()
    loss = -objective - config.entropy_coef * s.entropy.mean()
    return loss, s, None if ratio is None else ratio.detach()


def _clipped_grads(
    loss: torch.Tensor, leaves: Params, grad_clip: float | None
) -> tuple[Params, float]:
    """Gradients of ``loss`` w.r.t. ``leaves``, scaled down to global norm ``grad_clip`` if
    above it (``None``: never); also the norm before clipping."""
    names = list(leaves)
    grads = dict(zip(names, torch.autograd.grad(loss, [leaves[k] for k in names]), strict=True))
    gnorm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    if grad_clip is not None and gnorm > grad_clip:
        grads = {k: g * (grad_clip / gnorm) for k, g in grads.items()}
    return grads, gnorm


def _adam_step(
    params: Params, adam_m: Params, adam_v: Params, grads: Params, t: int, lr: float
) -> tuple[Params, Params, Params]:
    """Adam's ``t``-th step (1-based; betas 0.9, 0.999): new params and moments; the inputs
    are not modified."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    new_p, new_m, new_v = {}, {}, {}
    for k, g in grads.items():
        new_m[k] = b1 * adam_m[k] + (1 - b1) * g
        new_v[k] = b2 * adam_v[k] + (1 - b2) * g * g
        step = lr * (new_m[k] / (1 - b1**t)) / ((new_v[k] / (1 - b2**t)).sqrt() + eps)
        new_p[k] = params[k].detach() - step
    return new_p, new_m, new_v

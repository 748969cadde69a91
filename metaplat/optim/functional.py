"""Functional SGD and Adam over parameter dicts: ``init(params) -> state``, ``update(...)``.

The same two functions serve the outer update (meta-parameters, state checkpointed as plain
tensors) and inner loops (stacked per-task parameters ``[T, ...]``: every operation is
element-wise, so one call updates all tasks at once, and updates stay differentiable).
The math matches ``torch.optim.SGD`` / ``torch.optim.Adam`` (no weight decay, no amsgrad).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch

Params = dict[str, torch.Tensor]


def sgd_update(
    params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], lr: float
) -> Params:
    """``p - lr * g`` for every name in ``grads`` (other entries pass through unchanged)."""
    return {k: (v - lr * grads[k]) if k in grads else v for k, v in params.items()}


@dataclasses.dataclass
class AdamState:
    """Adam's moments for each parameter, and the number of updates taken so far."""

    step: int
    m: Params
    v: Params


def adam_init(params: Mapping[str, torch.Tensor]) -> AdamState:
    """Zero moments shaped like ``params``."""
    return AdamState(
        step=0,
        m={k: torch.zeros_like(p) for k, p in params.items()},
        v={k: torch.zeros_like(p) for k, p in params.items()},
    )


def adam_update(
    params: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    state: AdamState,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> tuple[Params, AdamState]:
    """One Adam step on the names in ``grads``; returns new params and new state (no mutation)."""
    b1, b2 = betas
    t = state.step + 1
    bc1 = 1 - b1**t
    bc2 = 1 - b2**t
    keys = list(grads)
    g = [grads[k] for k in keys]
    # torch._foreach_* (not in-place variants): one dispatch per formula term for all tensors
    m = torch._foreach_add(torch._foreach_mul([state.m[k] for k in keys], b1), g, alpha=1 - b1)
    v = torch._foreach_addcmul(
        torch._foreach_mul([state.v[k] for k in keys], b2), g, g, value=1 - b2
    )
    # torch.optim.Adam's formula: p - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    denom = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(v), math.sqrt(bc2)), eps)
    new = torch._foreach_sub(
        [params[k] for k in keys], torch._foreach_div(m, denom), alpha=lr / bc1
    )
    new_p, new_m, new_v = dict(params), dict(state.m), dict(state.v)
    for i, k in enumerate(keys):
        new_p[k], new_m[k], new_v[k] = new[i], m[i], v[i]
    return new_p, AdamState(step=t, m=new_m, v=new_v)

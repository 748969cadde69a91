"""Gamma and Beta samples drawn from an explicit ``torch.Generator`` (torch's own gamma
sampler takes no generator, and randomness is an argument here)."""

from __future__ import annotations

import torch


def beta_sample(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Beta(a, b) samples as a ratio of gammas drawn from ``gen``."""
    # torch's own gamma sampler takes no generator, and randomness must be an argument.
    ga, gb = gamma_sample(a, gen), gamma_sample(b, gen)
    return ga / (ga + gb)


def gamma_sample(alpha: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gamma(alpha, 1) samples (Marsaglia & Tsang 2000) using only ``gen``; alpha > 0."""
    boost = alpha < 1
    a = torch.where(boost, alpha + 1.0, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        z = torch.randn(a.shape, generator=gen, device=a.device, dtype=a.dtype)
        u = torch.rand(a.shape, generator=gen, device=a.device, dtype=a.dtype)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (
            torch.log(u.clamp_min(1e-300))
            < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300))
        )
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=gen, device=a.device, dtype=a.dtype)
    return torch.where(boost, out * u ** (1.0 / alpha), out)

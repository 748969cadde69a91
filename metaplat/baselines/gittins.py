"""Gittins indices of Bernoulli arms with Beta posteriors, by calibration.

Method (the standard retirement calibration, Gittins 1979; computed as in Chakravorty &
Mahajan's survey, "calibration with a retirement option"): for a retirement reward
``lam`` per step, the value of posterior state ``(a, b)`` (Beta(a, b), ``a, b >= 1``) is

    V(a, b) = max(lam / (1 - g), p (1 + g V(a+1, b)) + (1 - p) g V(a, b+1)),  p = a / (a+b)

computed by backward induction from a truncation depth ``a + b = D`` where
``V = max(lam, p) / (1 - g)`` (no further learning). The index of ``(a, b)`` is the ``lam``
at which continuing and retiring are equal, found on a grid of ``lam`` (vectorised over
all grid values at once) and refined by linear interpolation between grid points.

This is the *discounted* (infinite-horizon) index; RL²'s bandit trials have a finite
horizon ``n``, which the discount approximates: use ``g`` close to ``1 - 1/n`` and tune it
per horizon (the table command tries a few).
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=8)
def gittins_table(gamma: float, max_pulls: int, grid: int = 1001) -> torch.Tensor:
    """Indices ``G [M + 1, M + 1]`` (float64, CPU): ``G[s, f]`` is the index of an arm with
    ``s`` successes and ``f`` failures under a Beta(1, 1) prior, for ``s + f <= M``
    (``M = max_pulls``; entries beyond hold the posterior mean).

    Raises ``ValueError`` unless ``0 < gamma < 1`` and ``max_pulls >= 0``.
    """
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    if max_pulls < 0:
        raise ValueError(f"max_pulls must be >= 0, got {max_pulls}")
    m = max_pulls
    depth = m + 2 + max(20, min(int(2.0 / (1.0 - gamma)), 300))  # a + b at truncation
    lam = torch.linspace(0.0, 1.0, grid, dtype=torch.float64)[:, None]  # [L, 1]
    retire = lam / (1.0 - gamma)
    # Layer n holds states a + b = n, indexed by a = 1..n-1.
    a = torch.arange(1, depth, dtype=torch.float64)
    v = torch.maximum(lam, a / depth) / (1.0 - gamma)  # [L, depth - 1]
    table = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    s_idx = torch.arange(m + 1)
    table += (s_idx[:, None] + 1.0) / (s_idx[:, None] + s_idx[None, :] + 2.0)
    for n in range(depth - 1, 1, -1):
        a = torch.arange(1, n, dtype=torch.float64)
        p = a / n
        # successors of (a, n - a): (a + 1, n - a) is index a in layer n + 1 (a from 1),
        # (a, n - a + 1) is index a - 1.
        cont = p * (1.0 + gamma * v[:, 1:n]) + (1.0 - p) * gamma * v[:, 0 : n - 1]
        if n - 2 <= m:
            diff = cont - retire  # decreasing in lam; the index is its zero
            below = (diff > 0).sum(dim=0).clamp(1, grid - 1)  # first grid index with diff <= 0
            d0 = diff.gather(0, (below - 1)[None]).squeeze(0)
            d1 = diff.gather(0, below[None]).squeeze(0)
            l0 = lam[below - 1, 0]
            frac = torch.where(d0 - d1 > 0, d0 / (d0 - d1), torch.zeros_like(d0))
            index = l0 + frac / (grid - 1)
            s = a.long() - 1
            table[s, (n - 2) - s] = index
        v = torch.maximum(retire, cont)
    return table

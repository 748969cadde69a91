"""Counter-based randomness for environments that must agree with their batched twins.

A gymnasium env and its batched torch twin draw the *same* numbers when every random
number is a pure function of ``(episode key, counter)``: no generator state to keep in
step, any batch size, any device. Keys are int64 tensors; the hash is splitmix64 written in
torch int64 arithmetic (wrap-around multiply, masked logical shifts), so CPU and CUDA give
bit-identical integers and therefore identical uniforms.

The rule every stochastic metaplat env follows (see ``environments/batched.py``):

* ``keys = episode_keys(task_seeds, seed, previous)`` at reset, with the batch of task
  seeds (``spec.seed``); env ``i`` of a batch reset with ``seed`` uses ``seed + i``, the
  convention of gymnasium's vector envs, so a gymnasium env is simply a batch of one;
  ``seed=None`` advances the previous keys (``hash64(previous)``) so seeded runs continue
  deterministically, or draws fresh keys from OS entropy if there are none.
* the ``j``-th number an env needs in an episode is ``uniform(keys, j)`` (or ``normal`` /
  ``categorical``), with ``j`` a fixed layout such as ``step * draws_per_step + slot``;
  different kinds of draws use different ``substream(keys, k)``.

Example (a Bernoulli bandit pull at step ``t``)::

    reward = (uniform(keys, t) < probs[arange(B), action]).float()

and a tabular-MDP step (``P [B, S, A, S]``, reward means ``mu [B, S, A]``)::

    s_next = categorical(substream(keys, 0), t, P[arange(B), s, a])
    reward = mu[arange(B), s, a] + normal(substream(keys, 1), t)
"""

from __future__ import annotations

import math

import numpy as np
import torch

MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """The int64 value with the same 64 bits as the unsigned ``x``."""
    x &= MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


# splitmix64 constants (Steele, Lea, Flood 2014), as signed int64.
_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def hash64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser: a bijective mix of int64 ``x`` (any shape), same shape out."""
    x = x.to(torch.int64)
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def _as_int64(x: torch.Tensor | int, like: torch.Tensor | None = None) -> torch.Tensor:
    device = like.device if like is not None else None
    if isinstance(x, torch.Tensor):
        return x.to(dtype=torch.int64, device=device)
    return torch.tensor(_signed(int(x)), dtype=torch.int64, device=device)


def bits(keys: torch.Tensor, counter: torch.Tensor | int) -> torch.Tensor:
    """64 random bits (int64) for ``(key, counter)``; ``keys`` and ``counter`` broadcast.

    This is output number ``counter`` of a splitmix64 stream whose state is ``key``.
    """
    c = _as_int64(counter, keys)
    return hash64(keys + (c + 1) * _GOLDEN)


def substream(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """Keys of an independent stream ``stream`` (e.g. 0: transitions, 1: rewards), so
    consumers that would otherwise share counters never collide."""
    return hash64(keys ^ hash64(_as_int64(stream + 1, keys)))


def uniform(
    keys: torch.Tensor, counter: torch.Tensor | int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Uniforms in ``[0, 1)`` for ``(keys, counter)`` (broadcast), exact multiples of 2^-24
    (float32) or 2^-53 (float64), so every device returns the same floats."""
    b = bits(keys, counter)
    if dtype == torch.float64:
        return _shr(b, 11).to(torch.float64) * 2.0**-53
    if dtype == torch.float32:
        return _shr(b, 40).to(torch.float32) * 2.0**-24
    # Half precision would round values near 1 up to 1.0, breaking the [0, 1) contract.
    raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def normal(
    keys: torch.Tensor, counter: torch.Tensor | int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normals for ``(keys, counter)`` by Box-Muller on counters ``2c`` and ``2c+1``
    (so do not mix ``uniform`` and ``normal`` on the same keys; use :func:`substream`).

    Computed in float64 and cast, so twins agree to float rounding of ``log``/``cos``.
    """
    c = _as_int64(counter, keys)
    u1 = uniform(keys, 2 * c, torch.float64)
    u2 = uniform(keys, 2 * c + 1, torch.float64)
    z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(dtype)


def categorical(
    keys: torch.Tensor, counter: torch.Tensor | int, probs: torch.Tensor
) -> torch.Tensor:
    """One draw per key from ``probs [..., K]`` (rows summing to 1); int64 ``[...]``.

    Inverse-CDF on ``uniform(keys, counter)`` in float64; ``keys`` must broadcast to
    ``probs.shape[:-1]``.
    """
    u = uniform(keys, counter, torch.float64)
    cdf = torch.cumsum(probs.to(torch.float64), dim=-1)
    idx = (u.unsqueeze(-1) >= cdf).sum(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def episode_keys(
    task_seeds: torch.Tensor,
    seed: int | None,
    previous: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-env episode keys at reset (the rule in the module docstring); int64 ``[B]``.

    Args:
        task_seeds: int64 ``[B]``, each env's ``spec.seed`` (any int64 for ad-hoc envs).
        seed: the reset seed; env ``i`` uses ``seed + i``. ``None`` advances ``previous``.
        previous: the keys of the last episode, or ``None`` if the env was never reset.
    """
    task_seeds = task_seeds.to(torch.int64)
    if seed is None:
        if previous is not None:
            return hash64(previous)
        fresh = np.random.default_rng().integers(0, 2**62, size=task_seeds.shape)
        per_env = torch.as_tensor(fresh, dtype=torch.int64, device=task_seeds.device)
    else:
        per_env = _as_int64(seed, task_seeds) + torch.arange(
            task_seeds.shape[0], dtype=torch.int64, device=task_seeds.device
        )
    # Two rounds keep (task, seed) and (seed, task) apart.
    return hash64(hash64(task_seeds) ^ (per_env + _GOLDEN))


def reference_splitmix64(state: int, n: int) -> list[int]:
    """Plain-Python splitmix64 outputs ``0..n-1`` from ``state`` (unsigned), for tests."""
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append(z ^ (z >> 31))
    return out

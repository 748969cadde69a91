"""CartPole with randomised physics: one task per (pole length, pole mass, cart mass, force).

Default ranges span half to twice gymnasium's CartPole-v1 constants (half-length 0.5 m,
pole 0.1 kg, cart 1.0 kg); the push force stays at 10 N unless ``force_mag`` is given a
range. Each quantity is drawn uniformly and independently; a range ``(v, v)`` fixes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from environments.cartpole_physics import BatchedCartPole, CartPolePhysicsEnv
from metaplat.tasks.base import RLFamily, Split, TaskSpec

_PHYSICS = ("length", "masspole", "masscart", "force_mag")


@dataclasses.dataclass(frozen=True, repr=False)
class CartPolePhysicsFamily(RLFamily):
    """Balance a pole whose physics vary per task; see :mod:`environments.cartpole_physics`."""

    length: tuple[float, float] = (0.25, 1.0)
    """Half the pole length in metres, U[low, high] (gymnasium: 0.5)."""
    masspole: tuple[float, float] = (0.05, 0.2)
    """Pole mass in kg, U[low, high] (gymnasium: 0.1)."""
    masscart: tuple[float, float] = (0.5, 2.0)
    """Cart mass in kg, U[low, high] (gymnasium: 1.0)."""
    force_mag: tuple[float, float] = (10.0, 10.0)
    """Push force in N, U[low, high]; fixed at gymnasium's 10 N by default."""
    horizon: int = 500
    """Steps per episode before truncation (CartPole-v1: 500)."""

    name = "cartpole_physics"
    description = "CartPole with random pole length, pole mass, cart mass (and force)"
    batchable = True

    def __post_init__(self) -> None:
        for field in _PHYSICS:
            lo, hi = getattr(self, field)
            if not 0 < lo <= hi:
                raise ValueError(
                    f"{field} must be (low, high) with 0 < low <= high, got {(lo, hi)}"
                )
            object.__setattr__(self, field, (float(lo), float(hi)))
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")

    def config(self) -> dict[str, Any]:
        return {f: list(getattr(self, f)) for f in _PHYSICS} | {"horizon": self.horizon}

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        # Always four draws in this order, so a fixed range does not shift the others.
        return {f: float(rng.uniform(*getattr(self, f))) for f in _PHYSICS}

    def build(self, spec: TaskSpec) -> CartPolePhysicsEnv:
        """The gymnasium env with the spec's physics; start states keyed by ``spec.seed``."""
        physics = {f: float(spec.params[f]) for f in _PHYSICS}
        return CartPolePhysicsEnv(**physics, horizon=self.horizon, task_seed=spec.seed)

    def build_batched(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> BatchedCartPole:
        """One batched env whose row ``i`` is ``build(specs[i])``."""
        physics = {f: [float(s.params[f]) for s in specs] for f in _PHYSICS}
        seeds = [s.seed for s in specs]
        return BatchedCartPole(physics, seeds, device=device, horizon=self.horizon)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "params": {f: f"U{list(getattr(self, f))}" for f in _PHYSICS},
            "env": f"gymnasium CartPole dynamics, horizon {self.horizon}",
        }

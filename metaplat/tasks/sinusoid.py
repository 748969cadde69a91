"""Sinusoid regression (Finn et al. 2017): y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi]."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from metaplat.tasks.base import Episode, Split, SupervisedFamily, TaskSpec


@dataclasses.dataclass(frozen=True, repr=False)
class SinusoidFamily(SupervisedFamily):
    """Few-shot sinusoid regression; ``x ~ U[x_low, x_high]`` for support and query points."""

    num_support: int = 10
    """K: support points per task."""
    num_query: int = 10
    """Query points per task (the meta-objective is measured on these)."""
    amplitude: tuple[float, float] = (0.1, 5.0)
    """Range of the amplitude A."""
    phase: tuple[float, float] = (0.0, math.pi)
    """Range of the phase."""
    x_range: tuple[float, float] = (-5.0, 5.0)
    """Range of the inputs x."""

    name = "sinusoid"
    description = "y = A sin(x - phase); MAML's regression benchmark"

    def __post_init__(self) -> None:
        if self.num_support < 1 or self.num_query < 1:
            raise ValueError(
                f"num_support and num_query must be >= 1, got {self.num_support}, {self.num_query}"
            )
        for field in ("amplitude", "phase", "x_range"):
            lo, hi = getattr(self, field)
            if not lo < hi:
                raise ValueError(f"{field} must be (low, high) with low < high, got {(lo, hi)}")
            object.__setattr__(self, field, (float(lo), float(hi)))

    def config(self) -> dict[str, Any]:
        return {
            "num_support": self.num_support,
            "num_query": self.num_query,
            "amplitude": list(self.amplitude),
            "phase": list(self.phase),
            "x_range": list(self.x_range),
        }

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        return {
            "amplitude": float(rng.uniform(*self.amplitude)),
            "phase": float(rng.uniform(*self.phase)),
        }

    def build(self, spec: TaskSpec) -> Episode:
        """Support ``[K, 1]`` and query ``[Nq, 1]`` float32 points of the spec's sinusoid."""
        rng = np.random.default_rng([spec.seed, 1])  # data stream, separate from params
        n = self.num_support + self.num_query
        x = rng.uniform(*self.x_range, size=(n, 1))
        y = spec.params["amplitude"] * np.sin(x - spec.params["phase"])
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        k = self.num_support
        return Episode(xt[:k], yt[:k], xt[k:], yt[k:])

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "params": {"amplitude": f"U{list(self.amplitude)}", "phase": f"U{list(self.phase)}"},
            "data": f"x ~ U{list(self.x_range)}, "
            f"{self.num_support} support / {self.num_query} query",
        }

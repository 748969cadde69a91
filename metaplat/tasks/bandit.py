"""Bernoulli bandits (RL², Duan et al. 2016): ``k`` arms, ``p_i ~ U[0, 1]`` per task.

The trial length ``n`` (pulls per task) is a setting of the RL² method, not of the family:
each pull is one episode of length 1 (see :mod:`environments.bandit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from environments.bandit import BanditEnv, BatchedBandit
from metaplat.tasks.base import RLFamily, Split, TaskSpec


@dataclasses.dataclass(frozen=True, repr=False)
class BanditFamily(RLFamily):
    """``k``-armed Bernoulli bandits with independent uniform arm probabilities."""

    num_arms: int = 5
    """k: arms per task."""

    name = "bandit"
    description = "k-armed Bernoulli bandits, p_i ~ U[0, 1] (RL² section 4.1)"
    batchable = True

    def __post_init__(self) -> None:
        if not isinstance(self.num_arms, int) or self.num_arms < 1:
            raise ValueError(f"num_arms must be an integer >= 1, got {self.num_arms!r}")

    def config(self) -> dict[str, Any]:
        return {"num_arms": self.num_arms}

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        return {"probs": [float(p) for p in rng.uniform(0.0, 1.0, size=self.num_arms)]}

    def build(self, spec: TaskSpec) -> BanditEnv:
        """The gymnasium env of the spec; reward noise keyed by ``spec.seed``."""
        return BanditEnv(spec.params["probs"], task_seed=spec.seed)

    def build_batched(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> BatchedBandit:
        return BatchedBandit(
            [s.params["probs"] for s in specs], [s.seed for s in specs], device=device
        )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "params": {"probs": f"{self.num_arms} x U[0, 1]"},
            "episodes": "one pull per episode (obs: constant [1.0]); reward Bernoulli(p_a)",
        }

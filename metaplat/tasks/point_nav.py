"""2D point navigation (MAML-RL): one task per goal, goal ~ U[goal_low, goal_high]^2."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from environments.point_nav import REWARDS, BatchedPointNav, PointNavEnv
from metaplat.tasks.base import RLFamily, Split, TaskSpec


@dataclasses.dataclass(frozen=True, repr=False)
class PointNavFamily(RLFamily):
    """Point robot from the origin to a sampled goal; see :mod:`environments.point_nav`."""

    goal_range: tuple[float, float] = (-0.5, 0.5)
    """Each goal coordinate is drawn from U[low, high]."""
    horizon: int = 100
    """Steps per episode."""
    max_action: float = 0.1
    """Actions are clipped to [-max_action, max_action]^2."""
    reward: str = "distance"
    """'distance' (-|pos - goal|, the released code) or 'squared' (the paper's text)."""
    goal_tolerance: float = 0.01
    """An episode terminates when both coordinates are this close to the goal; 0: never."""

    name = "point_nav"
    description = "2D point robot navigating to a random goal; MAML-RL's navigation benchmark"
    batchable = True

    def __post_init__(self) -> None:
        lo, hi = self.goal_range
        if not lo < hi:
            raise ValueError(f"goal_range must be (low, high) with low < high, got {(lo, hi)}")
        object.__setattr__(self, "goal_range", (float(lo), float(hi)))
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if not self.max_action > 0:
            raise ValueError(f"max_action must be > 0, got {self.max_action}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.goal_tolerance < 0:
            raise ValueError(f"goal_tolerance must be >= 0, got {self.goal_tolerance}")

    def config(self) -> dict[str, Any]:
        return {
            "goal_range": list(self.goal_range),
            "horizon": self.horizon,
            "max_action": self.max_action,
            "reward": self.reward,
            "goal_tolerance": self.goal_tolerance,
        }

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        return {"goal": [float(g) for g in rng.uniform(*self.goal_range, size=2)]}

    def _env_kwargs(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "max_action": self.max_action,
            "reward": self.reward,  # type: ignore[dict-item]
            "goal_tolerance": self.goal_tolerance,
        }

    def build(self, spec: TaskSpec) -> PointNavEnv:
        """The gymnasium env of the spec's goal (truncates itself after ``horizon`` steps)."""
        return PointNavEnv(goal=tuple(spec.params["goal"]), **self._env_kwargs())

    def build_batched(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> BatchedPointNav:
        """One batched env whose row ``i`` is ``build(specs[i])``, identified by its seed."""
        goals = torch.tensor([list(s.params["goal"]) for s in specs], dtype=torch.float32)
        return BatchedPointNav(
            goals.reshape(-1, 2),
            device=device,
            task_seeds=[s.seed for s in specs],
            **self._env_kwargs(),
        )

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "params": {"goal": f"U{list(self.goal_range)}^2"},
            "env": f"start (0,0), |a| <= {self.max_action}, horizon {self.horizon}, "
            f"reward -{self.reward}",
        }

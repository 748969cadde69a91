"""Random tabular MDPs (RL², Duan et al. 2016): ``mu ~ N(1, 1)``, ``P ~ Dirichlet(1)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from environments.tabular_mdp import BatchedTabularMDP, TabularMDPEnv, sample_mdp
from metaplat.tasks.base import RLFamily, Split, TaskSpec


@dataclasses.dataclass(frozen=True, repr=False)
class TabularMDPFamily(RLFamily):
    """Tabular MDPs with Gaussian rewards; episodes of ``horizon`` steps from state 0."""

    num_states: int = 10
    """|S| (10 in the paper)."""
    num_actions: int = 5
    """|A| (5 in the paper)."""
    horizon: int = 10
    """Steps per episode (10 in the paper)."""

    name = "tabular_mdp"
    description = "random tabular MDPs, mu ~ N(1,1), P ~ Dirichlet(1) (RL² section 4.2)"
    batchable = True

    def __post_init__(self) -> None:
        for field in ("num_states", "num_actions", "horizon"):
            v = getattr(self, field)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{field} must be an integer >= 1, got {v!r}")

    def config(self) -> dict[str, Any]:
        return {
            "num_states": self.num_states,
            "num_actions": self.num_actions,
            "horizon": self.horizon,
        }

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        mu, p = sample_mdp(rng, self.num_states, self.num_actions)
        return {"reward_means": mu.tolist(), "transitions": p.tolist()}

    def build(self, spec: TaskSpec) -> TabularMDPEnv:
        """The gymnasium env of the spec; noise keyed by ``spec.seed``."""
        return TabularMDPEnv(
            spec.params["reward_means"],
            spec.params["transitions"],
            horizon=self.horizon,
            task_seed=spec.seed,
        )

    def build_batched(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> BatchedTabularMDP:
        return BatchedTabularMDP(
            [s.params["reward_means"] for s in specs],
            [s.params["transitions"] for s in specs],
            [s.seed for s in specs],
            horizon=self.horizon,
            device=device,
        )

    def describe(self) -> dict[str, Any]:
        s, a = self.num_states, self.num_actions
        return super().describe() | {
            "params": {"reward_means": f"[{s}, {a}] ~ N(1, 1)", "transitions": "Dirichlet(1)"},
            "episodes": f"{self.horizon} steps from state 0; reward N(mu(s, a), 1)",
        }

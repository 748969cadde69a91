"""2D point-robot navigation to a goal (the MAML-RL benchmark, Finn et al. 2017, section 5.3).

A point starts at the origin and moves by its (clipped) action each step; the reward is
minus the distance to the goal. The paper's text says "negative squared distance", but
the released code (``rllab/envs/point_env_randgoal.py`` in cbfinn/maml_rl) uses the plain
distance, which is our default; ``reward="squared"`` gives the text's version. That code
also ends an episode when the point is within ``0.01`` of the goal in both coordinates
(``goal_tolerance``; 0 disables it).

Dynamics are deterministic, so a :class:`PointNavEnv` and the matching row of a
:class:`BatchedPointNav` agree exactly (all arithmetic in float32, in the same order).
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

Reward = Literal["distance", "squared"]
REWARDS: tuple[str, ...] = ("distance", "squared")


def _check(horizon: int, max_action: float, reward: str, goal_tolerance: float) -> None:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not max_action > 0:
        raise ValueError(f"max_action must be > 0, got {max_action}")
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    if goal_tolerance < 0:
        raise ValueError(f"goal_tolerance must be >= 0, got {goal_tolerance}")


class PointNavEnv(gym.Env[np.ndarray, np.ndarray]):
    """One navigation task. Observation: position ``float32 (2,)``; action: displacement
    ``float32 (2,)`` clipped to ``[-max_action, max_action]``; reward ``-|pos - goal|`` (or
    its square) after the move; truncated after ``horizon`` steps (no wrapper needed).

    Args:
        goal: the goal position ``(x, y)``.
        horizon: steps per episode (100 in the paper).
        max_action: per-coordinate action bound (0.1 in the paper).
        reward: ``"distance"`` (released code) or ``"squared"`` (paper text).
        goal_tolerance: terminate when both coordinates are closer than this; 0 never.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        goal: tuple[float, float] | list[float] | np.ndarray = (0.0, 0.0),
        horizon: int = 100,
        max_action: float = 0.1,
        reward: Reward = "distance",
        goal_tolerance: float = 0.01,
    ) -> None:
        _check(horizon, max_action, reward, goal_tolerance)
        self.goal = np.asarray(goal, dtype=np.float32).reshape(2)
        self.horizon = int(horizon)
        self.max_action = np.float32(max_action)
        self.reward_type = reward
        self.goal_tolerance = np.float32(goal_tolerance)
        # The point can move at most horizon * max_action from the origin (plus float slack).
        bound = float(horizon) * float(max_action) * (1 + 1e-3)
        self.observation_space = spaces.Box(-bound, bound, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-max_action, max_action, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2, dtype=np.float32)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._pos = np.zeros(2, dtype=np.float32)
        self._t = 0
        return self._pos.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float32).reshape(2)
        a = np.clip(a, -self.max_action, self.max_action)
        self._pos = (self._pos + a).astype(np.float32)
        self._t += 1
        d = self._pos - self.goal
        sq = np.float32(d[0] * d[0] + d[1] * d[1])
        reward = -float(sq) if self.reward_type == "squared" else -float(np.sqrt(sq))
        terminated = bool(np.all(np.abs(d) < self.goal_tolerance))
        truncated = self._t >= self.horizon
        return self._pos.copy(), reward, terminated, truncated, {}


class BatchedPointNav:
    """``B`` navigation tasks stepped together (:class:`environments.batched.BatchedEnv`).

    Args:
        goals: ``[B, 2]`` goal positions (any array-like).
        device: where the state lives.
        horizon, max_action, reward, goal_tolerance: as in :class:`PointNavEnv`.
        task_seeds: int64 ``[B]`` task identities (the family passes ``spec.seed``); the
            dynamics are deterministic and never read them, but policies key their own
            sampling noise on them (``metaplat.inner.trials.policy_keys``), so a task's
            trial does not depend on its row in the batch. Default ``arange(B)``.
    """

    obs_dim = 2
    num_actions: int | None = None
    action_dim: int | None = 2

    def __init__(
        self,
        goals: Any,
        device: torch.device | str = "cpu",
        horizon: int = 100,
        max_action: float = 0.1,
        reward: Reward = "distance",
        goal_tolerance: float = 0.01,
        task_seeds: Any = None,
    ) -> None:
        _check(horizon, max_action, reward, goal_tolerance)
        self.device = torch.device(device)
        self.goals = torch.as_tensor(np.asarray(goals, dtype=np.float32), device=self.device)
        if self.goals.ndim != 2 or self.goals.shape[1] != 2:
            raise ValueError(f"goals must have shape [B, 2], got {tuple(self.goals.shape)}")
        self.num_envs = int(self.goals.shape[0])
        if task_seeds is None:
            task_seeds = torch.arange(self.num_envs)
        self.task_seeds = torch.as_tensor(task_seeds, dtype=torch.int64, device=self.device)
        if self.task_seeds.shape != (self.num_envs,):
            raise ValueError(f"task_seeds must have shape [{self.num_envs}]")
        self.max_episode_steps = int(horizon)
        self.max_action = float(np.float32(max_action))
        self.reward_type = reward
        self.goal_tolerance = float(np.float32(goal_tolerance))
        self._pos = torch.zeros(self.num_envs, 2, device=self.device)
        self._t = 0

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """All points back to the origin (deterministic: ``seed`` is accepted and unused)."""
        self._pos = torch.zeros(self.num_envs, 2, device=self.device)
        self._t = 0
        return self._pos.clone()

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``action [B, 2]`` -> ``(obs [B, 2], reward [B], terminated [B], truncated [B])``."""
        a = action.to(device=self.device, dtype=torch.float32)
        a = a.clamp(-self.max_action, self.max_action)
        self._pos = self._pos + a
        self._t += 1
        d = self._pos - self.goals
        sq = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]
        reward = -sq if self.reward_type == "squared" else -torch.sqrt(sq)
        terminated = (d.abs() < self.goal_tolerance).all(dim=1)
        truncated = torch.full_like(terminated, self._t >= self.max_episode_steps)
        return self._pos.clone(), reward, terminated, truncated

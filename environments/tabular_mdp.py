"""Random tabular MDPs (the RL² MDP tasks, Duan et al. 2016, section 4.2).

A task has ``S`` states and ``A`` actions, reward means ``mu [S, A]`` and transition
probabilities ``P [S, A, S]``; rewards are ``mu(s, a) + N(0, 1)``. Episodes start in state
0 and are truncated after ``horizon`` steps; observations are one-hot states. The
family draws ``mu ~ N(1, 1)`` and ``P(s, a, .) ~ Dirichlet(1, ..., 1)``.

Randomness is counter-based (:mod:`environments.noise`): at step ``t`` of an episode the
next state is ``categorical(substream(keys, 0), t, P[s, a])`` and the reward noise
``normal(substream(keys, 1), t)``, so a gymnasium :class:`TabularMDPEnv` (a batch of one
:class:`BatchedTabularMDP`) and row ``i`` of a batch agree step for step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from environments.noise import categorical, episode_keys, normal, substream


def sample_mdp(
    rng: np.random.Generator, num_states: int, num_actions: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu [S, A] ~ N(1, 1), P [S, A, S] ~ Dirichlet(1))`` from ``rng``."""
    mu = rng.normal(1.0, 1.0, size=(num_states, num_actions))
    p = rng.dirichlet(np.ones(num_states), size=(num_states, num_actions))
    return mu, p


class BatchedTabularMDP:
    """``B`` tabular MDPs stepped together (:class:`environments.batched.BatchedEnv`).

    Args:
        reward_means: ``[B, S, A]`` reward means.
        transitions: ``[B, S, A, S]`` next-state probabilities (rows sum to 1).
        task_seeds: ``[B]`` int64 noise keys (the family passes ``spec.seed``).
        horizon: steps per episode.
        device: where the tensors live.
    """

    action_dim: int | None = None

    def __init__(
        self,
        reward_means: Any,
        transitions: Any,
        task_seeds: Any,
        horizon: int = 10,
        device: torch.device | str = "cpu",
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.device = torch.device(device)
        self.mu = torch.as_tensor(np.asarray(reward_means, np.float32), device=self.device)
        self.P = torch.as_tensor(np.asarray(transitions, np.float64), device=self.device)
        if self.mu.ndim != 3 or self.P.shape != (*self.mu.shape, self.mu.shape[1]):
            raise ValueError(
                f"reward_means must be [B, S, A] and transitions [B, S, A, S]; got "
                f"{tuple(self.mu.shape)} and {tuple(self.P.shape)}"
            )
        self.num_envs, self.num_states, self.num_actions = map(int, self.mu.shape)
        self.obs_dim = self.num_states
        self.max_episode_steps = int(horizon)
        self.task_seeds = torch.as_tensor(task_seeds, dtype=torch.int64, device=self.device)
        if self.task_seeds.shape != (self.num_envs,):
            raise ValueError(f"task_seeds must have shape [{self.num_envs}]")
        self._keys: torch.Tensor | None = None
        self._rows = torch.arange(self.num_envs, device=self.device)
        self.state = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._t = 0

    def _obs(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.state, self.num_states).float()

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Every env back to state 0; ``obs [B, S]`` one-hot."""
        self._keys = episode_keys(self.task_seeds, seed, self._keys)
        self._trans_keys = substream(self._keys, 0)
        self._reward_keys = substream(self._keys, 1)
        self.state = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._t = 0
        return self._obs()

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``action int64 [B]`` -> ``(obs [B, S], reward [B], terminated, truncated)``."""
        if self._keys is None:
            raise RuntimeError("call reset() before step()")
        a = action.to(device=self.device, dtype=torch.int64)
        s = self.state
        reward = self.mu[self._rows, s, a] + normal(self._reward_keys, self._t)
        self.state = categorical(self._trans_keys, self._t, self.P[self._rows, s, a])
        self._t += 1
        term = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        trunc = torch.full_like(term, self._t >= self.max_episode_steps)
        return self._obs(), reward, term, trunc


class TabularMDPEnv(gym.Env[np.ndarray, int]):
    """One tabular MDP: observation one-hot state ``float32 (S,)``, action ``Discrete(A)``.

    Args:
        reward_means: ``[S, A]``; with ``transitions`` None, both are drawn from the family
            distribution with ``numpy.random.default_rng(task_seed)``.
        transitions: ``[S, A, S]``.
        num_states, num_actions: used only when the MDP is drawn.
        horizon: steps per episode (10 in the paper).
        task_seed: keys the reward and transition noise (the family passes ``spec.seed``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        reward_means: Any = None,
        transitions: Any = None,
        num_states: int = 10,
        num_actions: int = 5,
        horizon: int = 10,
        task_seed: int = 0,
    ) -> None:
        if reward_means is None or transitions is None:
            reward_means, transitions = sample_mdp(
                np.random.default_rng(task_seed), num_states, num_actions
            )
        self._env = BatchedTabularMDP([reward_means], [transitions], [int(task_seed)], horizon)
        s, a = self._env.num_states, self._env.num_actions
        self.observation_space = spaces.Box(0.0, 1.0, shape=(s,), dtype=np.float32)
        self.action_space = spaces.Discrete(a)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return self._env.reset(seed)[0].numpy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc = self._env.step(torch.tensor([int(action)]))
        return obs[0].numpy(), float(r[0]), bool(term[0]), bool(trunc[0]), {}


#: gymnasium id of this env, for ``environments.registration.ENVS``.
GYM_ENVS: tuple[tuple[str, str], ...] = (
    ("metaplat/TabularMDP-v0", "environments.tabular_mdp:TabularMDPEnv"),
)

"""Bernoulli multi-armed bandits (the RL² bandit tasks, Duan et al. 2016, section 4.1).

A task is ``k`` arms with success probabilities ``p``; pulling arm ``a`` pays 1 with
probability ``p[a]``, else 0. Following the paper, every pull is one *episode* of length 1
(the observation is a dummy constant ``[1.0]``); an RL² trial of ``n`` pulls is ``n``
such episodes on one task, with the policy's hidden state kept across them.

Randomness is counter-based (:mod:`environments.noise`): the reward of a pull is
``uniform(keys, 0) < p[a]`` with ``keys`` the episode keys made at reset from
``(task seed, reset seed)`` and advanced by every ``reset(seed=None)``. A gymnasium
:class:`BanditEnv` is exactly a batch of one :class:`BatchedBandit`, so the two agree
pull for pull.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from environments.noise import episode_keys, uniform


class BatchedBandit:
    """``B`` Bernoulli bandits pulled together (:class:`environments.batched.BatchedEnv`).

    Args:
        probs: ``[B, k]`` arm success probabilities.
        task_seeds: ``[B]`` int64 keys of each task's reward noise (the family passes
            ``spec.seed``).
        device: where the tensors live.
    """

    obs_dim = 1
    action_dim: int | None = None
    max_episode_steps = 1

    def __init__(self, probs: Any, task_seeds: Any, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.probs = torch.as_tensor(np.asarray(probs, dtype=np.float32), device=self.device)
        if self.probs.ndim != 2 or self.probs.shape[1] < 1:
            raise ValueError(f"probs must have shape [B, k] with k >= 1, got {self.probs.shape}")
        if bool(((self.probs < 0) | (self.probs > 1)).any()):
            raise ValueError("probs must lie in [0, 1]")
        self.num_envs, self.num_actions = int(self.probs.shape[0]), int(self.probs.shape[1])
        self.task_seeds = torch.as_tensor(task_seeds, dtype=torch.int64, device=self.device)
        if self.task_seeds.shape != (self.num_envs,):
            raise ValueError(f"task_seeds must have shape [{self.num_envs}]")
        self._keys: torch.Tensor | None = None
        self._rows = torch.arange(self.num_envs, device=self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """New episode (one pull) in every env; ``obs [B, 1]`` of ones."""
        self._keys = episode_keys(self.task_seeds, seed, self._keys)
        return torch.ones(self.num_envs, 1, device=self.device)

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``action int64 [B]`` -> ``(obs [B, 1], reward [B] in {0, 1}, terminated, truncated)``;
        every episode terminates after its one pull."""
        if self._keys is None:
            raise RuntimeError("call reset() before step()")
        a = action.to(device=self.device, dtype=torch.int64)
        reward = (uniform(self._keys, 0) < self.probs[self._rows, a]).float()
        done = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return torch.ones(self.num_envs, 1, device=self.device), reward, done, ~done


class BanditEnv(gym.Env[np.ndarray, int]):
    """One bandit task: observation ``float32 (1,)`` constant, action ``Discrete(k)``,
    reward Bernoulli(``probs[a]``); each episode is a single pull (terminated after it).

    Args:
        probs: arm success probabilities (default: two arms, 0.25 and 0.75).
        task_seed: keys the reward noise (the family passes ``spec.seed``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, probs: Any = (0.25, 0.75), task_seed: int = 0) -> None:
        self._env = BatchedBandit([list(probs)], [int(task_seed)])
        self.probs = self._env.probs[0].numpy().copy()
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self._env.num_actions)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return self._env.reset(seed)[0].numpy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc = self._env.step(torch.tensor([int(action)]))
        return obs[0].numpy(), float(r[0]), bool(term[0]), bool(trunc[0]), {}


#: gymnasium id of this env, for ``environments.registration.ENVS``.
GYM_ENVS: tuple[tuple[str, str], ...] = (("metaplat/Bandit-v0", "environments.bandit:BanditEnv"),)

"""The batched-environment contract: many tasks stepped at once as tensors on one device."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class BatchedEnv(Protocol):
    """``num_envs`` independent environments (one per task) stepped together.

    Observations are flat float tensors ``[B, obs_dim]`` (discrete states one-hot encoded);
    actions are ``int64 [B]`` for discrete spaces (``num_actions`` set, ``action_dim`` None)
    or ``float [B, action_dim]`` for continuous ones. Environments do not auto-reset: all
    envs of a batch share one horizon, and the caller calls :meth:`reset` between
    episodes. Randomness comes only from the ``seed`` given to :meth:`reset` (and the
    task specs), so a batched env and its gymnasium twin agree step for step: row ``i``
    after ``reset(seed)`` equals ``family.build(specs[i])`` after ``reset(seed=seed + i)``
    (``seed=None`` continues deterministically from the previous episode in both), until
    that row terminates (its later outputs are unspecified; callers mask them).
    Stochastic envs draw every number as ``environments.noise.uniform(keys, counter)``
    (or ``normal``/``categorical``) with ``keys = noise.episode_keys(task_seeds, seed, previous
    keys)`` and a fixed counter layout (e.g. ``step * draws_per_step + slot``).
    """

    num_envs: int
    obs_dim: int
    num_actions: int | None
    action_dim: int | None
    max_episode_steps: int
    device: torch.device

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Start a new episode in every env; returns ``obs [B, obs_dim]``."""
        ...

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(obs [B, obs_dim], reward [B], terminated [B] bool, truncated [B] bool)``."""
        ...

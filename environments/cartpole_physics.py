"""CartPole with configurable physics (pole length and mass, cart mass, push force).

:class:`CartPolePhysicsEnv` is gymnasium's ``CartPoleEnv`` (same Euler dynamics, same
termination at 12 degrees / 2.4 m, reward 1 per step up to and including the failing one)
with three changes: the physical constants are constructor arguments (derived
``total_mass`` and ``polemass_length`` recomputed), the episode truncates itself after
``horizon`` steps (no ``TimeLimit`` wrapper needed), and the start state is drawn from
:mod:`environments.noise` (keyed by ``task_seed`` and the reset seed) instead of
``np_random``, so the batched twin :class:`BatchedCartPole` starts from identical states.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import Env
from gymnasium.envs.classic_control import utils
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from environments.noise import episode_keys, uniform

#: gymnasium's CartPole-v1 constants; ``length`` is *half* the pole length, as in gymnasium.
DEFAULT_PHYSICS: dict[str, float] = {
    "length": 0.5,
    "masspole": 0.1,
    "masscart": 1.0,
    "force_mag": 10.0,
}
_START = 0.05  # start state ~ U[-0.05, 0.05]^4, as in gymnasium


def _check_physics(**physics: float) -> None:
    for name, value in physics.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def start_states(keys: torch.Tensor, low: float = -_START, high: float = _START) -> torch.Tensor:
    """Start states ``float64 [B, 4]`` from episode keys ``[B]`` (counters 0..3)."""
    counters = torch.arange(4, dtype=torch.int64, device=keys.device)
    return low + (high - low) * uniform(keys.unsqueeze(-1), counters, torch.float64)


class CartPolePhysicsEnv(CartPoleEnv):
    """CartPole with the given physics; obs ``float32 (4,)``, actions ``{0, 1}``.

    Args:
        length: half the pole length in metres (gymnasium's ``length``; default 0.5).
        masspole: pole mass in kg (0.1).
        masscart: cart mass in kg (1.0).
        force_mag: magnitude of the push in N (10.0).
        horizon: steps per episode before truncation (500, as CartPole-v1).
        task_seed: keys the start-state noise (the family passes ``spec.seed``).
    """

    def __init__(
        self,
        length: float = 0.5,
        masspole: float = 0.1,
        masscart: float = 1.0,
        force_mag: float = 10.0,
        horizon: int = 500,
        task_seed: int = 0,
    ) -> None:
        _check_physics(length=length, masspole=masspole, masscart=masscart, force_mag=force_mag)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        super().__init__()
        self.length = float(length)
        self.masspole = float(masspole)
        self.masscart = float(masscart)
        self.force_mag = float(force_mag)
        # Derived quantities that gymnasium computes once in __init__.
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length
        self.horizon = int(horizon)
        self.task_seed = int(task_seed)
        self._keys: torch.Tensor | None = None
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        # Skip CartPoleEnv.reset: its start state comes from np_random, ours from the keys.
        Env.reset(self, seed=seed)
        low, high = utils.maybe_parse_reset_bounds(options, -_START, _START)
        self._keys = episode_keys(torch.tensor([self.task_seed]), seed, self._keys)
        self.state = start_states(self._keys, low, high)[0].numpy()
        self.steps_beyond_terminated = None
        self._t = 0
        return np.array(self.state, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, _, info = super().step(action)
        self._t += 1
        return obs, float(reward), terminated, self._t >= self.horizon, info


class BatchedCartPole:
    """``B`` CartPoles with per-env physics, stepped together (float64 state, float32 obs).

    Follows :class:`environments.batched.BatchedEnv`; row ``i`` equals a
    :class:`CartPolePhysicsEnv` with ``physics[name][i]`` and ``task_seeds[i]`` reset with
    ``seed + i``. After an env terminates it keeps integrating and earns 0, as gymnasium's.

    Args:
        physics: ``length``, ``masspole``, ``masscart``, ``force_mag``, each ``[B]``.
        task_seeds: int64 ``[B]`` (``spec.seed`` of each task).
        device: where the state lives.
        horizon: steps per episode.
    """

    obs_dim = 4
    num_actions: int | None = 2
    action_dim: int | None = None
    gravity = 9.8
    tau = 0.02
    theta_threshold_radians = 12 * 2 * np.pi / 360
    x_threshold = 2.4

    def __init__(
        self,
        physics: dict[str, Any],
        task_seeds: Any,
        device: torch.device | str = "cpu",
        horizon: int = 500,
    ) -> None:
        self.device = torch.device(device)
        missing = sorted(set(DEFAULT_PHYSICS) - set(physics))
        if missing:
            raise ValueError(f"physics is missing {missing}; needs {sorted(DEFAULT_PHYSICS)}")

        def col(name: str) -> torch.Tensor:
            return torch.as_tensor(physics[name], dtype=torch.float64, device=self.device)

        self.length, self.masspole = col("length"), col("masspole")
        self.masscart, self.force_mag = col("masscart"), col("force_mag")
        for name in DEFAULT_PHYSICS:
            if bool((getattr(self, name) <= 0).any()):
                raise ValueError(f"physics[{name!r}] must be > 0, got {physics[name]}")
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length
        self.task_seeds = torch.as_tensor(task_seeds, dtype=torch.int64, device=self.device)
        self.num_envs = int(self.task_seeds.shape[0])
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.max_episode_steps = int(horizon)
        self._keys: torch.Tensor | None = None
        self.state = torch.zeros(self.num_envs, 4, dtype=torch.float64, device=self.device)
        self._done = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._t = 0

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._keys = episode_keys(self.task_seeds, seed, self._keys)
        self.state = start_states(self._keys)
        self._done = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self._t = 0
        return self.state.to(torch.float32)

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``action int64 [B]`` in {0, 1} -> ``(obs [B, 4], reward [B], terminated, truncated)``."""
        x, x_dot, theta, theta_dot = self.state.unbind(1)
        push = action.to(self.device) == 1
        force = torch.where(push, self.force_mag, -self.force_mag)
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        # Same expression order as gymnasium's CartPoleEnv.step, so float64 results match.
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        self.state = torch.stack([x, x_dot, theta, theta_dot], dim=1)
        self._t += 1
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        reward = (~self._done).to(torch.float32)  # 1 up to and including the failing step
        self._done = self._done | terminated
        truncated = torch.full_like(terminated, self._t >= self.max_episode_steps)
        return self.state.to(torch.float32), reward, terminated, truncated

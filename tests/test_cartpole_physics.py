"""CartPole physics: gymnasium's dynamics with new constants, checked by hand and by twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from environments.cartpole_physics import BatchedCartPole, CartPolePhysicsEnv
from metaplat.tasks.cartpole import CartPolePhysicsFamily
from metaplat.tasks.registry import make_family

PHYSICS = {"length": 0.8, "masspole": 0.2, "masscart": 1.5, "force_mag": 12.0}


def _hand_step(state: np.ndarray, push: int, p: dict[str, float]) -> np.ndarray:
    """One Euler step of the Barto-Sutton-Anderson cart-pole, written from the equations."""
    x, xd, th, thd = state
    m, mc, half, f = p["masspole"], p["masscart"], p["length"], p["force_mag"]
    force = f if push == 1 else -f
    total = m + mc
    temp = (force + m * half * thd**2 * math.sin(th)) / total
    thacc = (9.8 * math.sin(th) - math.cos(th) * temp) / (
        half * (4 / 3 - m * math.cos(th) ** 2 / total)
    )
    xacc = temp - m * half * thacc * math.cos(th) / total
    return np.array([x + 0.02 * xd, xd + 0.02 * xacc, th + 0.02 * thd, thd + 0.02 * thacc])


def test_physics_and_derived_quantities_are_set() -> None:
    env = CartPolePhysicsEnv(**PHYSICS)
    assert (env.length, env.masspole, env.masscart, env.force_mag) == (0.8, 0.2, 1.5, 12.0)
    assert env.total_mass == pytest.approx(1.7)
    assert env.polemass_length == pytest.approx(0.16)


def test_steps_match_hand_equations_for_gym_and_batched() -> None:
    env = CartPolePhysicsEnv(**PHYSICS)
    env.reset(seed=0)
    batched = BatchedCartPole({k: [v] for k, v in PHYSICS.items()}, [0])
    obs_b = batched.reset(seed=0)
    state = env.state.copy()
    np.testing.assert_allclose(obs_b[0].numpy(), state.astype(np.float32))
    for push in [1, 1, 0, 1, 0, 0]:
        state = _hand_step(state, push, PHYSICS)
        obs, r, *_ = env.step(push)
        obs_b, r_b, *_ = batched.step(torch.tensor([push]))
        np.testing.assert_allclose(env.state, state, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(batched.state[0].numpy(), state, rtol=1e-12, atol=1e-14)
        assert r == 1.0 and float(r_b[0]) == 1.0


def test_default_physics_equal_gymnasium_cartpole() -> None:
    ours, theirs = CartPolePhysicsEnv(), CartPoleEnv()
    ours.reset(seed=3)
    theirs.reset(seed=0)
    theirs.state = ours.state.copy()
    for push in [0, 1, 1, 1, 0, 1, 0, 0, 0, 1]:
        a, b = ours.step(push), theirs.step(push)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:3] == b[1:3]


def test_heavier_longer_pole_changes_the_dynamics() -> None:
    default, heavy = CartPolePhysicsEnv(), CartPolePhysicsEnv(**PHYSICS)
    default.reset(seed=1)
    heavy.reset(seed=1)
    np.testing.assert_array_equal(default.state, heavy.state)  # same task seed and reset seed
    assert not np.allclose(default.step(1)[0], heavy.step(1)[0])


def test_start_states_depend_on_task_and_reset_seed() -> None:
    starts = []
    for task_seed, seed in [(0, 0), (0, 0), (0, 1), (1, 0)]:
        env = CartPolePhysicsEnv(task_seed=task_seed)
        starts.append(env.reset(seed=seed)[0])
    assert np.array_equal(starts[0], starts[1])
    assert not np.array_equal(starts[0], starts[2]) and not np.array_equal(starts[0], starts[3])
    assert all(np.abs(s).max() <= 0.05 for s in starts)


def _balance(obs: np.ndarray) -> int:
    return int(obs[2] + 0.5 * obs[3] + 0.05 * obs[0] + 0.1 * obs[1] > 0)


def test_balanced_episodes_match_the_twin_until_truncation() -> None:
    fam = CartPolePhysicsFamily(horizon=200)
    specs = fam.sample(np.random.default_rng(4), "train", 3)
    batched = fam.build_batched(specs)
    twins = [fam.build(s) for s in specs]
    obs_b = batched.reset(seed=9)
    obs = [t.reset(seed=9 + i)[0] for i, t in enumerate(twins)]
    for step in range(200):
        actions = [_balance(o) for o in obs]
        obs_b, r_b, term_b, trunc_b = batched.step(torch.tensor(actions))
        out = [t.step(a) for t, a in zip(twins, actions, strict=True)]
        obs = [o[0] for o in out]
        np.testing.assert_allclose(obs_b.numpy(), np.stack(obs), atol=1e-6)
        assert not term_b.any() and not any(o[2] for o in out), f"fell at step {step + 1}"
        assert trunc_b.tolist() == [o[3] for o in out] == [step == 199] * 3


def test_after_the_fall_reward_is_zero_like_gymnasium() -> None:
    batched = BatchedCartPole({k: [v] for k, v in PHYSICS.items()}, [0], horizon=100)
    batched.reset(seed=0)
    rewards, terms = [], []
    for _ in range(100):
        _, r, term, _ = batched.step(torch.tensor([1]))
        rewards.append(float(r[0]))
        terms.append(bool(term[0]))
    first = terms.index(True)
    assert rewards[: first + 1] == [1.0] * (first + 1) and set(rewards[first + 1 :]) == {0.0}


def test_family_samples_in_ranges_and_keeps_force_fixed() -> None:
    fam = CartPolePhysicsFamily()
    specs = fam.sample(np.random.default_rng(0), "val", 100)
    for s in specs:
        assert 0.25 <= s.params["length"] <= 1.0 and 0.05 <= s.params["masspole"] <= 0.2
        assert 0.5 <= s.params["masscart"] <= 2.0 and s.params["force_mag"] == 10.0
    env = fam.build(specs[0])
    assert env.length == specs[0].params["length"] and env.task_seed == specs[0].seed
    assert make_family("cartpole_physics", fam.config()) == fam
    # A fixed range does not shift the other draws.
    fixed = CartPolePhysicsFamily(length=(0.5, 0.5)).spec(specs[0].seed, "val").params
    assert fixed["length"] == 0.5 and fixed["masscart"] == specs[0].params["masscart"]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"masspole": (0.0, 0.1)}, "masspole"),
        ({"length": (1.0, 0.5)}, "length"),
        ({"horizon": 0}, "horizon"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CartPolePhysicsFamily(**kwargs)  # type: ignore[arg-type]

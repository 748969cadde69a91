"""Point navigation against hand-computed rewards, and the family's sampling contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from environments.point_nav import BatchedPointNav, PointNavEnv
from metaplat.tasks.point_nav import PointNavFamily
from metaplat.tasks.registry import make_family


def test_one_step_distance_and_squared_rewards_by_hand() -> None:
    for kind, want in (("distance", -math.sqrt(0.13)), ("squared", -0.13)):
        env = PointNavEnv(goal=(0.3, -0.2), reward=kind)  # type: ignore[arg-type]
        obs, _ = env.reset(seed=0)
        np.testing.assert_array_equal(obs, [0.0, 0.0])
        # (1, 1) clips to (0.1, 0.1): offset to goal (-0.2, 0.3), squared distance 0.13.
        obs, r, term, trunc, _ = env.step(np.float32([1.0, 1.0]))
        np.testing.assert_allclose(obs, [0.1, 0.1], rtol=1e-7)
        assert r == pytest.approx(want, rel=1e-6)
        assert (term, trunc) == (False, False)


def test_terminates_within_tolerance_of_goal() -> None:
    env = PointNavEnv(goal=(0.15, -0.05))
    env.reset()
    assert not env.step(np.float32([0.1, -0.05]))[2]
    _, r, term, _, _ = env.step(np.float32([0.045, 0.005]))  # offset (-0.005, 0.005)
    assert term and r == pytest.approx(-math.sqrt(2) * 0.005, abs=1e-6)
    never = PointNavEnv(goal=(0.0, 0.0), goal_tolerance=0.0)
    never.reset()
    assert not never.step(np.float32([0.0, 0.0]))[2]


def test_truncates_exactly_at_horizon() -> None:
    env = PointNavEnv(goal=(0.5, 0.5), horizon=7)
    env.reset()
    flags = [env.step(np.float32([-0.1, -0.1]))[3] for _ in range(7)]
    assert flags == [False] * 6 + [True]
    batched = BatchedPointNav([[0.5, 0.5]], horizon=7)
    batched.reset()
    flags = [bool(batched.step(torch.full((1, 2), -0.1))[3][0]) for _ in range(7)]
    assert flags == [False] * 6 + [True]


def test_batched_rows_clip_per_coordinate_and_reward_by_hand() -> None:
    env = BatchedPointNav([[0.0, 0.0], [0.5, -0.5]], reward="squared")
    env.reset(seed=0)
    obs, r, term, trunc = env.step(torch.tensor([[0.05, -3.0], [0.3, -0.02]]))
    torch.testing.assert_close(obs, torch.tensor([[0.05, -0.1], [0.1, -0.02]]))
    torch.testing.assert_close(r, torch.tensor([-(0.05**2 + 0.1**2), -(0.4**2 + 0.48**2)]))
    assert term.tolist() == [False, False] and trunc.tolist() == [False, False]


def test_reaching_the_goal_straight_gives_the_expected_return() -> None:
    goal = np.float32([0.35, -0.2])
    env = PointNavEnv(goal=goal, goal_tolerance=0.0)
    pos, _ = env.reset()
    total = 0.0
    for _ in range(100):
        pos, r, *_ = env.step(np.clip(goal - pos, -0.1, 0.1))
        total += r
    # Steps 1..4 cover x at 0.1 each (y done after 2); then the point sits on the goal.
    d = [math.hypot(0.25, 0.1), math.hypot(0.15, 0.0), 0.05, 0.0]
    assert total == pytest.approx(-sum(d), abs=1e-5)


def test_family_samples_goals_in_range_and_round_trips_config() -> None:
    fam = PointNavFamily(goal_range=(-0.2, 0.4))
    specs = fam.sample(np.random.default_rng(0), "train", 200)
    goals = np.array([s.params["goal"] for s in specs])
    assert goals.shape == (200, 2) and goals.min() >= -0.2 and goals.max() <= 0.4
    assert goals.std(axis=0).min() > 0.1
    again = make_family("point_nav", fam.config())
    assert again == fam and again.spec(specs[0].seed, "train") == specs[0]
    env = fam.build(specs[0])
    np.testing.assert_array_equal(env.goal, np.float32(specs[0].params["goal"]))
    batched = fam.build_batched(specs[:5])
    torch.testing.assert_close(batched.goals, torch.tensor(goals[:5], dtype=torch.float32))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"reward": "cubed"}, "reward"),
        ({"goal_range": (0.5, -0.5)}, "goal_range"),
        ({"horizon": 0}, "horizon"),
        ({"max_action": 0.0}, "max_action"),
        ({"goal_tolerance": -1.0}, "goal_tolerance"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PointNavFamily(**kwargs)  # type: ignore[arg-type]

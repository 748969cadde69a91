"""The RL environment contract, run over every registered family with ``kind == "rl"``.

1. ``family.build(spec)`` is a gymnasium env that passes ``check_env``.
2. For batchable families, row ``i`` of ``family.build_batched(specs)`` reset with ``seed``
   agrees step for step with ``family.build(specs[i])`` reset with ``seed + i`` under the
   same actions (obs, reward, terminated, truncated within 1e-5), until that row is done;
   a second episode after ``reset(seed=None)`` on both agrees too.
3. ``register_envs`` is idempotent and every registered id makes a valid env.

Families whose module does not import yet are reported as skipped, with the reason.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from environments.batched import BatchedEnv
from environments.registration import ENVS, register_envs
from metaplat.tasks.base import RLFamily, TaskSpec
from metaplat.tasks.registry import FAMILIES, make_family

ATOL = 1e-5
NUM_TASKS = 4


def _rl_family_params() -> list[Any]:
    params: list[Any] = []
    for name in FAMILIES.names():
        try:
            cls = FAMILIES.get(name)
        except (ImportError, AttributeError) as e:
            reason = f"family {name!r} does not import yet ({type(e).__name__}: {e})"
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=reason)))
            continue
        if getattr(cls, "kind", None) == "rl":
            params.append(name)
    return params


RL_FAMILIES = _rl_family_params()


def _specs(family: RLFamily, n: int = NUM_TASKS) -> list[TaskSpec]:
    rng = np.random.default_rng(0)
    specs = family.sample(rng, "train", n - 2)
    return specs + family.sample(rng, "val", 1) + family.sample(rng, "test", 1)


def _check_env_quietly(env: gymnasium.Env) -> None:
    """``check_env`` with its warnings turned into failures, except the infinite-bounds
    heuristic, which gymnasium's own CartPole (unbounded velocities) triggers."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    bad = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not bad, f"check_env warned: {bad}"


@pytest.mark.parametrize("name", RL_FAMILIES)
def test_built_env_passes_gymnasium_check_env(name: str) -> None:
    family = make_family(name)
    for spec in _specs(family):
        _check_env_quietly(family.build(spec).unwrapped)


def _random_actions(space: spaces.Space[Any], rng: np.random.Generator, n: int) -> list[Any]:
    """``n`` actions; continuous ones reach 1.5x beyond the box to exercise clipping."""
    if isinstance(space, spaces.Discrete):
        return [int(a) for a in space.start + rng.integers(0, space.n, size=n)]
    assert isinstance(space, spaces.Box), f"unsupported action space {space}"
    lo = np.where(np.isfinite(space.low), space.low, -1.0)
    hi = np.where(np.isfinite(space.high), space.high, 1.0)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return [
        (mid + 1.5 * half * rng.uniform(-1, 1, size=space.shape)).astype(space.dtype)
        for _ in range(n)
    ]


def _compare_episode(
    batched: Any, twins: list[gymnasium.Env], seed: int | None, steps: int, rng: np.random.Generator
) -> None:
    obs_b = batched.reset(seed=seed)
    for i, twin in enumerate(twins):
        obs_g, _ = twin.reset(seed=None if seed is None else seed + i)
        flat = spaces.flatten(twin.observation_space, obs_g)
        np.testing.assert_allclose(obs_b[i].cpu().numpy(), flat, atol=ATOL, err_msg=f"reset {i}")
    actions = [_random_actions(t.action_space, rng, steps) for t in twins]
    alive = [True] * len(twins)
    for t in range(steps):
        if isinstance(twins[0].action_space, spaces.Discrete):
            a = torch.tensor([actions[i][t] for i in range(len(twins))], dtype=torch.int64)
        else:
            a = torch.as_tensor(np.stack([actions[i][t] for i in range(len(twins))]))
        obs_b, rew_b, term_b, trunc_b = batched.step(a.to(batched.device))
        assert obs_b.shape == (len(twins), batched.obs_dim) and obs_b.dtype == torch.float32
        assert rew_b.shape == term_b.shape == trunc_b.shape == (len(twins),)
        assert term_b.dtype == trunc_b.dtype == torch.bool
        for i, twin in enumerate(twins):
            if not alive[i]:
                continue
            obs_g, rew_g, term_g, trunc_g, _ = twin.step(actions[i][t])
            where = f"env {i}, step {t + 1}, reset seed {seed}"
            flat = spaces.flatten(twin.observation_space, obs_g)
            np.testing.assert_allclose(obs_b[i].cpu().numpy(), flat, atol=ATOL, err_msg=where)
            assert abs(float(rew_b[i]) - float(rew_g)) <= ATOL, f"reward differs at {where}"
            assert bool(term_b[i]) == term_g, f"terminated differs at {where}"
            assert bool(trunc_b[i]) == trunc_g, f"truncated differs at {where}"
            alive[i] = not (term_g or trunc_g)
        if not any(alive):
            break
        if t + 1 == batched.max_episode_steps:
            assert bool(trunc_b.all()), "batched env did not truncate at max_episode_steps"


@pytest.mark.parametrize("name", RL_FAMILIES)
def test_batched_env_matches_gymnasium_twins(name: str) -> None:
    family = make_family(name)
    assert isinstance(family, RLFamily)
    if not family.batchable:
        pytest.skip(f"family {name!r} is not batchable")
    specs = _specs(family)
    batched = family.build_batched(specs, "cpu")
    twins = [family.build(s) for s in specs]
    assert isinstance(batched, BatchedEnv)
    assert batched.num_envs == len(specs)
    assert batched.obs_dim == spaces.flatdim(twins[0].observation_space)
    space = twins[0].action_space
    if isinstance(space, spaces.Discrete):
        assert (batched.num_actions, batched.action_dim) == (space.n, None)
    else:
        assert (batched.num_actions, batched.action_dim) == (None, spaces.flatdim(space))
    rng = np.random.default_rng(1)
    _compare_episode(batched, twins, 123, batched.max_episode_steps, rng)
    _compare_episode(batched, twins, None, min(batched.max_episode_steps, 30), rng)
    _compare_episode(batched, twins, 7, min(batched.max_episode_steps, 30), rng)


@pytest.mark.parametrize("name", RL_FAMILIES)
def test_config_and_specs_round_trip_through_json(name: str) -> None:
    family = make_family(name)
    config = json.loads(json.dumps(family.config()))
    assert make_family(name, config).config() == family.config()
    assert family.describe()["kind"] == "rl"
    for spec in _specs(family):
        assert TaskSpec.from_json(spec.to_json()) == spec
        assert make_family(name, dict(spec.config)).spec(spec.seed, spec.split) == spec


@pytest.mark.parametrize("name", RL_FAMILIES)
def test_same_spec_rebuilds_the_same_episode(name: str) -> None:
    family = make_family(name)
    spec = _specs(family, 3)[0]
    rollouts = []
    for _ in range(2):
        env = family.build(TaskSpec.from_json(spec.to_json()))
        env.action_space.seed(0)
        obs, _ = env.reset(seed=5)
        out = [spaces.flatten(env.observation_space, obs)]
        for _ in range(10):
            obs, r, term, trunc, _ = env.step(env.action_space.sample())
            out.append(np.append(spaces.flatten(env.observation_space, obs), [r, term, trunc]))
            if term or trunc:
                break
        rollouts.append(np.concatenate(out))
    np.testing.assert_array_equal(rollouts[0], rollouts[1])


def test_register_envs_is_idempotent_and_explicit() -> None:
    first = register_envs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = register_envs()
    assert first == second == [env_id for env_id, _ in ENVS]
    assert not caught, [str(w.message) for w in caught]
    assert all(env_id.startswith("metaplat/") and env_id in gymnasium.registry for env_id in first)


@pytest.mark.parametrize("env_id", [env_id for env_id, _ in ENVS])
def test_every_registered_id_makes_a_valid_env(env_id: str) -> None:
    register_envs()
    env = gymnasium.make(env_id)
    _check_env_quietly(env.unwrapped)
    env.close()


def test_make_point_nav_with_goal() -> None:
    from environments.point_nav import PointNavEnv

    register_envs()
    env = gymnasium.make("metaplat/PointNav-v0", goal=(0.3, -0.2))
    assert isinstance(env.unwrapped, PointNavEnv)
    np.testing.assert_array_equal(env.unwrapped.goal, np.float32([0.3, -0.2]))
    env.reset(seed=0)
    _, reward, _, _, _ = env.step(np.float32([0.1, 0.1]))
    assert reward == pytest.approx(-np.sqrt(0.2**2 + 0.3**2), abs=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("name", RL_FAMILIES)
def test_batched_env_on_cuda_matches_cpu(name: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    family = make_family(name)
    if not family.batchable:
        pytest.skip(f"family {name!r} is not batchable")
    specs = _specs(family)
    cpu, gpu = family.build_batched(specs, "cpu"), family.build_batched(specs, "cuda")
    torch.testing.assert_close(gpu.reset(seed=3).cpu(), cpu.reset(seed=3), atol=ATOL, rtol=0)
    twin = family.build(specs[0])
    for a in _random_actions(twin.action_space, np.random.default_rng(2), 20):
        batch_a = torch.as_tensor(np.stack([np.asarray(a)] * len(specs)))
        for x, y in zip(gpu.step(batch_a.cuda()), cpu.step(batch_a), strict=True):
            torch.testing.assert_close(x.cpu(), y, atol=ATOL, rtol=0)

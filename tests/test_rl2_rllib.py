"""RL² via RLlib: the trial wrapper env, and a one-iteration recurrent-PPO smoke (ray)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from _paths import SPECS
from gymnasium.utils.env_checker import check_env

from metaplat.outer.rl2_rllib import TrialEnv, trial_observation


def test_trial_env_runs_k_inner_episodes_as_one_episode() -> None:
    env = TrialEnv(
        {
            "family": "tabular_mdp",
            "family_config": {"num_states": 3, "horizon": 4},
            "episodes_per_trial": 3,
            "seed": 1,
        }
    )
    assert env.observation_space.shape == (3 + 5 + 2,)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [1, 0, 0] + [0] * 5 + [0, 0])  # state 0, no prev
    steps, dones = 0, []
    while True:
        obs, r, term, trunc, _ = env.step(2)
        steps += 1
        assert obs[3 + 2] == 1.0 and obs[3 + 5] == np.float32(r)  # prev action, reward
        dones.append(obs[-1])
        if term or trunc:
            break
    assert steps == 12 and term and not trunc
    assert dones == [0, 0, 0, 1] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(TrialEnv({"family": "bandit", "episodes_per_trial": 2}))


def test_each_reset_samples_a_new_task_and_fixed_specs_cycle() -> None:
    env = TrialEnv({"family": "bandit", "episodes_per_trial": 2, "seed": 3})
    env.reset()
    first = env.task.seed
    env.reset()
    assert env.task.seed != first and env.task.split == "train"
    from metaplat.tasks.registry import make_family

    specs = make_family("bandit").sample(np.random.default_rng(0), "test", 2)
    env = TrialEnv({"family": "bandit", "specs": [s.to_json() for s in specs]})
    seen = []
    for _ in range(3):
        env.reset()
        seen.append(env.task)
    assert seen == [specs[0], specs[1], specs[0]]


def test_trial_observation_for_continuous_actions() -> None:
    from gymnasium import spaces

    box = spaces.Box(-1, 1, shape=(2,))
    out = trial_observation(np.array([0.5, 0.5]), np.array([0.1, -0.2]), 1.5, True, box)
    np.testing.assert_allclose(out, [0.5, 0.5, 0.1, -0.2, 1.5, 1.0], rtol=1e-6)


@pytest.mark.ray
def test_rllib_recurrent_ppo_trains_one_iteration_and_scores_with_native_eval(
    ray_session: None,
) -> None:
    from metaplat.outer.rl2_rllib import RL2RLlib, RL2RLlibConfig
    from metaplat.tasks.registry import make_family
    from metaplat.workers.base import LocalPool

    cfg = RL2RLlibConfig(
        episodes_per_trial=5,
        train_batch_size=200,
        minibatch_size=100,
        num_epochs=1,
        num_envs_per_env_runner=2,
        lstm_cell_size=16,
        eval_tasks=20,
    )
    algo = RL2RLlib(cfg, make_family("bandit", {"num_arms": 3}), LocalPool(1), seed=0)
    try:
        state = algo.init()
        state, metrics = algo.step(state)
        assert metrics["train/env_steps"] >= 200 and state.iteration == 1
        ev = algo.evaluate(state, "test")
        assert 0.0 <= ev["test/trial_return"] <= 5.0
        assert set(ev) == {"test/trial_return", "test/trial_return_ci95"}
    finally:
        algo.close()


@pytest.mark.ray
def test_rllib_sequential_evaluation_agrees_with_batched_in_distribution(
    ray_session: None,
) -> None:
    from metaplat.outer.rl2 import evaluation_specs
    from metaplat.outer.rl2_rllib import RL2RLlib, RL2RLlibConfig
    from metaplat.tasks.registry import make_family
    from metaplat.workers.base import LocalPool

    cfg = RL2RLlibConfig(
        episodes_per_trial=4,
        train_batch_size=64,
        minibatch_size=32,
        num_epochs=1,
        num_envs_per_env_runner=1,
        lstm_cell_size=8,
        eval_tasks=200,
    )
    fam = make_family("bandit", {"num_arms": 2})
    algo = RL2RLlib(cfg, fam, LocalPool(1), seed=0)
    try:
        state = algo.init()
        specs = evaluation_specs(fam, "val", 200, 0)
        seq = algo._evaluate_sequential(state, specs, seed=1)
        batched = algo.evaluate(state, "val")
        assert seq.shape == (200,)
        ci = 2 * max(batched["val/trial_return_ci95"], 0.1)
        assert abs(seq.mean().item() - batched["val/trial_return"]) < ci
    finally:
        algo.close()


RLLIB_SPECS = ("rl2_cartpole_rllib.yaml", "rl2_point_nav_rllib.yaml")


def rllib_spec(name: str = "rl2_cartpole_rllib.yaml", **method_config: Any) -> Any:
    from metaplat.specs.loader import load_spec

    return load_spec(SPECS / name, {f"method.config.{k}": v for k, v in method_config.items()})


@pytest.mark.parametrize(
    ("runners", "cpus", "expected"),
    [
        (0, 1.0, [{"CPU": 1.0}]),
        (1, 1.0, [{"CPU": 1.0}, {"CPU": 1.0}]),
        (2, 0.5, [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 0.5}]),
    ],
)
def test_trial_reserves_what_rllib_asks_for(
    runners: int, cpus: float, expected: list[dict[str, float]]
) -> None:
    """The trial's placement group is RLlib's own layout: the driver bundle (RLlib's learner
    runs there) + one bundle per env runner at indices 1..n, and no pool bundle."""
    from ray import tune
    from ray.rllib.algorithms.ppo import PPO

    from metaplat.outer.rl2_rllib import RL2RLlib, ppo_config
    from metaplat.specs.loader import build_family, build_method_config
    from metaplat.tuning.trainable import trial_bundles, trial_resources

    spec = rllib_spec(num_env_runners=runners, num_cpus_per_env_runner=cpus)
    assert spec.workers.num_workers == 0 and spec.workers.driver_cpus == 1.0
    assert trial_bundles(spec, RL2RLlib) == expected
    resources = trial_resources(spec, RL2RLlib)
    if runners:
        assert isinstance(resources, tune.PlacementGroupFactory)
        assert resources.bundles == expected
    else:
        assert resources == {"cpu": 1.0}
    # RLlib's own request for the config the trial builds (Algorithm.default_resource_request)
    cfg = build_method_config(RL2RLlib, spec.method.config, "method.config")
    family = build_family(spec.task.family, spec.task.config)
    rllib = PPO.default_resource_request(ppo_config(cfg, family, 0))
    assert [{k: v for k, v in b.items() if v} for b in rllib.bundles] == expected


def test_rllib_method_uses_no_pool_and_says_which_fields_size_it() -> None:
    from metaplat.outer.rl2_rllib import RL2RLlib
    from metaplat.specs.loader import load_spec, summary, validate_spec
    from metaplat.specs.typecheck import SpecError
    from metaplat.tuning.runner import check_fits

    for name in RLLIB_SPECS:
        spec = rllib_spec(name)
        assert validate_spec(spec).method_cls is RL2RLlib
        check_fits(spec, RL2RLlib, {"CPU": 2.0})  # the shipped specs fit a 2-core laptop
        assert "driver + 1 rl2_rllib actors (2 CPU) per trial" in summary(spec)
    # a pool worker would hold CPUs (and a bundle) that nothing uses: refused up front
    pooled = load_spec(SPECS / RLLIB_SPECS[0], {"workers.num_workers": 1})
    with pytest.raises(SpecError, match="does not use the worker pool") as info:
        validate_spec(pooled)
    assert "method.config.num_env_runners" in str(info.value)
    assert "set workers.num_workers: 0" in str(info.value)
    # too big for 2 CPUs: the message counts the placement group and names the fields
    with pytest.raises(SpecError) as info:
        check_fits(rllib_spec(num_env_runners=2), RL2RLlib, {"CPU": 2.0})
    (msg,) = info.value.errors
    assert msg.startswith("method.config: one trial needs 3 CPU but this local Ray has 2 CPU")
    assert "[{'CPU': 1.0}, {'CPU': 1.0}, {'CPU': 1.0}]" in msg
    assert "lower method.config.num_env_runners / num_cpus_per_env_runner or " in msg
    assert "workers.driver_cpus, or run on a cluster (--address)" in msg
    check_fits(rllib_spec(num_env_runners=2, num_cpus_per_env_runner=0.5), RL2RLlib, {"CPU": 2.0})
    # a searched runner count: every trial is sized by its own value, so every value is checked
    searched = load_spec(
        SPECS / RLLIB_SPECS[0],
        {"tune.search_space": {"method.config.num_env_runners": {"grid": [0, 1, 3]}}},
    )
    with pytest.raises(SpecError, match=r"needs 4 CPU .*searched \{'method.config.num_env_run"):
        check_fits(searched, RL2RLlib, {"CPU": 2.0})

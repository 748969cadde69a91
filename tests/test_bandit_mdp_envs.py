"""Bandit and tabular-MDP envs: gymnasium contract, batched == gymnasium twin, oracles."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from environments.bandit import BanditEnv, BatchedBandit
from environments.batched import BatchedEnv
from environments.tabular_mdp import BatchedTabularMDP, TabularMDPEnv
from metaplat.tasks.base import TaskSpec
from metaplat.tasks.registry import make_family

FAMILIES = [("bandit", {"num_arms": 4}), ("tabular_mdp", {"num_states": 6, "horizon": 7})]


def _specs(name: str, config: dict, n: int = 5) -> list[TaskSpec]:
    fam = make_family(name, config)
    return fam.sample(np.random.default_rng(0), "train", n - 1) + fam.sample(
        np.random.default_rng(1), "test", 1
    )


@pytest.mark.parametrize("name,config", FAMILIES)
def test_envs_pass_check_env(name: str, config: dict) -> None:
    fam = make_family(name, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no spec" render-mode notice
        for spec in _specs(name, config, 2):
            check_env(fam.build(spec))
        check_env(BanditEnv())
        check_env(TabularMDPEnv())


@pytest.mark.parametrize("name,config", FAMILIES)
def test_batched_env_equals_gymnasium_twins_step_for_step(name: str, config: dict) -> None:
    fam = make_family(name, config)
    specs = _specs(name, config)
    batched = fam.build_batched(specs)
    assert isinstance(batched, BatchedEnv)
    twins = [fam.build(s) for s in specs]
    rng = np.random.default_rng(3)
    for episode, seed in enumerate([11, None, None, 5]):
        obs = batched.reset(seed)
        for i, tw in enumerate(twins):
            o, _ = tw.reset(seed=None if seed is None else seed + i)
            np.testing.assert_array_equal(obs[i].numpy(), o)
        for t in range(batched.max_episode_steps):
            acts = rng.integers(0, batched.num_actions, size=len(specs))
            obs, rew, term, trunc = batched.step(torch.as_tensor(acts))
            for i, tw in enumerate(twins):
                o, r, te, tr, _ = tw.step(int(acts[i]))
                where = f"episode {episode} step {t} env {i}"
                np.testing.assert_array_equal(obs[i].numpy(), o, err_msg=where)
                assert float(rew[i]) == r and bool(term[i]) == te and bool(trunc[i]) == tr, where
        assert bool((term | trunc).all())


def test_bandit_rewards_are_bernoulli_with_the_arm_probability() -> None:
    env = BatchedBandit([[0.0, 0.3, 1.0]] * 4000, torch.arange(4000))
    env.reset(seed=0)
    for arm, p in enumerate([0.0, 0.3, 1.0]):
        env.reset()
        _, r, term, trunc = env.step(torch.full((4000,), arm))
        assert set(r.unique().tolist()) <= {0.0, 1.0}
        assert abs(r.mean().item() - p) < 0.03
        assert bool(term.all()) and not bool(trunc.any())


def test_deterministic_mdp_follows_its_transitions_and_rewards_have_unit_noise() -> None:
    # 3 states in a cycle 0 -> 1 -> 2 -> 0 whatever the action; mu(s, a) = s + 10 a.
    s, a = 3, 2
    p = np.zeros((s, a, s))
    for i in range(s):
        p[i, :, (i + 1) % s] = 1.0
    mu = np.arange(s)[:, None] + 10.0 * np.arange(a)[None, :]
    n = 5000
    env = BatchedTabularMDP([mu] * n, [p] * n, torch.arange(n), horizon=4)
    obs = env.reset(seed=2)
    assert bool((obs.argmax(1) == 0).all())
    for t in range(4):
        obs, r, term, trunc = env.step(torch.ones(n, dtype=torch.int64))
        assert bool((obs.argmax(1) == (t + 1) % s).all())
        assert abs(r.mean().item() - (t % s + 10)) < 0.05 and abs(r.std().item() - 1) < 0.05
        assert bool(trunc.all()) == (t == 3) and not bool(term.any())


def test_same_seed_reproduces_and_other_seed_differs() -> None:
    fam = make_family("tabular_mdp")
    specs = _specs("tabular_mdp", {})
    outs = []
    for seed in (4, 4, 5):
        env = fam.build_batched(specs)
        env.reset(seed)
        _, r, _, _ = env.step(torch.zeros(len(specs), dtype=torch.int64))
        outs.append(r)
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_family_configs_validate() -> None:
    with pytest.raises(ValueError, match="num_arms"):
        make_family("bandit", {"num_arms": 0})
    with pytest.raises(ValueError, match="horizon"):
        make_family("tabular_mdp", {"horizon": 0})
    fam = make_family("tabular_mdp")
    spec = fam.sample(np.random.default_rng(0), "val", 1)[0]
    assert TaskSpec.from_json(spec.to_json()) == spec
    assert np.allclose(np.sum(spec.params["transitions"], axis=-1), 1.0)

"""RL² with continuous actions (point_nav): the Gaussian head, its clipping, hidden state
across episodes and trials, and reproducible, sharding-independent PPO steps."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from _rl2_fixtures import runs_over_sharding

from metaplat.inner.rl import clipped_ppo_loss, gaussian_logp_entropy
from metaplat.inner.trials import StepInput, run_trials
from metaplat.nn.recurrent import GRUPolicy
from metaplat.outer.rl2 import RL2, RL2Config, RL2Policy
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool


def _family(horizon: int = 3) -> Any:
    # goal_tolerance 0: every episode lasts the horizon, as the batched rollout needs.
    return make_family("point_nav", {"horizon": horizon, "goal_tolerance": 0.0})


def test_gaussian_log_prob_and_entropy_match_torch_normal() -> None:
    mean = torch.tensor([[0.1, -0.2], [0.0, 0.5]])
    log_std = torch.tensor([math.log(0.5), math.log(2.0)])
    x = torch.tensor([[0.3, 0.5], [-1.0, 2.5]])
    logp, ent = gaussian_logp_entropy(mean, log_std, x)
    ref = torch.distributions.Normal(mean, log_std.exp())
    assert torch.allclose(logp, ref.log_prob(x).sum(-1), atol=1e-6)
    assert torch.allclose(ent, ref.entropy().sum(-1), atol=1e-6)
    # By hand, first row: sum of -(x-m)^2 / (2 s^2) - log s - log(2 pi) / 2.
    hand = (
        -(0.2**2) / (2 * 0.25)
        - math.log(0.5)
        - (0.7**2) / (2 * 4.0)
        - math.log(2.0)
        - math.log(2 * math.pi)
    )
    assert logp[0].item() == pytest.approx(hand, abs=1e-6)


def test_head_is_picked_from_the_env_and_clips_only_the_executed_action() -> None:
    fam = _family()
    env = fam.build_batched(fam.sample(np.random.default_rng(0), "train", 4))
    net = GRUPolicy.for_env(env, 8)
    assert (net.continuous, net.action_dim, net.num_actions) == (True, 2, None)
    assert net.max_action == pytest.approx(0.1) and net.input_size == 2 + 2 + 2
    params = net.init_params(0)
    assert torch.equal(params["log_std"], torch.zeros(2))
    disc = make_family("bandit", {"num_arms": 3})
    assert not GRUPolicy.for_env(
        disc.build_batched(disc.sample(np.random.default_rng(0), "train", 2)), 8
    ).continuous
    # A wide Gaussian: samples leave the box, the env gets them clipped, logp scores the raw.
    params["log_std"] = torch.full((2,), math.log(5.0))
    policy = RL2Policy(net, params)
    ro = run_trials(policy, env, episodes=1, seed=0, record=True)
    sample, action = ro.steps["sample"], ro.steps["action"]
    assert bool((sample.abs() > 1).any()) and bool((action.abs() <= 0.1 + 1e-7).all())
    assert torch.allclose(action, sample.clamp(-1, 1) * net.max_action)
    heads, _, _ = net.unroll(params, ro.steps["x"], net.initial_hidden(4))
    logp, _ = net.log_prob_entropy(params, heads, sample)
    assert torch.allclose(logp, ro.steps["logp"], atol=1e-5)
    # The executed action comes back as the next input, in policy units; zeros at the start.
    x = ro.steps["x"]
    assert torch.equal(x[0, :, 2:4], torch.zeros(4, 2))
    assert torch.allclose(x[1:, :, 2:4], action[:-1] / net.max_action, atol=1e-6)
    greedy = RL2Policy(net, params, greedy=True)
    g = run_trials(greedy, env, episodes=1, seed=0, record=True).steps
    assert torch.allclose(g["action"], g["sample"].clamp(-1, 1) * net.max_action)


def test_gaussian_ppo_gradient_reaches_the_log_std() -> None:
    mean = torch.zeros(3, 2, requires_grad=True)
    log_std = torch.zeros(2, requires_grad=True)
    x = torch.tensor([[0.5, 0.5], [0.1, -0.1], [2.0, 0.0]])
    old, _ = gaussian_logp_entropy(mean.detach(), log_std.detach(), x)
    logp, ent = gaussian_logp_entropy(mean, log_std, x)
    adv = torch.tensor([1.0, -1.0, 1.0])
    loss, info = clipped_ppo_loss(
        logp, ent, torch.zeros(3), old, adv, torch.zeros(3), 0.2, 0.0, 0.01
    )
    assert loss.item() == pytest.approx(-adv.mean().item() - 0.01 * ent.mean().item())
    assert info["clip_frac"].item() == 0.0
    g_mean, g_std = torch.autograd.grad(loss, [mean, log_std])
    assert torch.any(g_mean != 0) and torch.any(g_std != 0)


class Spy:
    """Wraps a TrialPolicy and records the hidden state it is handed at every step."""

    def __init__(self, inner: RL2Policy):
        self.inner, self.seen = inner, []

    def initial_state(self, env: Any, keys: torch.Tensor) -> Any:
        return self.inner.initial_state(env, keys)

    def __call__(self, state: Any, inp: StepInput) -> Any:
        self.seen.append((inp.t, bool(inp.done.all()), state.h.clone()))
        action, new, extras = self.inner(state, inp)
        self.last = new.h.clone()
        return action, new, extras


def test_hidden_state_carries_across_episodes_and_resets_between_trials() -> None:
    fam = _family(horizon=3)
    specs = fam.sample(np.random.default_rng(0), "train", 5)
    net = GRUPolicy.for_env(fam.build_batched(specs), 8)
    spy = Spy(RL2Policy(net, net.init_params(0)))
    run_trials(spy, fam.build_batched(specs), episodes=3, seed=0)
    assert len(spy.seen) == 9
    assert torch.count_nonzero(spy.seen[0][2]) == 0  # the trial starts from zeros
    for i in range(1, 9):
        t, done, h = spy.seen[i]
        assert torch.count_nonzero(h) > 0  # never reset inside the trial
        assert done == (t == 0)  # the done flag marks the first step of a new episode
    ended_first_trial = spy.last
    run_trials(spy, fam.build_batched(specs), episodes=1, seed=1)
    assert torch.count_nonzero(spy.seen[9][2]) == 0
    assert torch.count_nonzero(ended_first_trial) > 0


def _algo(workers: int) -> RL2:
    cfg = RL2Config(
        episodes_per_trial=2,
        tasks_per_iteration=12,
        hidden_size=16,
        epochs=2,
        minibatches=3,
        eval_tasks=20,
    )
    return RL2(cfg, _family(horizon=5), LocalPool(workers), seed=0)


def test_rl2_step_on_point_nav_reproduces_and_does_not_depend_on_sharding() -> None:
    (s0, m0, e0), _, _ = runs_over_sharding(_algo)
    assert not torch.equal(s0.params["log_std"], torch.zeros(2))  # PPO trains the std too
    assert m0["train/env_steps"] == 2 * 2 * 5 * 12 and m0["train/trial_return"] < 0
    assert math.isfinite(m0["train/entropy"]) and math.isfinite(e0["val/trial_return"])

"""Bandit and MDP baselines on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from environments.bandit import BatchedBandit
from environments.tabular_mdp import BatchedTabularMDP
from metaplat.baselines import bandit as B
from metaplat.baselines import mdp as M
from metaplat.baselines.gittins import gittins_table
from metaplat.inner.trials import run_trials
from metaplat.stats import mean_ci95
from metaplat.tasks.registry import make_family

BANDIT_POLICIES = [
    B.RandomArm(),
    B.Greedy(),
    B.EpsilonGreedy(0.1),
    B.UCB1(0.5),
    B.Thompson(),
    B.OptimisticThompson(),
    B.Gittins(0.9, 20),
]
MDP_POLICIES = [
    M.RandomAction(),
    M.Greedy(),
    M.EpsilonGreedy(0.1),
    M.PSRL(),
    M.OptimisticPSRL(2),
    M.BEB(1.0),
    M.UCRL2(1.0),
    M.Oracle(),
]


@pytest.mark.parametrize("policy", BANDIT_POLICIES, ids=lambda p: p.name)
def test_one_arm_gets_n_times_p(policy: B.BanditPolicy) -> None:
    probs = torch.linspace(0.0, 1.0, 11)[:, None].repeat(200, 1)  # 2200 one-arm tasks
    env = BatchedBandit(probs, torch.arange(probs.shape[0]))
    ret = run_trials(policy, env, episodes=20, seed=0).returns.view(200, 11)
    np.testing.assert_allclose(ret.mean(0).numpy(), 20 * np.linspace(0, 1, 11), atol=0.5)


@pytest.mark.parametrize("policy", BANDIT_POLICIES[1:], ids=lambda p: p.name)
def test_learners_find_a_deterministic_best_arm(policy: B.BanditPolicy) -> None:
    env = BatchedBandit([[0.0, 1.0, 0.0]] * 50, torch.arange(50))
    ret = run_trials(policy, env, episodes=30, seed=1).returns
    assert ret.mean().item() > 22.0, policy.name  # random would get 10


def test_greedy_and_ucb1_match_the_papers_n10_k5_figures() -> None:
    fam = make_family("bandit", {"num_arms": 5})
    env = fam.build_batched(fam.sample(np.random.default_rng(0), "test", 3000))
    for policy, paper in [(B.Greedy(), 6.6), (B.RandomArm(), 5.0), (B.Gittins(0.9, 10), 6.6)]:
        m, ci = mean_ci95(run_trials(policy, env, 10, seed=3).returns.numpy())
        assert abs(m - paper) < ci + 0.1, (policy.name, m, ci)


def test_gittins_indices_match_published_values() -> None:
    # Gittins, Glazebrook & Weber (2011), Table 8.? (Bernoulli, Beta(1,1) prior).
    assert abs(gittins_table(0.9, 5)[0, 0].item() - 0.7029) < 2e-3
    assert abs(gittins_table(0.99, 5)[0, 0].item() - 0.8699) < 2e-3
    g = gittins_table(0.9, 8)
    assert bool((g[1:, 0] > g[:-1, 0]).all()) and bool((g[0, 1:] < g[0, :-1]).all())
    assert bool(
        (
            g[:4, :4]
            > (torch.arange(4)[:, None] + 1.0)
            / (torch.arange(4)[:, None] + torch.arange(4)[None, :] + 2.0)
        ).all()
    )  # index >= posterior mean


def _chain_mdp(n: int) -> BatchedTabularMDP:
    # Deterministic: action a moves to state a; reward mu(s, a) = 1 only for (s=2, a=2).
    s = 3
    p = np.zeros((s, s, s))
    for a in range(s):
        p[:, a, a] = 1.0
    mu = np.zeros((s, s))
    mu[2, 2] = 1.0
    return BatchedTabularMDP([mu] * n, [p] * n, torch.arange(n), horizon=5)


def test_plan_on_a_deterministic_mdp() -> None:
    env = _chain_mdp(1)
    q = M.plan(env.mu.double(), env.P.double(), 5)[0]
    # From state 0 at step 0: go to 2 (reward 0) then stay there 4 times -> 4.
    assert q[0, 0].max().item() == pytest.approx(4.0)
    assert q[4, 2, 2].item() == pytest.approx(1.0) and q[4, 0].max().item() == pytest.approx(0)


def test_oracle_is_exact_on_a_deterministic_mdp_and_beats_every_baseline() -> None:
    env = _chain_mdp(100)
    oracle = run_trials(M.Oracle(), env, episodes=4, seed=0).returns
    # Noise N(0,1) per step: mean 4 per episode.
    assert abs(oracle.mean().item() - 16.0) < 3 * 20**0.5 / 10
    fam = make_family("tabular_mdp")
    env = fam.build_batched(fam.sample(np.random.default_rng(0), "test", 300))
    means = {p.name: run_trials(p, env, 5, seed=2).returns.mean().item() for p in MDP_POLICIES}
    assert all(means["oracle"] >= v for v in means.values()), means
    assert means["random"] + 5 < min(v for k, v in means.items() if k != "random"), means


def test_optimistic_transitions_stay_distributions_within_radius() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.distributions.Dirichlet(torch.ones(4)).sample((2, 3, 2)).double()
    p = p / p.sum(-1, keepdim=True)
    v = torch.rand(2, 4, generator=g, dtype=torch.float64)
    radius = torch.full((2, 3, 2), 0.4, dtype=torch.float64)
    q = M._optimistic_transitions(p, radius, v)
    assert torch.allclose(q.sum(-1), torch.ones(2, 3, 2, dtype=torch.float64))
    assert bool((q >= -1e-12).all()) and bool(((q - p).abs().sum(-1) <= 0.4 + 1e-9).all())
    val = lambda x: (x * v[:, None, None, :]).sum(-1)  # noqa: E731
    assert bool((val(q) >= val(p) - 1e-12).all())


def test_reproduction_table_scores_and_formats_a_tiny_setting() -> None:
    from metaplat.rl2_table import (
        BANDIT_METHODS,
        PAPER_BANDITS,
        bandit_candidates,
        format_table,
        score_baselines,
    )

    cells = dict(
        score_baselines(
            "bandit",
            {"num_arms": 5},
            10,
            bandit_candidates(10),
            num_tasks=200,
            tune_tasks=50,
            seed=0,
        )
    )
    assert set(cells) == set(BANDIT_METHODS) - {"rl2"}
    assert cells["greedy"][0] > cells["random"][0]
    cells["rl2"] = None
    paper = {"n=10,k=5": PAPER_BANDITS[(10, 5)]}
    text = format_table("T", BANDIT_METHODS, {"n=10,k=5": cells}, paper)
    assert "not trained [6.7]" in text and "[6.6]" in text and "ucb1: c=" in text


def test_paired_gap_compares_with_the_best_baseline_task_by_task() -> None:
    from metaplat.rl2_table import bandit_candidates, paired_gap, score_baselines

    per_task: dict[str, torch.Tensor] = {}
    cells = score_baselines(
        "bandit", {"num_arms": 3}, 10, bandit_candidates(10), 100, 20, 0, per_task=per_task
    )
    assert set(per_task) == set(cells) and all(len(r) == 100 for r in per_task.values())
    best = max(cells, key=lambda m: cells[m][0])
    assert per_task[best].mean().item() == pytest.approx(cells[best][0])
    # a method that gets the best baseline's return plus 1 on every task: +1 with no spread
    cells["rl2"] = (cells[best][0] + 1, 0.0, "")
    per_task["rl2"] = per_task[best] + 1
    name, diff, half = paired_gap(cells, per_task)
    assert name == best and diff == pytest.approx(1.0) and half == pytest.approx(0.0, abs=1e-9)
    # an upper bound (the MDP oracle) is not a baseline to compare with
    cells["oracle"], per_task["oracle"] = (99.0, 0.0, ""), per_task[best] + 9
    assert paired_gap(cells, per_task)[0] == best
    assert paired_gap(cells, {}) is None


def test_episode_returns_sum_to_trial_returns_and_show_where_learning_pays() -> None:
    from metaplat.rl2_table import bandit_candidates, format_episode_curves, score_baselines

    # a known deterministic best arm: a learner's per-pull reward climbs from the first
    # pull's 1/3 to 1, while the random arm's stays at 1/3
    env = BatchedBandit([[0.0, 1.0, 0.0]] * 60, torch.arange(60))
    rollout = run_trials(B.Greedy(), env, episodes=12, seed=0, record=True)
    assert rollout.episode_returns.shape == (60, 12)
    # one pull per episode: each episode's return is that step's recorded reward
    torch.testing.assert_close(rollout.episode_returns, rollout.steps["reward"].float().T)
    torch.testing.assert_close(rollout.episode_returns.sum(1), rollout.returns.float())
    assert rollout.episode_returns[:, -1].mean() == 1.0
    assert rollout.episode_returns[:, 0].mean() < 0.6

    per_task: dict[str, torch.Tensor] = {}
    per_episode: dict[str, torch.Tensor] = {}
    cells = score_baselines(
        "bandit",
        {"num_arms": 3},
        30,
        bandit_candidates(30),
        80,
        20,
        0,
        per_task=per_task,
        per_episode=per_episode,
    )
    assert set(per_episode) == set(cells)
    for name, cell in cells.items():  # the same scoring run: totals are the episodes' sums
        assert per_episode[name].shape == (80, 30)
        torch.testing.assert_close(per_episode[name].sum(1), per_task[name])
        assert per_task[name].mean().item() == pytest.approx(cell[0])
    text = format_episode_curves("where", {"greedy": per_episode["greedy"]}, bins=10)
    lines = text.splitlines()
    assert lines[0] == "where" and lines[1].split()[1:3] == ["ep", "1-3"]  # 10 bins of 3
    row = [float(v) for v in lines[2].split()[1:]]
    assert len(row) == 10
    assert row[0] == pytest.approx(per_episode["greedy"][:, :3].double().mean().item(), abs=1e-3)
    # fewer episodes than bins: one column per episode
    assert format_episode_curves("t", {"x": torch.ones(4, 3)}).splitlines()[1].split() == [
        "method",
        "ep",
        "1",
        "ep",
        "2",
        "ep",
        "3",
    ]


def test_gamma_and_beta_samplers_have_the_right_moments() -> None:
    from metaplat.baselines.sampling import beta_sample, gamma_sample

    gen = torch.Generator().manual_seed(0)
    for alpha in (0.3, 1.0, 4.0):
        x = gamma_sample(torch.full((20000,), alpha, dtype=torch.float64), gen)
        assert abs(x.mean().item() - alpha) < 0.05 * alpha + 0.01
        assert abs(x.var().item() - alpha) < 0.1 * alpha + 0.01
    b = beta_sample(
        torch.full((20000,), 2.0, dtype=torch.float64),
        torch.full((20000,), 6.0, dtype=torch.float64),
        gen,
    )
    assert abs(b.mean().item() - 0.25) < 0.01 and bool(((b > 0) & (b < 1)).all())

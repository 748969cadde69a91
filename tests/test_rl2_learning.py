"""RL² learns to explore: short native training runs beat their untrained selves on small
bandits, small MDPs and point navigation (slow)."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from metaplat.inner.trials import evaluate_policy
from metaplat.outer.rl2 import RL2, RL2Config, evaluation_specs
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool

log = logging.getLogger(__name__)


@pytest.mark.slow
@pytest.mark.parametrize(
    "learner_dtype, rnn_cell", [("float32", "gru"), ("bfloat16", "gru"), ("float32", "lngru")]
)
def test_rl2_beats_random_on_two_armed_bandits(learner_dtype: str, rnn_cell: str) -> None:
    # Random scores 5.0 per 10-pull trial; knowing the best arm gives 6.67 in expectation.
    cfg = RL2Config(
        episodes_per_trial=10,
        tasks_per_iteration=256,
        hidden_size=64,
        epochs=4,
        minibatches=4,
        eval_tasks=1000,
        learner_dtype=learner_dtype,
        rnn_cell=rnn_cell,
    )
    algo = RL2(cfg, make_family("bandit", {"num_arms": 2}), LocalPool(2), seed=0)
    state = algo.init()
    before = algo.evaluate(state, "test")
    for _ in range(150):
        state, _ = algo.step(state)
    after = algo.evaluate(state, "test")
    assert abs(before["test/trial_return"] - 5.0) < 0.3
    # ~5.7 after 150 iterations (about 40 s on one core); random is 5.0 +- 0.2 here.
    assert after["test/trial_return"] - after["test/trial_return_ci95"] > 5.3, after


@pytest.mark.slow
def test_rl2_beats_random_on_small_mdps() -> None:
    cfg = RL2Config(
        episodes_per_trial=2,
        tasks_per_iteration=256,
        hidden_size=64,
        epochs=4,
        minibatches=4,
        eval_tasks=500,
    )
    fam = make_family("tabular_mdp", {"num_states": 3, "num_actions": 2, "horizon": 5})
    algo = RL2(cfg, fam, LocalPool(1), seed=0)
    state = algo.init()
    before = algo.evaluate(state, "test")["test/trial_return"]
    for _ in range(200):
        state, _ = algo.step(state)
    after = algo.evaluate(state, "test")
    assert after["test/trial_return"] - after["test/trial_return_ci95"] > before + 0.5, (
        before,
        after,
    )


@pytest.mark.slow
def test_rl2_learns_point_navigation() -> None:
    # Measured (seed 0, one CPU thread, 46 s): untrained -18.8 +- 0.5 (a random walk of
    # clipped moves; standing still scores about -15), after 150 iterations -6.0 +- 0.2
    # sampling (the greedy mean policy: -9.5, it still explores with its noise), i.e. the
    # policy heads for the goal it infers from the rewards. Margin: 5 beyond both CIs.
    torch.set_num_threads(1)
    cfg = RL2Config(
        episodes_per_trial=2,
        tasks_per_iteration=64,
        hidden_size=64,
        learning_rate=3e-3,
        gae_lambda=0.95,
        epochs=4,
        minibatches=4,
        eval_tasks=500,
    )
    fam = make_family("point_nav", {"horizon": 20, "goal_tolerance": 0.0})
    algo = RL2(cfg, fam, LocalPool(1), seed=0)
    state = algo.init()
    before = algo.evaluate(state, "test")
    t0 = time.perf_counter()
    for _ in range(150):
        state, _ = algo.step(state)
    seconds = time.perf_counter() - t0
    after = algo.evaluate(state, "test")
    specs = evaluation_specs(fam, "test", cfg.eval_tasks, seed=0)
    greedy = evaluate_policy(algo.policy(state, greedy=True), specs, 2, seed=0).mean().item()
    log.info(
        "point_nav RL²: before %.2f +- %.2f, after 150 iterations %.2f +- %.2f "
        "(greedy %.2f) in %.0f s",
        before["test/trial_return"],
        before["test/trial_return_ci95"],
        after["test/trial_return"],
        after["test/trial_return_ci95"],
        greedy,
        seconds,
    )
    assert after["test/trial_return"] - after["test/trial_return_ci95"] > (
        before["test/trial_return"] + before["test/trial_return_ci95"] + 5.0
    ), (before, after)

"""ControllerSearcher contract: sync/async updates, worst rewards, save/restore, Tune run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from _paths import SPECS
from ray.tune.search import ConcurrencyLimiter

from metaplat.search.batched import run_search
from metaplat.search.children import ChildConfig
from metaplat.search.policy import PolicyConfig, SearchPolicy
from metaplat.search.space import make_space
from metaplat.tuning.controller_searcher import ControllerSearcher, make_controller_searcher
from metaplat.workers.base import LocalPool

SPACE = {"kind": "nas_mlp", "max_layers": 2, "widths": [4, 8]}
TINY_CHILD = {"steps": 5, "data": {"num_train": 32, "num_val": 32}}


def _searcher(**policy) -> ControllerSearcher:
    return ControllerSearcher(
        SPACE, {"controller": {"hidden": 8}} | policy, metric="reward", mode="max"
    )


def test_sync_mode_updates_once_per_completed_batch() -> None:
    s = _searcher(batch_size=3)
    configs = [s.suggest(f"t{i}") for i in range(3)]
    assert all(c is not None for c in configs) and s.suggest("t3") is None  # batch is out
    assert make_space(SPACE).decode(configs[0]["tokens"]) == configs[0]["program"]
    s.on_trial_complete("t0", {"reward": 0.5})
    s.on_trial_complete("t1", {"reward": 0.7})
    assert s.policy.state.num_updates == 0 and s.suggest("t3") is None
    s.on_trial_complete("t2", {"reward": 0.9})
    assert s.policy.state.num_updates == 1
    assert s.policy.state.baseline == pytest.approx(0.7)
    assert s.suggest("t4") is not None


def test_async_mode_updates_on_every_completion() -> None:
    s = _searcher(update="async")
    for i in range(3):
        assert s.suggest(f"t{i}") is not None
    s.on_trial_complete("t1", {"reward": 1.0})
    s.on_trial_complete("t0", {"reward": 0.0})
    assert s.policy.state.num_updates == 2


def test_failed_children_get_worst_reward_and_min_mode_negates() -> None:
    s = _searcher(update="async", worst_reward=-1.0)
    for i in range(4):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", None, error=True)
    s.on_trial_complete("t1", {"reward": float("nan")})
    s.on_trial_complete("t2", {"other": 1.0})
    s.on_trial_complete("t3", {"reward": 0.25})
    assert [r for _, r in s.policy.history] == [-1.0, -1.0, -1.0, 0.25]
    m = ControllerSearcher(SPACE, {"update": "async"}, metric="loss", mode="min")
    m.suggest("a")
    m.on_trial_complete("a", {"loss": 2.0})
    assert m.policy.history[0][1] == -2.0


def test_works_under_concurrency_limiter() -> None:
    lim = ConcurrencyLimiter(_searcher(batch_size=4), max_concurrent=2)
    assert lim.suggest("a") is not None and lim.suggest("b") is not None
    assert lim.suggest("c") is None  # limited to 2 live trials
    lim.on_trial_complete("a", {"reward": 1.0})
    assert lim.suggest("c") is not None


def test_save_restore_round_trip_keeps_controller_state(tmp_path: Path) -> None:
    s = _searcher(batch_size=2)
    for i in range(2):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", {"reward": 0.2})
    s.on_trial_complete("t1", {"reward": 0.8})
    s.suggest("t2")  # live trial, part of the next batch
    s.save(str(tmp_path / "searcher.pt"))
    r = _searcher(batch_size=2)
    r.restore(str(tmp_path / "searcher.pt"))
    for k, v in s.policy.state.params.items():
        assert torch.equal(v, r.policy.state.params[k])
    assert r.policy.state.num_updates == 1 and r.policy.state.baseline == s.policy.state.baseline
    assert r._live == s._live and r.policy.history == s.policy.history
    assert r.suggest("t3") == s.suggest("t3")  # same queue and RNG position


def test_restore_completes_trials_that_reported_but_never_completed() -> None:
    s = _searcher(batch_size=2)
    s.suggest("a"), s.suggest("b")
    s.on_trial_complete("a", {"reward": 0.5})
    s.on_trial_result("b", {"reward": 0.75})  # then the sweep stopped before completion
    r = _searcher(batch_size=2)
    r.set_state(s.get_state())
    assert [x for _, x in r.policy.history] == [0.5, 0.75] and r.policy.state.num_updates == 1
    assert r._live == {} and r.suggest("c") is not None  # the batch is not stuck


def test_factory_reads_the_documented_yaml_shape() -> None:
    spec = yaml.safe_load((SPECS / "nas_mlp_sinusoid.yaml").read_text())
    s = make_controller_searcher(spec["tune"]["search_alg"], spec["tune"]["metric"], "max")
    assert isinstance(s, ControllerSearcher) and s.metric == "reward"
    config = s.suggest("x")
    assert config["child"]["data"]["family"] == "sinusoid" and config["program"]["kind"] == "mlp"
    with pytest.raises(ValueError, match="batchsize"):
        make_controller_searcher({"space": SPACE, "batchsize": 3}, "reward", "max")
    with pytest.raises(ValueError, match="update"):
        make_controller_searcher({"space": SPACE, "update": "sometimes"}, "reward", "max")


def test_batched_mode_through_local_pool_does_not_depend_on_sharding() -> None:
    def run(workers: int) -> list[tuple[list[int], float]]:
        policy = SearchPolicy(make_space(SPACE), PolicyConfig(batch_size=4, seed=1))
        with LocalPool(num_workers=workers) as pool:
            metrics = run_search(policy, ChildConfig.from_dict(TINY_CHILD), pool, 8, seed=1)
        assert len(metrics) == 2 and policy.state.num_updates == 2
        return policy.history

    a, b = run(1), run(3)
    assert a == b and all(math.isfinite(r) for _, r in a)


@pytest.mark.ray
@pytest.mark.slow  # ~15 s; the default resume test runs children as Tune trials too
def test_children_as_tune_trials(ray_session: None, tmp_path: Path) -> None:
    from ray import tune

    from metaplat.tuning.controller_searcher import child_trainable

    searcher = ControllerSearcher(SPACE, {"batch_size": 2}, TINY_CHILD)
    tuner = tune.Tuner(
        child_trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, 2),
            num_samples=4,
            metric="reward",
            mode="max",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="nas", verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 4 and not results.errors
    assert all(0.0 <= r.metrics["reward"] <= 1.0 for r in results)
    assert searcher.policy.state.num_updates == 2 and len(searcher.policy.history) == 4


@pytest.mark.parametrize("path", sorted(SPECS.glob("n*s_*.yaml")), ids=lambda p: p.name)
def test_tune_specs_build(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    if "search_alg" in spec["tune"]:
        s = make_controller_searcher(spec["tune"]["search_alg"], spec["tune"]["metric"], "max")
        assert s.suggest("t") is not None
    else:  # batched mode: the whole search is one trial configured by param_space
        ps = spec["param_space"]
        policy = SearchPolicy(make_space(ps["space"]), PolicyConfig(**ps["policy"]))
        ChildConfig.from_dict(ps["child"])
        assert policy.propose() is not None


@pytest.mark.ray
@pytest.mark.slow
def test_batched_search_as_one_tune_trial(ray_session: None, tmp_path: Path) -> None:
    from ray import tune

    from metaplat.tuning.controller_searcher import batched_search_trainable

    config = {"space": SPACE, "child": TINY_CHILD, "policy": {"batch_size": 4}, "num_children": 8}
    results = tune.Tuner(
        batched_search_trainable,
        param_space=config,
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="batched", verbose=0),
    ).fit()
    assert not results.errors
    m = results[0].metrics
    assert m["search/children"] == 8 and m["training_iteration"] == 2 and results[0].checkpoint
    assert m["meta/version/torch"] and "meta/seed" in m

"""The Tune adapter: the trainable's contract (with Tune's report/checkpoint faked, no Ray), the
spec -> Tune mappings, and two tiny real sweeps (a NaN trial beside a healthy one; an
interrupted sweep resumed from its checkpoints)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import toy_outer
from toy_outer import ToyLoop

from metaplat.outer.base import METHODS
from metaplat.specs.loader import parse_spec
from metaplat.specs.schema import ExperimentSpec
from metaplat.specs.typecheck import SpecError
from metaplat.tasks.registry import make_family
from metaplat.tuning.space import param_space, to_tune, trial_spec
from metaplat.workers.base import LocalPool

if "toy" not in METHODS:
    METHODS.register("toy", ToyLoop)


def toy_spec(tmp: Path, **overrides: Any) -> ExperimentSpec:
    d: dict[str, Any] = {
        "name": "toy_sweep",
        "seed": 7,
        "storage_path": str(tmp / "results"),
        "task": {"family": "sinusoid", "config": {"num_support": 5, "num_query": 5}},
        "method": {"name": "toy", "config": {"lr": 0.2, "meta_batch": 3}},
        "train": {"iterations": 5, "eval_every": 2, "checkpoint_every": 2, "eval_tasks": 4},
        "tune": {"metric": "val/loss", "mode": "min"},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            d[section] = {**d.get(section, {}), field: value}
        else:
            d[section] = value
    return parse_spec(d)


def reference_w(spec: ExperimentSpec, iterations: int) -> float:
    """The toy's w after ``iterations`` steps, run directly (no Tune, no Ray)."""
    family = make_family(spec.task.family, spec.task.config)
    algo = ToyLoop(toy_outer.ToyConfig(**spec.method.config), family, LocalPool(1), spec.seed)
    state = algo.init()
    for _ in range(iterations):
        state, _ = algo.step(state)
    return float(state.w)


class FakeTune:
    """Stands in for ``tune.report`` / ``tune.get_checkpoint`` inside one process."""

    def __init__(self, root: Path, restore_from: Path | None = None):
        self.root, self.restore_from = root, restore_from
        self.results: list[dict[str, Any]] = []
        self.checkpoints: dict[int, Path] = {}

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        self.results.append(dict(metrics))
        if checkpoint is not None:  # copy now: the trainable deletes its temp dir
            n = metrics["train/iteration"]
            self.checkpoints[n] = Path(shutil.copytree(checkpoint.path, self.root / f"ckpt{n}"))

    def get_checkpoint(self) -> Any:
        from ray import tune

        return tune.Checkpoint.from_directory(str(self.restore_from)) if self.restore_from else None


def run_fake(
    monkeypatch: pytest.MonkeyPatch, spec: ExperimentSpec, config: dict[str, Any], fake: FakeTune
) -> FakeTune:
    from ray import tune

    from metaplat.tuning.trainable import run_trial

    monkeypatch.setattr(tune, "report", fake.report)
    monkeypatch.setattr(tune, "get_checkpoint", fake.get_checkpoint)
    run_trial(config, spec, ToyLoop)
    return fake


def test_trial_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = toy_spec(tmp_path)
    fake = run_fake(monkeypatch, spec, {"seed": 7, "spec_hash": "abc"}, FakeTune(tmp_path))
    r = fake.results
    assert [x["train/iteration"] for x in r] == [1, 2, 3, 4, 5]
    # evaluated on the first report, every eval_every, and at the end; repeated in between
    assert [x["val/at_iteration"] for x in r] == [1, 2, 2, 4, 5]
    assert all("val/loss" in x and "train/loss" in x for x in r)
    assert sorted(fake.checkpoints) == [2, 4, 5]  # every checkpoint_every, and the last
    assert r[0]["meta/seed"] == 7 and r[0]["meta/spec_hash"] == "abc"
    packages = ("metaplat", "ray", "torch", "numpy", "python")
    assert {"meta/version/" + p for p in packages} <= set(r[0])
    assert r[-1]["train/w"] == pytest.approx(reference_w(spec, 5), abs=1e-6)
    payload = torch.load(fake.checkpoints[4] / "state.pt", weights_only=True)
    assert payload["iteration"] == 4 and payload["spec_hash"] == "abc"
    assert float(payload["state"]["w"]) == pytest.approx(r[3]["train/w"], abs=1e-6)


def test_trial_resumes_exactly_from_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = toy_spec(tmp_path)
    full = run_fake(monkeypatch, spec, {"seed": 7}, FakeTune(tmp_path / "a"))
    resumed = run_fake(
        monkeypatch, spec, {"seed": 7}, FakeTune(tmp_path / "b", full.checkpoints[2])
    )
    assert [x["train/iteration"] for x in resumed.results] == [3, 4, 5]
    assert resumed.results[-1]["train/w"] == full.results[-1]["train/w"]


def test_sampled_values_reach_the_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = toy_spec(tmp_path)
    config = {"seed": np.int64(3), "method.config.lr": np.float64(0.05)}
    fake = run_fake(monkeypatch, spec, config, FakeTune(tmp_path))
    tuned = spec.replace_path("seed", 3).replace_path("method.config.lr", 0.05)
    assert fake.results[0]["meta/seed"] == 3
    assert fake.results[-1]["train/w"] == pytest.approx(reference_w(tuned, 5), abs=1e-6)


def test_nan_loss_fails_trial_before_reporting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = toy_spec(tmp_path, method={"name": "toy", "config": {"nan_at": 2}})
    fake = FakeTune(tmp_path)
    with pytest.raises(FloatingPointError, match=r"'train/loss' is nan at iteration 3"):
        run_fake(monkeypatch, spec, {"seed": 7}, fake)
    assert len(fake.results) == 2


def test_param_space_maps_domains_to_tune(tmp_path: Path) -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = toy_spec(
        tmp_path,
        tune={
            "metric": "val/loss",
            "search_space": {
                "method.config.lr": {"loguniform": [0.001, 0.1]},
                "method.config.meta_batch": {"randint": [1, 4]},
                "method.config.init": {"choice": [0.0, 1.0]},
                "seed": {"grid": [0, 1]},
            },
        },
    )
    space = param_space(spec)
    assert space["spec_hash"] == spec.digest()
    assert space["seed"] == {"grid_search": [0, 1]}
    lr = space["method.config.lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (0.001, 0.1)
    assert isinstance(space["method.config.meta_batch"], Integer)
    assert isinstance(space["method.config.init"], Categorical)
    rng = np.random.default_rng(0)
    for kind, args in [
        ("uniform", (1, 2)),
        ("quniform", (1, 2, 0.5)),
        ("qloguniform", (1, 8, 1)),
        ("qrandint", (1, 9, 2)),
        ("lograndint", (1, 9)),
        ("randn", (0, 1)),
    ]:
        from metaplat.specs.search_space import Domain

        v = to_tune(Domain(kind, args)).sample(random_state=rng)
        assert np.isfinite(v)
    filled = trial_spec(spec, {"seed": np.int64(1), "method.config.lr": 0.01, "spec_hash": "x"})
    assert filled.seed == 1 and filled.method.config["lr"] == 0.01


def test_schedulers_and_searchers_from_spec(tmp_path: Path) -> None:
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining
    from ray.tune.search import ConcurrencyLimiter

    from metaplat.tuning.runner import make_scheduler, make_search_alg

    spec = toy_spec(
        tmp_path,
        tune={
            "metric": "val/loss",
            "mode": "max",
            "scheduler": {"name": "asha", "grace_period": 2},
            "search_alg": {"name": "random", "max_concurrent": 2},
        },
    )
    asha = make_scheduler(spec)
    assert isinstance(asha, ASHAScheduler) and asha._max_t == 5  # train.iterations
    alg, cap = make_search_alg(spec)
    assert cap == 2 and not isinstance(alg, ConcurrencyLimiter)  # variant generator: cap trials
    pbt_spec = toy_spec(
        tmp_path,
        tune={
            "metric": "val/loss",
            "scheduler": {
                "name": "pbt",
                "perturbation_interval": 2,
                "hyperparam_mutations": {
                    "method.config.lr": {"loguniform": [0.01, 0.5]},
                    "method.config.meta_batch": [1, 2, 4],
                },
            },
        },
    )
    pbt = make_scheduler(pbt_spec)
    assert isinstance(pbt, PopulationBasedTraining)
    assert pbt._hyperparam_mutations["method.config.meta_batch"] == [1, 2, 4]


# -- real sweeps on the shared Ray instance ---------------------------------------------------
@pytest.fixture
def ship_toy(ray_session: None) -> None:
    """Trials run in Ray workers that cannot import the tests folder: send the toy by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(toy_outer)


@pytest.mark.ray
def test_nan_trial_fails_alone(tmp_path: Path, ship_toy: None) -> None:
    from metaplat.tuning import report
    from metaplat.tuning.runner import experiment_path, run_experiment

    spec = toy_spec(
        tmp_path,
        train={"iterations": 3, "eval_every": 1, "checkpoint_every": 1, "eval_tasks": 2},
        tune={
            "metric": "val/loss",
            "search_space": {"method.config.nan_at": [-1, 1]},
            "scheduler": {"name": "asha", "grace_period": 3},
        },
    )
    results = run_experiment(spec, verbose=0)
    by_nan = {r.config["method.config.nan_at"]: r for r in results}
    assert by_nan[-1].error is None and by_nan[-1].metrics["train/iteration"] == 3
    assert "'train/loss' is nan at iteration 2" in str(by_nan[1].error)
    table = report.trials_table(experiment_path(spec))
    assert table.set_index("method.config.nan_at")["status"].to_dict() == {-1: "done", 1: "error"}
    assert table["best val/loss"].notna().all()
    with pytest.raises(SpecError, match="pass --resume"):
        run_experiment(spec, verbose=0)  # never mixes two runs in one folder


@pytest.mark.ray
def test_interrupted_sweep_resumes(tmp_path: Path, ship_toy: None) -> None:
    from metaplat.tuning.runner import experiment_path, run_experiment

    marker = Path(tempfile.mkstemp(dir=tmp_path)[1])
    spec = toy_spec(
        tmp_path,
        method={
            "name": "toy",
            "config": {"lr": 0.2, "meta_batch": 3, "crash_at": 2, "crash_file": str(marker)},
        },
        train={"iterations": 4, "eval_every": 2, "checkpoint_every": 1, "eval_tasks": 2},
    )
    (first,) = run_experiment(spec, verbose=0)
    assert "toy crash at iteration 2" in str(first.error)
    assert first.metrics["train/iteration"] == 2
    marker.unlink()  # the "machine" is back
    (resumed,) = run_experiment(spec, resume=True, verbose=0)
    assert resumed.error is None and resumed.metrics["train/iteration"] == 4
    import pandas as pd

    (progress,) = Path(experiment_path(spec)).glob("*/progress.csv")
    assert pd.read_csv(progress)["train/iteration"].tolist() == [1, 2, 3, 4]
    assert resumed.metrics["train/w"] == pytest.approx(reference_w(spec, 4), abs=1e-6)


def test_worker_resources_and_pool_wiring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """num_workers > 0: placement group from worker_bundles, RayPool with the spec's sizes."""
    import sys
    import types

    from ray import tune

    from metaplat.tuning.trainable import make_pool, trial_resources

    calls: dict[str, Any] = {}

    def worker_bundles(n: int, cpus: float, gpus: float, driver: float) -> list[dict[str, float]]:
        calls["bundles"] = (n, cpus, gpus, driver)
        return [{"CPU": driver}] + [{"CPU": cpus, "GPU": gpus}] * n

    class RayPool:
        def __init__(
            self, num_workers: int, num_cpus: float, num_gpus: float, max_task_retries: int
        ):
            calls["pool"] = (num_workers, num_cpus, num_gpus, max_task_retries)

    monkeypatch.setitem(
        sys.modules,
        "metaplat.workers.resources",
        types.SimpleNamespace(worker_bundles=worker_bundles),
    )
    monkeypatch.setitem(
        sys.modules, "metaplat.workers.ray_pool", types.SimpleNamespace(RayPool=RayPool)
    )
    spec = toy_spec(
        tmp_path,
        workers={
            "num_workers": 3,
            "num_cpus": 2,
            "num_gpus": 0.5,
            "driver_cpus": 1,
            "max_task_retries": 1,
        },
    )
    pgf = trial_resources(spec, ToyLoop)
    assert isinstance(pgf, tune.PlacementGroupFactory)
    assert pgf.bundles == [{"CPU": 1.0}] + [{"CPU": 2.0, "GPU": 0.5}] * 3
    make_pool(spec.workers)
    assert calls == {"bundles": (3, 2.0, 0.5, 1.0), "pool": (3, 2.0, 0.5, 1)}
    calls.clear()
    assert isinstance(make_pool(spec.workers, uses_pool=False), LocalPool)  # no actor started
    assert calls == {}
    local = toy_spec(tmp_path)
    assert trial_resources(local, ToyLoop) == {"cpu": 1.0}
    assert isinstance(make_pool(local.workers), LocalPool)


@pytest.mark.ray
def test_local_ray_too_small_is_an_error(tmp_path: Path, ray_session: None) -> None:
    from metaplat.tuning.runner import check_fits_locally

    check_fits_locally(toy_spec(tmp_path, workers={"num_workers": 1}))  # 2 CPUs: fits
    with pytest.raises(
        SpecError,
        match=r"one trial needs 5 CPU, 2 GPU but this local Ray has "
        r"2 CPU, 0 GPU",
    ):
        check_fits_locally(toy_spec(tmp_path, workers={"num_workers": 4, "num_gpus": 0.5}))


def test_embedded_ray_never_joins_another_local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an address, ``metaplat run`` starts its own Ray (``address="local"``): a bare
    ``ray.init()`` would join the latest ``ray start`` cluster on the machine (seen here: a
    quickstart joined a test session's cluster and lost its trial when the tests ended)."""
    import ray

    from metaplat.tuning.runner import ray_session

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_session() as embedded:
        assert embedded
    assert calls[-1]["address"] == "local" and calls[-1]["dashboard_host"] == "127.0.0.1"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    with ray_session() as embedded:
        assert not embedded
    assert calls[-1]["address"] == "10.0.0.1:6379"

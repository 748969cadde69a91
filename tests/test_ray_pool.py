"""RayPool contracts: sharding and order, one put per call, faults, errors, resources."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import cloudpickle  # Ray's vendored copy is the one that pickles tasks

from metaplat.tasks.base import TaskSpec
from metaplat.workers import LocalPool, Pool, shard, worker_bundles
from metaplat.workers.resources import (
    check_bundles_fit,
    check_cluster_fits,
    validate_worker_resources,
)

# Ray workers cannot import this test module (tests/ is not a package on their path), so
# the jobs below travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def specs(n: int) -> list[TaskSpec]:
    return [TaskSpec("toy", {}, {"k": i}, seed=3 * i + 1, split="val") for i in range(n)]


class ScaleSeeds:
    """Per shard: (payload * seed for each task, the worker's pid, its device)."""

    def __call__(
        self, payload: torch.Tensor, specs: Sequence[TaskSpec], device: torch.device
    ) -> tuple[list[float], int, str]:
        vals = [float((payload.to(device) * s.seed).sum()) for s in specs]
        return vals, os.getpid(), str(device)


class DoubleInPlace:
    """Writes into the payload it got (allowed: it is the worker's own copy)."""

    def __call__(
        self, payload: dict[str, Any], specs: Sequence[TaskSpec], device: torch.device
    ) -> dict[str, Any]:
        payload["w"].mul_(2)
        return {"w": payload["w"], "n": [len(specs)], "half": payload["half"]}


class Span:
    """Sleeps, and returns when it started and ended (wall clock, one machine)."""

    def __call__(
        self, payload: float, specs: Sequence[TaskSpec], device: torch.device
    ) -> tuple[float, float]:
        start = time.time()
        time.sleep(payload)
        return start, time.time()


class Explode:
    """Raises on the shard holding seed 7; counts its attempts in a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __call__(self, payload: Any, specs: Sequence[TaskSpec], device: torch.device) -> int:
        if any(s.seed == 7 for s in specs):
            with open(self.marker, "a") as f:
                f.write("x")
            raise ValueError("bad task seven")
        return len(specs)


class SlowFirstAttempt:
    """Sleeps on a shard's first attempt (so a kill lands mid-call), then answers fast."""

    def __init__(self, marker_dir: Path, sleep_s: float):
        self.marker_dir = marker_dir
        self.sleep_s = sleep_s

    def __call__(self, payload: int, specs: Sequence[TaskSpec], device: torch.device) -> list[int]:
        marker = self.marker_dir / f"shard-{specs[0].seed}"
        with open(marker, "a") as f:
            f.write("x")
        if marker.read_text() == "x":
            time.sleep(self.sleep_s)
        return [payload + s.seed for s in specs]


# -- pure resource logic (no Ray) --------------------------------------------------------
def test_worker_bundles_driver_first_then_one_per_worker() -> None:
    assert worker_bundles(2, 0.5, 0, 0.5) == [{"CPU": 0.5}, {"CPU": 0.5}, {"CPU": 0.5}]
    assert worker_bundles(4, 1, 0.25) == [{"CPU": 1.0}] + [{"CPU": 1.0, "GPU": 0.25}] * 4
    assert worker_bundles(1, 0, 1, driver_cpus=0) == [{}, {"GPU": 1.0}]
    with pytest.raises(ValueError, match="driver_cpus"):
        worker_bundles(1, 1, 0, driver_cpus=-1)


@pytest.mark.parametrize(
    "args, field",
    [
        ((0, 1.0, 0.0), "num_workers"),
        ((1.5, 1.0, 0.0), "num_workers"),
        ((1, -1.0, 0.0), "num_cpus"),
        ((1, 1.0, -0.5), "num_gpus"),
        ((1, 1.0, 1.5), "num_gpus must be a fraction <= 1"),
        ((1, 0.0, 0.0), "num_cpus > 0 or num_gpus > 0"),
    ],
)
def test_invalid_worker_resources_name_the_field(args: tuple[Any, ...], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate_worker_resources(*args)


def test_whole_and_fractional_gpus_are_valid() -> None:
    for g in (0.0, 0.25, 1.0, 2.0):
        validate_worker_resources(2, 1.0, g)


def test_cluster_fit_checks_totals_and_single_nodes() -> None:
    total = {"CPU": 2.0, "memory": 1e9}
    nodes = [{"CPU": 1.0}, {"CPU": 1.0}]
    check_cluster_fits(2, 1.0, 0.0, total, nodes)
    with pytest.raises(ValueError, match=r"num_gpus=1 .* no GPUs .*CPU: 2"):
        check_cluster_fits(1, 1.0, 1.0, total, nodes)
    with pytest.raises(ValueError, match=r"3 workers x num_cpus=1 need 3 CPUs.* has 2"):
        check_cluster_fits(3, 1.0, 0.0, total, nodes)
    with pytest.raises(ValueError, match="no single node can hold one worker"):
        check_cluster_fits(1, 2.0, 0.0, total, nodes)
    gpu_total, gpu_nodes = {"CPU": 8.0, "GPU": 1.0}, [{"CPU": 8.0, "GPU": 1.0}]
    check_cluster_fits(4, 1.0, 0.25, gpu_total, gpu_nodes)  # four workers share one GPU
    with pytest.raises(ValueError, match="need 1.25 GPUs"):
        check_cluster_fits(5, 1.0, 0.25, gpu_total, gpu_nodes)


def test_bundle_fit_counts_workers_per_bundle_minus_the_driver() -> None:
    bundles = worker_bundles(2, 0.5, 0, 0.5)
    check_bundles_fit(2, 0.5, 0.0, bundles, held={"CPU": 0.5})
    check_bundles_fit(3, 0.5, 0.0, bundles, held={})  # the driver bundle is free
    with pytest.raises(ValueError, match=r"it holds 2 .*worker_bundles\(3, 0.5, 0"):
        check_bundles_fit(3, 0.5, 0.0, bundles, held={"CPU": 0.5})
    with pytest.raises(ValueError, match="it holds 0"):  # 1 CPU never fits a 0.5 bundle
        check_bundles_fit(1, 1.0, 0.0, bundles, held={"CPU": 0.5})
    gpu = worker_bundles(2, 1, 0.5, driver_cpus=0)
    check_bundles_fit(2, 1.0, 0.5, gpu, held={})
    check_bundles_fit(4, 0.5, 0.25, gpu, held={})  # two quarter-GPU workers per bundle
    with pytest.raises(ValueError, match="it holds 2"):
        check_bundles_fit(3, 1.0, 0.25, gpu, held={})  # CPU-bound: one per bundle


# -- the pool on the shared Ray instance -------------------------------------------------
@pytest.fixture(scope="module")
def pool(ray_session: None) -> Iterator[Any]:
    from metaplat.workers import RayPool

    with RayPool(2, num_cpus=0.5) as p:
        yield p


@pytest.mark.ray
def test_pool_protocol_devices_and_threads(pool: Any) -> None:
    assert isinstance(pool, Pool) and pool.num_workers == 2
    assert pool.devices() == [torch.device("cpu")] * 2  # no GPU assigned -> CPU
    infos = pool.worker_info()
    assert [i.index for i in infos] == [0, 1]
    assert all(i.num_threads == 1 and i.gpu_ids == () for i in infos)
    assert len({i.pid for i in infos}) == 2


@pytest.mark.ray
def test_map_matches_local_pool_in_task_order(pool: Any, monkeypatch: Any) -> None:
    import ray

    puts: list[Any] = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda v, **kw: puts.append(v) or real_put(v, **kw))
    payload = torch.tensor([1.0, 2.0])
    tasks = specs(5)

    out = pool.map(ScaleSeeds(), payload, tasks)

    assert len(puts) == 1  # the payload is put once per call (as numpy: cheaper to ship)
    assert (puts[0].array == payload.numpy()).all()
    assert [len(vals) for vals, _, _ in out] == [3, 2]  # contiguous shards, one per worker
    flat = [v for vals, _, _ in out for v in vals]
    assert flat == [3.0 * s.seed for s in tasks]
    pids = {i.pid for i in pool.worker_info()}
    assert {pid for _, pid, _ in out} == pids  # each worker ran exactly one batched call
    local = LocalPool(2).map(ScaleSeeds(), payload, tasks)
    assert [vals for vals, _, _ in out] == [vals for vals, _, _ in local]


def test_pack_round_trip_ships_plain_cpu_tensors_as_arrays() -> None:
    from metaplat.workers.ray_pool import _Array, _pack, _unpack

    leaf = torch.nn.Parameter(torch.ones(2))
    obj = {"a": torch.arange(3.0), "b": [torch.zeros(2, dtype=torch.int64), (1, "x")],
           "bf16": torch.ones(2, dtype=torch.bfloat16), "leaf": leaf}  # fmt: skip
    packed = _pack(obj)
    assert isinstance(packed["a"], _Array) and isinstance(packed["b"][0], _Array)
    assert packed["bf16"] is obj["bf16"] and packed["leaf"] is leaf  # no numpy twin: as is
    back = _unpack(packed)
    assert torch.equal(back["a"], obj["a"]) and back["b"][0].dtype == torch.int64
    assert back["b"][1] == (1, "x") and isinstance(back["b"], list)
    back["a"].add_(1)  # a fresh, writable copy
    assert torch.equal(obj["a"], torch.arange(3.0))


@pytest.mark.ray
def test_payload_and_results_stay_tensors(pool: Any) -> None:
    payload = {"w": torch.arange(4.0), "half": torch.ones(1, dtype=torch.float16)}
    out = pool.map(DoubleInPlace(), payload, specs(3))
    assert torch.equal(payload["w"], torch.arange(4.0))  # the caller's payload is untouched
    assert [torch.equal(r["w"], 2 * torch.arange(4.0)) for r in out] == [True, True]
    assert [r["n"] for r in out] == [[2], [1]]
    assert out[0]["half"].dtype == torch.float16


@pytest.mark.ray
def test_shards_run_concurrently(pool: Any) -> None:
    (s0, e0), (s1, e1) = pool.map(Span(), 0.3, specs(2))
    assert max(s0, s1) < min(e0, e1)  # both calls were in flight at once


@pytest.mark.ray
def test_fewer_tasks_than_workers_and_empty(pool: Any) -> None:
    one = pool.map(ScaleSeeds(), torch.ones(1), specs(1))
    assert len(one) == 1 and one[0][0] == [1.0]
    assert [r[0] for r in pool.map(ScaleSeeds(), torch.ones(1), [])] == [[]]
    assert len(shard(specs(1), 2)) == 1


@pytest.mark.ray
def test_job_exception_is_reraised_once_with_seeds_and_traceback(pool: Any, tmp_path: Path) -> None:
    from metaplat.workers import JobError

    marker = tmp_path / "attempts"
    tasks = specs(4)  # seeds 1, 4, 7, 10: seed 7 is in shard 1
    with pytest.raises(JobError) as info:
        pool.map(Explode(marker), None, tasks)
    err = info.value
    assert err.shard_index == 1 and err.seeds == [7, 10]
    assert "task seeds [7, 10]" in str(err) and "ValueError" in str(err)
    assert "bad task seven" in err.worker_traceback and "in __call__" in err.worker_traceback
    assert isinstance(err.__cause__, ValueError)
    assert marker.read_text() == "x"  # never retried
    assert pool.map(Explode(marker), None, specs(2)) == [1, 1]  # the pool still works


@pytest.mark.ray
def test_killed_worker_is_restarted_and_its_shard_retried(pool: Any, tmp_path: Path) -> None:
    import ray

    victim = pool.actors[1]
    old_pid = pool.worker_info()[1].pid

    def kill_mid_call() -> None:  # once shard 1's first attempt has started (and sleeps)
        deadline = time.monotonic() + 60
        while not (tmp_path / "shard-7").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        ray.kill(victim, no_restart=False)

    killer = threading.Thread(target=kill_mid_call)
    killer.start()
    out = pool.map(SlowFirstAttempt(tmp_path, sleep_s=2.0), 100, specs(4))
    killer.join()
    assert out == [[101, 104], [107, 110]]
    assert (tmp_path / "shard-7").read_text() == "xx"  # killed once mid-call, retried once
    assert (tmp_path / "shard-1").read_text() == "x"
    assert pool.worker_info()[1].pid != old_pid  # a new process took over


@pytest.mark.ray
def test_impossible_requests_fail_fast(ray_session: None) -> None:
    from metaplat.workers import RayPool

    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"num_gpus=1 per worker, but the Ray cluster has no GPU"):
        RayPool(1, num_gpus=1)
    with pytest.raises(ValueError, match=r"3 workers x num_cpus=1 need 3 CPUs.*has 2"):
        RayPool(3, num_cpus=1)
    with pytest.raises(ValueError, match="num_workers"):
        RayPool(0)
    assert time.monotonic() - t0 < 5


@pytest.mark.ray
def test_worker_dead_for_good_raises_worker_lost(pool: Any) -> None:
    import ray

    from metaplat.workers import WorkerLostError

    ray.kill(pool.actors[1], no_restart=True)
    with pytest.raises(WorkerLostError, match=r"worker 1 died .*shard 1 of 2 .*seeds \[7, 10\]"):
        pool.map(ScaleSeeds(), torch.ones(1), specs(4))


@pytest.mark.ray
def test_closed_pool_refuses_work(pool: Any) -> None:
    # Last test of the module: it closes the shared pool (saves starting another actor).
    import ray

    actors = pool.actors
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        pool.map(ScaleSeeds(), torch.ones(1), specs(1))
    # ray.kill is asynchronous: a call sent right after it may still be served, so the
    # actor must be dead within a deadline rather than at once.
    deadline = time.monotonic() + 60
    with pytest.raises(ray.exceptions.RayActorError):
        while time.monotonic() < deadline:
            ray.get(actors[0].info.remote(), timeout=30)
            time.sleep(0.2)

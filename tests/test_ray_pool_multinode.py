"""RayPool on clusters of its own: a simulated 3-node cluster, and a node with one GPU.

The session shares one Ray instance, and a process can join only one cluster, so each
cluster and its driver live in a subprocess that always shuts its Ray down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _paths import ROOT, SPECS

SCRIPT = r"""
import json, os, signal, sys
import ray
import torch
from ray.cluster_utils import Cluster

from metaplat.tasks.base import TaskSpec
from metaplat.workers import RayPool

torch.set_num_threads(1)


class SeedPlusPayload:
    def __call__(self, payload, specs, device):
        return [payload + s.seed for s in specs], ray.get_runtime_context().get_node_id()


def on_alarm(signum, frame):
    raise TimeoutError("multi-node script ran out of time")


signal.signal(signal.SIGALRM, on_alarm)
signal.alarm(int(sys.argv[1]))  # raises inside the try below, so the cluster still shuts down
node = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
cluster = Cluster(initialize_head=True, head_node_args=dict(node, include_dashboard=False))
try:
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    specs = [TaskSpec("toy", {}, {}, seed=s, split="train") for s in range(0, 21, 3)]
    with RayPool(3, num_cpus=1) as pool:
        out = pool.map(SeedPlusPayload(), 1000, specs)
        infos = pool.worker_info()
    print("RESULT " + json.dumps({
        "values": [v for vals, _ in out for v in vals],
        "shard_sizes": [len(vals) for vals, _ in out],
        "shard_nodes": [n for _, n in out],
        "worker_nodes": [i.node_id for i in infos],
        "cluster_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
    }))
finally:
    signal.alarm(0)
    ray.shutdown()
    cluster.shutdown()
"""


def run_isolated(script: str, cwd: Path, deadline_s: int = 150) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; return the JSON it prints after ``RESULT``."""
    return run_isolated_with_args(script, cwd, [], deadline_s)


def run_isolated_with_args(
    script: str, cwd: Path, args: list[str], deadline_s: int = 150
) -> dict[str, Any]:
    """:func:`run_isolated` with ``args`` after the deadline in ``sys.argv``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(deadline_s), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a hung run can be reaped whole
    )
    try:
        stdout, stderr = proc.communicate(timeout=deadline_s + 50)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"isolated Ray run hung; stderr tail:\n{stderr[-3000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}; stderr:\n{stderr[-3000:]}"
    return dict(json.loads(lines[0][len("RESULT ") :]))


@pytest.mark.ray
def test_pool_spreads_over_nodes_and_keeps_task_order(tmp_path: Path) -> None:
    r = run_isolated(SCRIPT, tmp_path)

    assert r["values"] == [1000 + s for s in range(0, 21, 3)]  # every task, in task order
    assert r["shard_sizes"] == [3, 2, 2]
    assert len(r["cluster_nodes"]) == 3
    assert sorted(r["worker_nodes"]) == r["cluster_nodes"]  # one worker on each node
    assert r["shard_nodes"] == r["worker_nodes"]  # shard i ran on worker i


GPU_SCRIPT = r"""
import json, signal, sys
import ray
import torch

from metaplat.tasks.base import TaskSpec
from metaplat.workers import RayPool

signal.alarm(int(sys.argv[1]))  # SIGALRM ends a hung run; Ray's own processes die with it
# One GPU resource: the real one where CUDA exists, else a logical GPU (no CUDA: CPU device).
ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
try:
    try:
        RayPool(1, num_gpus=2)
        too_many = ""
    except ValueError as e:
        too_many = str(e)


    class Where:
        def __call__(self, payload, specs, device):
            x = torch.ones(3, device=device) * payload
            return [float(x.sum()) * s.seed for s in specs], str(x.device)


    specs = [TaskSpec("toy", {}, {}, seed=s, split="train") for s in (1, 4, 7, 10)]
    with RayPool(4, num_cpus=0.25, num_gpus=0.25) as pool:  # four workers share one GPU
        out = pool.map(Where(), 2.0, specs)
        infos = pool.worker_info()
    print("RESULT " + json.dumps({
        "too_many": too_many,
        "values": [v for vals, _ in out for v in vals],
        "job_devices": [d for _, d in out],
        "devices": [i.device for i in infos],
        "gpu_ids": [list(i.gpu_ids) for i in infos],
        "cuda": torch.cuda.is_available(),
    }))
finally:
    ray.shutdown()
"""


@pytest.mark.gpu
def test_fractional_gpus_share_one_gpu_and_pick_the_device(tmp_path: Path) -> None:
    """Four 0.25-GPU workers on one GPU; CUDA iff Ray assigned a GPU and CUDA exists.

    Needs no CUDA to run (Ray then counts a logical GPU and the workers pick the CPU).
    """
    r = run_isolated(GPU_SCRIPT, tmp_path, deadline_s=120)

    assert "num_gpus=2 need 2 GPUs, but the Ray cluster has 1" in r["too_many"]
    assert r["values"] == [6.0 * s for s in (1, 4, 7, 10)]
    assert r["gpu_ids"] == [["0"]] * 4  # all four placed on the same GPU
    expected = "cuda:0" if r["cuda"] else "cpu"
    assert r["devices"] == [expected] * 4 and r["job_devices"] == [expected] * 4


CLI_SCRIPT = r"""
import json, signal, sys
import ray
from ray.cluster_utils import Cluster

from metaplat.cli import main


def on_alarm(signum, frame):
    raise TimeoutError("cluster run ran out of time")


signal.signal(signal.SIGALRM, on_alarm)
signal.alarm(int(sys.argv[1]))
node = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
cluster = Cluster(initialize_head=True, head_node_args=dict(node, include_dashboard=False))
try:
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    # `metaplat run --address`: what `ray job submit` does through RAY_ADDRESS.
    rc = main(["run", sys.argv[2], "--address", cluster.address, "--storage-path", sys.argv[3],
               "--no-dashboard", "--set", "train.iterations=3", "--set", "train.eval_tasks=4"])
    print("RESULT " + json.dumps({"rc": rc, "ray_left_connected": ray.is_initialized()}))
finally:
    signal.alarm(0)
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.mark.ray
def test_cli_run_joins_a_multi_node_cluster_by_address(tmp_path: Path) -> None:
    spec = SPECS / "quickstart.yaml"
    proc_args = [str(spec), str(tmp_path / "results")]
    r = run_isolated_with_args(CLI_SCRIPT, tmp_path, proc_args)
    assert r == {"rc": 0, "ray_left_connected": False}  # joined, ran, and disconnected
    progress = list((tmp_path / "results" / "quickstart").glob("*/progress.csv"))
    assert len(progress) == 1 and len(progress[0].read_text().splitlines()) == 1 + 3

"""RayPool on a simulated 3-node cluster (``ray.cluster_utils.Cluster``).

The session shares one Ray instance, and a process can join only one cluster, so the
cluster and its driver live in a subprocess that always shuts the cluster down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.mark.ray
def test_pool_spreads_over_nodes_and_keeps_task_order(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "150"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a hung run can be reaped whole
    )
    try:
        stdout, stderr = proc.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"multi-node run hung; stderr tail:\n{stderr[-3000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}; stderr:\n{stderr[-3000:]}"
    r = json.loads(lines[0][len("RESULT ") :])

    assert r["values"] == [1000 + s for s in range(0, 21, 3)]  # every task, in task order
    assert r["shard_sizes"] == [3, 2, 2]
    assert len(r["cluster_nodes"]) == 3
    assert sorted(r["worker_nodes"]) == r["cluster_nodes"]  # one worker on each node
    assert r["shard_nodes"] == r["worker_nodes"]  # shard i ran on worker i

"""Children per minute: trial-per-child (Tune) vs batched-children mode, same tiny children.

Both modes run the controller searcher over the NAS MLP space on spirals (the children of
``search_vs_random.py``). Trial-per-child: ``Tuner(child_trainable, ControllerSearcher)``,
2 concurrent trials, actors reused (a fresh local Ray with 2 CPUs; its start-up is not
timed). Batched: one process,
``LocalPool``, the controller updated per batch of 8. Target: >= 10 tiny children/min batched.

Run: ``PYTHONPATH=. python benchmarks/children_per_minute.py [--trials 12] [--batched 160]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from metaplat.search.batched import run_search
from metaplat.search.children import ChildConfig
from metaplat.search.policy import PolicyConfig, SearchPolicy
from metaplat.search.space import make_space
from metaplat.workers.base import LocalPool

SPACE = {"kind": "nas_mlp", "max_layers": 3, "widths": [4, 8, 16, 32]}
CHILD = {"steps": 50, "lr": 0.02, "data": {"source": "spirals", "num_classes": 4, "noise": 0.2}}


def batched(n: int) -> tuple[float, float]:
    """(children per minute, median seconds of one child's training)."""
    policy = SearchPolicy(make_space(SPACE), PolicyConfig(batch_size=8, seed=0))
    t0 = time.perf_counter()
    with LocalPool() as pool:
        metrics = run_search(policy, ChildConfig.from_dict(CHILD), pool, n, seed=0)
    wall = time.perf_counter() - t0
    per_child = statistics.median(m["search/child_seconds"] / 8 for m in metrics)
    return 60.0 * len(policy.history) / wall, per_child


def tune_trials(n: int) -> float:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway loopback cluster
    import ray
    from ray import tune

    from metaplat.tuning.controller_searcher import ControllerSearcher, child_trainable

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        searcher = ControllerSearcher(SPACE, {"batch_size": 2, "seed": 0}, CHILD)
        with tempfile.TemporaryDirectory() as d:
            tuner = tune.Tuner(
                child_trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    num_samples=n,
                    max_concurrent_trials=2,
                    metric="reward",
                    mode="max",
                    reuse_actors=True,
                ),  # fmt: skip
                run_config=tune.RunConfig(storage_path=d, name="cpm", verbose=0),
            )
            t0 = time.perf_counter()
            results = tuner.fit()
            wall = time.perf_counter() - t0
        assert len(results) == n and not results.errors
        return 60.0 * n / wall
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12, help="children run as Tune trials")
    ap.add_argument("--batched", type=int, default=160, help="children run batched")
    args = ap.parse_args()
    torch.set_num_threads(1)
    b, per_child = batched(args.batched)
    t = tune_trials(args.trials)
    print(f"{'mode':<28} {'children':>8} {'children/min':>12}")
    print(f"{'trial per child (Tune)':<28} {args.trials:>8} {t:>12.1f}")
    print(f"{'batched (LocalPool, 1 core)':<28} {args.batched:>8} {b:>12.1f}")
    print(
        f"batched / trial-per-child = {b / t:.1f}x; "
        f"median child training {per_child * 1e3:.0f} ms; "
        f"target >= 10 children/min batched: {'met' if b >= 10 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

"""What does a RayPool call cost on top of the inner loop it runs?

Job: second-order MAML on sinusoid regression (an MLP, ``--inner-steps`` SGD steps on the
support set, meta-gradient of the query loss), vmapped over a batch of tasks with
``torch.func``: one call is one outer iteration's inner-loop work for ``--batch`` tasks.

Timed, medians over ``--repeats`` calls after warm-up, from ONE run:
  (a) the job called directly in this process (the baseline: pure inner-loop time);
  (b) ``RayPool(1).map``;
  (c) ``RayPool(2).map``;
  (d) ``RayPool(1).map`` of an empty job: the pool's own round trip, free of inner-loop noise;
round-robin (a), (b), (c), (a), ... so all three see the same machine load.
Overhead = (b) - (a) per call; target: < 5% of the inner-loop time at the default batch.
Speed-up = (b) / (c); ideal 2x on two free cores.

    PYTHONPATH=. python benchmarks/pool_overhead.py [--batch 32] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import ray
import torch
from torch.func import functional_call, grad, vmap

from metaplat.nn.backbones import mlp
from metaplat.tasks.base import TaskSpec
from metaplat.tasks.sinusoid import SinusoidFamily
from metaplat.workers import LocalPool, RayPool

TARGET_OVERHEAD = 0.05


class MamlSinusoidJob:
    """Per shard: summed second-order MAML meta-gradient and query loss over its tasks."""

    def __init__(self, hidden: int, inner_steps: int, inner_lr: float = 0.01):
        self.hidden = hidden
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr

    def __call__(
        self, params: dict[str, torch.Tensor], specs: Sequence[TaskSpec], device: torch.device
    ) -> tuple[dict[str, torch.Tensor], float]:
        net = mlp(1, [self.hidden, self.hidden], 1).to(device)
        family = SinusoidFamily(**{k: v for k, v in specs[0].config.items()})
        ep = family.build_batch(specs, device)
        params = {k: v.to(device) for k, v in params.items()}

        def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ((functional_call(net, p, (x,)) - y) ** 2).mean()

        def task_loss(p: dict[str, torch.Tensor], sx, sy, qx, qy) -> torch.Tensor:
            for _ in range(self.inner_steps):
                g = grad(loss)(p, sx, sy)
                p = {k: p[k] - self.inner_lr * g[k] for k in p}
            return loss(p, qx, qy)

        def meta_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
            per_task = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(
                p, ep.support_x, ep.support_y, ep.query_x, ep.query_y
            )
            return per_task.sum()

        meta_grad, total = torch.func.grad_and_value(meta_loss)(params)
        return {k: v.cpu() for k, v in meta_grad.items()}, float(total)


class CountJob:
    """Does no work: times the pool's own round trip (put, one call per worker, get)."""

    def __call__(self, params: Any, specs: Sequence[TaskSpec], device: torch.device) -> int:
        return len(specs)


class TimedJob:
    """Runs ``job`` and also returns how long it took inside the worker (ms)."""

    def __init__(self, job: Any):
        self.job = job

    def __call__(self, params: Any, specs: Sequence[TaskSpec], device: torch.device) -> Any:
        t0 = time.perf_counter()
        out = self.job(params, specs, device)
        return out, 1000 * (time.perf_counter() - t0)


def round_robin_ms(fns: Sequence[Callable[[], Any]], repeats: int) -> list[float]:
    """Median ms per call of each ``fn``, timed in turn so all see the same machine load."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [1000 * statistics.median(t) for t in times]


def _importable_jobs(hidden: int, inner_steps: int) -> tuple[Any, Any]:
    """The jobs, as instances of the *importable* module's classes where possible.

    Classes of ``__main__`` travel by value (cloudpickle re-sends the class, ~2 ms a call);
    metaplat's own jobs live in modules and travel by name, so time those.
    """
    try:
        from benchmarks import pool_overhead as mod
    except ImportError:  # run from elsewhere without the repo root on the path
        import __main__ as mod  # type: ignore[no-redef]
    return mod.TimedJob(mod.MamlSinusoidJob(hidden, inner_steps)), mod.CountJob()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="tasks per outer iteration")
    ap.add_argument("--hidden", type=int, default=128, help="MLP hidden width (two layers)")
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)

    family = SinusoidFamily()
    specs = family.sample(np.random.default_rng(0), "train", args.batch)
    net = mlp(1, [args.hidden, args.hidden], 1)
    params = {k: v.detach() for k, v in net.named_parameters()}
    timed, noop = _importable_jobs(args.hidden, args.inner_steps)
    job = timed.job
    in_worker: list[float] = []  # the inner loop's own time inside pool1's worker
    cpu = torch.device("cpu")

    def direct() -> Any:
        return job(params, specs, cpu)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # 0.5 logical CPU per worker keeps all three actors alive at once on num_cpus=2, so
        # (a), (b), (c) run round-robin; each worker still runs 1 torch thread.
        with RayPool(1, num_cpus=0.5) as pool1, RayPool(2, num_cpus=0.5) as pool2:
            calls = [
                direct,
                lambda: in_worker.append(pool1.map(timed, params, specs)[0][1]),
                lambda: pool2.map(job, params, specs),
                lambda: pool1.map(noop, params, specs),
            ]
            for _ in range(args.warmup):
                for call in calls:
                    call()
            # Same numbers through the pool as in-process (a correctness guard, not timing).
            ref = LocalPool(1).map(job, params, specs)[0][0]
            got = pool1.map(job, params, specs)[0][0]
            assert all(torch.allclose(ref[k], got[k]) for k in ref), "pool changed the result"
            in_worker.clear()
            t_direct, t_pool1, t_pool2, t_noop = round_robin_ms(calls, args.repeats)
            t_worker = statistics.median(in_worker)
    finally:
        ray.shutdown()

    load = os.getloadavg()[0]
    overhead = t_pool1 - t_direct
    frac = overhead / t_direct
    payload_kb = sum(v.numel() * v.element_size() for v in params.values()) / 1024
    print(
        f"job: 2nd-order MAML, sinusoid, MLP 1-{args.hidden}-{args.hidden}-1, "
        f"{args.inner_steps} inner steps, batch {args.batch} tasks/call, "
        f"payload {payload_kb:.0f} KB; "
        f"medians of {args.repeats} round-robin calls; 1 torch thread per process"
    )
    print(
        f"host: {os.cpu_count()} cores, 1-min load average {load:.1f} after the run "
        f"(a load above the core count makes every figure below noisy)"
    )
    print(f"(a) direct, in-process (baseline)   {t_direct:8.1f} ms/call")
    print(
        f"(b) RayPool, 1 worker               {t_pool1:8.1f} ms/call   overhead "
        f"{overhead:+.1f} ms = {100 * frac:+.1f}% of inner loop "
        f"(target < {100 * TARGET_OVERHEAD:.0f}%: {'MET' if frac < TARGET_OVERHEAD else 'MISSED'})"
    )
    print(
        f"    the same inner loop timed inside that worker {t_worker:8.1f} ms/call: pool transport "
        f"{t_pool1 - t_worker:+.1f} ms = {100 * (t_pool1 - t_worker) / t_worker:+.1f}%"
    )
    print(
        f"(d) RayPool, 1 worker, empty job    {t_noop:8.1f} ms/call   = the pool's own round trip, "
        f"{100 * t_noop / t_direct:.1f}% of inner loop"
    )
    print(
        f"(c) RayPool, 2 workers              {t_pool2:8.1f} ms/call   speed-up vs 1 worker "
        f"{t_pool1 / t_pool2:.2f}x (ideal 2.00x on 2 free cores)"
    )


if __name__ == "__main__":
    main()

"""Peak host memory of one second-order MAML meta-gradient on glyph-sized episodes: vmap vs loop.

5-way 1-shot episodes of 28x28 single-channel images (synthetic tensors ``[T, 5, 1, 28, 28]``,
15 query images per class), Conv4 with 64 filters and batch-statistics BatchNorm, second
order through 5 and 10 inner steps. Each cell runs in a fresh subprocess; its peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus the peak of an identical
subprocess that stops right before the meta-gradient is the figure (MiB). ``vmap`` batches
the tasks of the shard in one graph; ``grouped`` (the default for Conv4) is the hand-batched
grouped-convolution kernel; ``loop`` runs the tasks one after another inside the same graph
(what the per-task fallback does). All three hold every task's inner-loop graph until the
backward; the differences are the batched intermediates.

    PYTHONPATH=. python benchmarks/maml_memory.py [--tasks 8] [--queries 15]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def cell(kernel: str, steps: int, tasks: int, queries: int, run: bool) -> dict[str, float]:
    from metaplat.estimators.backprop import MetaGradJob, ModelSpec, make_kernels
    from metaplat.inner.adapt import InnerRule
    from metaplat.tasks.base import Episode

    torch.set_num_threads(1)
    ways = 5
    g = torch.Generator().manual_seed(0)
    ep = Episode(
        torch.randn(tasks, ways, 1, 28, 28, generator=g),
        torch.arange(ways).repeat(tasks, 1),
        torch.randn(tasks, ways * queries, 1, 28, 28, generator=g),
        torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1),
    )
    spec = ModelSpec(kind="conv4", in_shape=(1, 28, 28), out_dim=ways)
    params = spec.init_params(0)
    job = MetaGradJob(spec, InnerRule(steps=steps, lr=0.4), "second_order", kernel)  # type: ignore[arg-type]
    kernels = make_kernels(spec, kernel, torch.device("cpu"))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    if run:
        out = job.compute(params, ep, kernels)
        assert out.num_ok == tasks
    secs = time.perf_counter() - t0
    return {
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": secs,
    }


def measure(kernel: str, steps: int, tasks: int, queries: int, run: bool) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--cell",
        kernel,
        str(steps),
        str(tasks),
        str(queries),
        str(int(run)),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tasks", type=int, default=8, help="tasks in the shard (meta-batch on one worker)"
    )
    ap.add_argument("--queries", type=int, default=15, help="query images per class")
    ap.add_argument("--cell", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cell:
        k, s, t, q, r = args.cell
        print(json.dumps(cell(k, int(s), int(t), int(q), bool(int(r)))))
        return
    kernels = ("loop", "vmap", "grouped")
    print(
        f"second-order MAML, Conv4-64, 5-way 1-shot 28x28, {args.queries} queries/class, "
        f"{args.tasks} tasks per shard; peak RSS above setup (MiB) and seconds for one "
        "meta-gradient, one subprocess per cell; ratios relative to the per-task loop"
    )
    head = " ".join(f"{k + ' MiB':>12} {k + ' s':>10}" for k in kernels)
    print(f"{'steps':>5} {head} {'vmap/loop':>9} {'grouped/loop':>12}")
    for steps in (5, 10):
        row = {}
        for kernel in kernels:
            base = measure(kernel, steps, args.tasks, args.queries, run=False)
            full = measure(kernel, steps, args.tasks, args.queries, run=True)
            row[kernel] = (full["maxrss_mib"] - base["maxrss_mib"], full["seconds"])
        cells = " ".join(f"{row[k][0]:>12.0f} {row[k][1]:>10.1f}" for k in kernels)
        lm = row["loop"][0]
        print(
            f"{steps:>5} {cells} {row['vmap'][0] / lm:>8.2f}x {row['grouped'][0] / lm:>11.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()

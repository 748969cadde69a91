"""RL² learner: eager vs ``torch.compile``-d PPO update (``RL2Config.compile_learner``) on a
table cell's own configuration, side by side in one run.

    PYTHONPATH=. python benchmarks/rl2_compile.py [--cell b100x5] [--set rnn_cell=lngru]

For each learner this builds the cell's RL² (``benchmarks/rl2_table.py``'s settings, plus any
``--set FIELD=VALUE``), runs one warm-up iteration (the compiled learner compiles there; its
seconds are printed) and then ``--iterations`` more, and prints the median seconds of the
learner's update (``train/update_s``) and of the rollout, and the eager / compiled ratio of
the update. One learner thread (``--threads``). The wider throughput comparison with RLlib is
``rl2_throughput.py --compile``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from metaplat.outer.rl2 import RL2
from metaplat.rl2_table import cell_setting, config_overrides
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cell", default="b100x5", help="a table cell: b<n>x<k> or m<n>")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setting = cell_setting(args.cell)
    base = dataclasses.replace(setting.rl2, **config_overrides(args.set))
    update: dict[str, float] = {}
    print(
        f"RL² learner on cell {args.cell}: {base.tasks_per_iteration} trials x "
        f"{base.episodes_per_trial} episodes per update, {base.minibatches} minibatches, "
        f"{base.epochs} epochs, {base.rnn_cell} {base.hidden_size}, {args.threads} thread(s); "
        f"median of {args.iterations} iterations"
    )
    for compile_learner in (False, True):
        cfg = dataclasses.replace(base, compile_learner=compile_learner)
        algo = RL2(cfg, make_family(setting.family, setting.config), LocalPool(1), seed=0)
        state = algo.init()
        t0 = time.perf_counter()
        state, _ = algo.step(state)
        warm_up = time.perf_counter() - t0
        updates, rollouts = [], []
        for _ in range(args.iterations):
            state, m = algo.step(state)
            updates.append(m["train/update_s"])
            rollouts.append(m["train/rollout_s"])
        name = "compiled" if compile_learner else "eager"
        update[name] = statistics.median(updates)
        rollout = statistics.median(rollouts)
        print(
            f"  {name:8s} update {update[name]:.3f} s, rollout {rollout:.3f} s, "
            f"warm-up iteration {warm_up:.1f} s"
        )
    print(f"  eager / compiled update: {update['eager'] / update['compiled']:.2f}x")


if __name__ == "__main__":
    main()

"""Print the few-shot table: every supervised method x every setting, ours beside the paper's.

    PYTHONPATH=. python benchmarks/fewshot_table.py --quick            # smoke run, minutes
    PYTHONPATH=. python benchmarks/fewshot_table.py --iterations 500   # small real budget
    PYTHONPATH=. python benchmarks/fewshot_table.py --methods protonet matchingnet \
        --settings 5w1s 20w5s

Runs in this process (LocalPool). Budgets on a 2-core machine are far below the papers'
(tens of thousands of iterations), so expect figures well under the published ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import torch

from metaplat.fewshot_table import METHOD_NAMES, QUICK, SETTINGS, Budget, build_table, format_table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke budget: 3 iterations, 20 test episodes"
    )
    p.add_argument("--iterations", type=int, help="outer iterations per cell")
    p.add_argument("--meta-batch-size", type=int, help="tasks per outer iteration")
    p.add_argument("--eval-tasks", type=int, help="meta-test episodes per cell (default 600)")
    p.add_argument("--workers", type=int, help="LocalPool shards")
    p.add_argument("--seed", type=int)
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    p.add_argument(
        "--settings",
        nargs="+",
        default=[s.key for s in SETTINGS],
        help=f"any of: {', '.join(repr(s.key) for s in SETTINGS)}",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    torch.set_num_threads(a.threads)
    budget = QUICK if a.quick else Budget()
    overrides = {
        "iterations": a.iterations,
        "meta_batch_size": a.meta_batch_size,
        "eval_tasks": a.eval_tasks,
        "num_workers": a.workers,
        "seed": a.seed,
    }
    budget = dataclasses.replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    by_key = {s.key: s for s in SETTINGS}
    unknown = [k for k in a.settings if k not in by_key]
    if unknown:
        p.error(f"unknown setting(s) {unknown}; allowed: {list(by_key)}")
    table = build_table(budget, a.methods, [by_key[k] for k in a.settings])
    print(format_table(table))


if __name__ == "__main__":
    main()

"""Controller search vs random search through the same space, equal numbers of child trainings.

Part 1 (NAS, MLP space on 4-class spirals): over seeds, the controller's best child vs random
search's best, and the mean reward of the controller's last batch vs random search's mean.
Part 2 (NOS, 2-unit update rules, fixed 2x32 MLP on spirals): the best rules found by the
controller and by random search, printed as formulas and re-evaluated on a held-out task
(4-class spirals, other data seed) against SGD with momentum and Adam, all at the same steps
and the same learning-rate grid; and whether PowerSign/AddSign-like rules appear.

Batched-children mode (``metaplat.search.batched``) with a ``LocalPool``; one process, one
thread. ``--algorithm ppo`` trains the controller with PPO instead of REINFORCE (same
settings otherwise). Run: ``PYTHONPATH=. python benchmarks/search_vs_random.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from metaplat.nn.controller import ALGORITHMS, ControllerConfig
from metaplat.optim import dsl
from metaplat.search.batched import run_search
from metaplat.search.children import ChildConfig, run_child
from metaplat.search.nos_space import program_of
from metaplat.search.policy import PolicyConfig, SearchPolicy
from metaplat.search.space import make_space
from metaplat.workers.base import LocalPool

NAS_SPACE = {"kind": "nas_mlp", "max_layers": 3, "widths": [4, 8, 16, 32],
             "activations": ["relu", "tanh", "sigmoid", "identity"]}  # fmt: skip
NAS_CHILD = {"steps": 50, "lr": 0.02, "data": {"source": "spirals", "num_classes": 4,
             "noise": 0.2, "num_train": 256, "num_val": 256}}  # fmt: skip
NOS_SPACE = {"kind": "nos", "num_units": 2}
LRS = [1.0, 0.1, 0.01, 0.001]
NOS_CHILD: dict[str, Any] = {"steps": 60, "lrs": LRS, "data": {"source": "spirals",
             "num_classes": 3, "noise": 0.1, "num_train": 256, "num_val": 256}}  # fmt: skip
HELD_OUT = NOS_CHILD | {"steps": 60, "data": NOS_CHILD["data"] | {"num_classes": 4, "seed": 17}}
CONTROLLER: dict[str, Any] = {
    "hidden": 35,
    "layers": 2,
    "lr": 0.02,
    "baseline_decay": 0.8,
    "entropy_coef": 1e-3,
}


def search(
    space: dict, child: dict, n: int, batch: int, seed: int, random: bool, algorithm: str
) -> SearchPolicy:
    controller = ControllerConfig(**CONTROLLER | {"algorithm": algorithm})
    cfg = PolicyConfig(batch_size=batch, seed=seed, random=random, controller=controller)
    policy = SearchPolicy(make_space(space), cfg)
    with LocalPool() as pool:
        run_search(policy, ChildConfig.from_dict(child), pool, n, seed)
    return policy


def nas(seeds: list[int], n: int, batch: int, algorithm: str) -> None:
    print(f"\n== NAS-RL, MLP space on spirals: {n} children per search, batches of {batch}, "
          f"controller trained with {algorithm} ==")  # fmt: skip
    print(f"{'seed':>4} | {'ctrl best':>9} {'rand best':>9} | {'ctrl last-batch mean':>20} "
          f"{'rand mean':>9} {'rand last-batch mean':>20} | ctrl best program")  # fmt: skip
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        c = search(NAS_SPACE, NAS_CHILD, n, batch, seed, random=False, algorithm=algorithm)
        r = search(NAS_SPACE, NAS_CHILD, n, batch, seed, random=True, algorithm=algorithm)
        c_r = [x for _, x in c.history]
        r_r = [x for _, x in r.history]
        row = (max(c_r), max(r_r), statistics.mean(c_r[-batch:]), statistics.mean(r_r),
               statistics.mean(r_r[-batch:]))  # fmt: skip
        rows.append(row)
        found = c.best()
        assert found is not None  # n > 0 children were trained
        best = c.space.describe(c.space.decode(found[0]))
        print(f"{seed:>4} | {row[0]:9.3f} {row[1]:9.3f} | "
              f"{row[2]:20.3f} {row[3]:9.3f} {row[4]:20.3f}"
              f" | {best}  ({time.perf_counter() - t0:.0f}s)")  # fmt: skip
    med = [statistics.median(col) for col in zip(*rows, strict=True)]
    print(f"{'med':>4} | {med[0]:9.3f} {med[1]:9.3f} | {med[2]:20.3f} {med[3]:9.3f} {med[4]:20.3f}")
    print(
        f"ratios (median): best ctrl/rand = {med[0] / med[1]:.3f}; "
        f"last-batch mean ctrl / mean rand = {med[2] / med[3]:.3f}"
    )


def _sign_agreement(program: dsl.Program) -> bool:
    """PowerSign/AddSign family (heuristic): the rule combines sign(m̂) (the ``sign_m``
    operand, or ``m`` under the ``sign`` function) with the gradient (g, g³ or sign(g))."""
    ops, signed_m = set(), False
    for k in program.used_units():
        u = program.units[k]
        for op, fn in [(u.op1, u.u1)] + ([] if u.b == "keep_left" else [(u.op2, u.u2)]):
            ops.add(op)
            signed_m |= op == "sign_m" or (op == "m" and fn == "sign")
    return signed_m and bool(ops & {"g", "g3", "sign_g"})


def nos(seed: int, n: int, batch: int, top: int, no_adam: bool, algorithm: str) -> None:
    space = dict(NOS_SPACE)
    if no_adam:  # force the search to build rules from raw statistics
        space["operands"] = [o for o in dsl.OPERANDS if o not in ("adam", "rmsprop")]
    print(
        f"\n== NOS, 2-unit rules{' without adam/rmsprop operands' if no_adam else ''}, "
        f"2x32 MLP on spirals: {n} children per search, lrs {LRS}, {algorithm} =="
    )
    ref = ChildConfig.from_dict(NOS_CHILD)
    held = ChildConfig.from_dict(HELD_OUT)
    mom = run_child({"kind": "nos", **dsl.MOMENTUM.to_dict()}, ref, seed).reward
    adam = run_child({"kind": "nos", **dsl.ADAM.to_dict()}, ref, seed).reward
    print(f"search task, same steps and lr grid: SGD-momentum {mom:.3f}, Adam {adam:.3f}")
    for name, random in (("controller", False), ("random", True)):
        t0 = time.perf_counter()
        pol = search(space, NOS_CHILD, n, batch, seed, random, algorithm)
        rewards = [r for _, r in pol.history]
        beat = sum(r > mom for r in rewards)
        like = sum(_sign_agreement(program_of(pol.space.decode(t))) for t, _ in pol.history)
        print(f"\n{name}: {time.perf_counter() - t0:.0f}s, best {max(rewards):.3f}, mean "
              f"{statistics.mean(rewards):.3f}, "
              f"last-batch mean {statistics.mean(rewards[-batch:]):.3f}; "
              f"{beat}/{len(rewards)} rules beat SGD-momentum on the search task; "
              f"{like} sampled rules are PowerSign/AddSign-like (sign(m̂) with g)")  # fmt: skip
        ranked, seen = [], set()
        for t, r in sorted(pol.history, key=lambda tr: -tr[1]):
            f = program_of(pol.space.decode(t)).formula()
            if f not in seen:
                seen.add(f)
                ranked.append((t, r, f))
            if len(ranked) == top:
                break
        print(f"  {'search':>6} {'held-out':>8}  rule (held-out baselines below)")
        for t, r, f in ranked:
            h = run_child(pol.space.decode(t), held, seed)
            tag = " [sign-agreement]" if _sign_agreement(program_of(pol.space.decode(t))) else ""
            print(f"  {r:6.3f} {h.reward:8.3f}  {f}{tag}")
    for name in ("momentum", "adam", "powersign", "addsign"):
        reward = run_child({"kind": "nos", **dsl.NAMED[name].to_dict()}, held, seed).reward
        print(f"  held-out {name:>9}: {reward:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer children (a smoke run)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--skip-nos", action="store_true")
    ap.add_argument("--skip-nas", action="store_true")
    ap.add_argument("--nos-no-adam", action="store_true", help="NOS without adam/rmsprop operands")
    ap.add_argument("--algorithm", choices=ALGORITHMS, default="reinforce",
                    help="the controller's update rule")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    n_nas, n_nos = (32, 32) if args.quick else (320, 480)
    if not args.skip_nas:
        nas(list(range(args.seeds)), n_nas, 8, args.algorithm)
    if not args.skip_nos:
        nos(0, n_nos, 16, top=5, no_adam=args.nos_no_adam, algorithm=args.algorithm)


if __name__ == "__main__":
    main()

"""RL² training throughput: env steps per second (rollout + PPO update), native vs RLlib.

    PYTHONPATH=. python benchmarks/rl2_throughput.py [--iterations 5] [--arms 5] [--n 10]

Same bandit family, same trial length, same recurrent width (GRU vs LSTM units) and PPO
epochs on both paths, in one run. Native is measured in-process (rollouts in the learner's
process, as the RLlib row samples locally) and with 1 and 2 rollout workers:
``RayPool`` (metaplat.workers.ray_pool) when it imports, else ``LocalPool`` sharding in
one process (which measures sharding overhead only, not parallelism) -- the output says
which. Figures are medians over iterations after one warm-up iteration.

Each native row runs twice: with a float32 learner and with the bfloat16 mixed-precision
learner (``RL2Config.learner_dtype``); ``--compile`` adds both again with the
``torch.compile``-d learner (``RL2Config.compile_learner``; its compile is in the untimed
warm-up iteration, and printed apart). ``--learn-iterations N`` (default 100, lr 3e-3) then trains
each learner from the same seed for N iterations and prints their meta-val returns side by side,
so the faster learner is shown to learn as well (a speed figure for a learner that does
not learn would measure nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _rates(
    step: Any, state: Any, iterations: int
) -> tuple[list[float], list[float], list[float], float]:
    """Whole-iteration env steps/s, rollout-only and update-only steps/s where the step
    reports its parts, and the warm-up iteration's seconds (a compile included)."""
    t0 = time.perf_counter()
    state, m = step(state)  # warm-up
    warm_up = time.perf_counter() - t0
    rates, rollout, update = [], [], []
    for _ in range(iterations):
        t0, before = time.perf_counter(), m["train/env_steps"]
        state, m = step(state)
        steps = m["train/env_steps"] - before
        rates.append(steps / (time.perf_counter() - t0))
        if "train/rollout_s" in m:
            rollout.append(steps / m["train/rollout_s"])
            update.append(steps / m["train/update_s"])
    return rates, rollout, update, warm_up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--arms", type=int, default=5)
    p.add_argument("--n", type=int, default=10, help="pulls (episodes) per trial")
    p.add_argument("--tasks", type=int, default=400, help="trials per update (both paths)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--skip-rllib", action="store_true")
    p.add_argument(
        "--learn-iterations",
        type=int,
        default=100,
        help="iterations of the learning check of each learner (0: skip)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads of the learner (both paths)"
    )
    p.add_argument(
        "--dtypes",
        default="float32,bfloat16",
        help="learner dtypes to time (bfloat16 is emulated, and slow, on CPUs without "
        "AVX512-BF16 / AMX)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time (and learning-check) the torch.compile-d learners (compile_learner)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from metaplat.outer.rl2 import RL2, RL2Config
    from metaplat.tasks.registry import make_family
    from metaplat.workers.base import LocalPool

    family = make_family("bandit", {"num_arms": args.arms})
    steps_per_update = args.tasks * args.n
    results: dict[str, float] = {}
    rollout_only: dict[str, float] = {}
    update_only: dict[str, float] = {}
    warm_ups: dict[str, float] = {}

    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 1024**2
    )
    try:
        try:
            from metaplat.workers.ray_pool import RayPool  # type: ignore[import-not-found]

            def make_pool(n: int) -> Any:
                return RayPool(num_workers=n, num_cpus=1)

            pool_kind = "RayPool"
        except ImportError:

            def make_pool(n: int) -> Any:
                return LocalPool(n)

            pool_kind = "LocalPool (no RayPool on this branch: sharding only, one process)"

        dtypes = args.dtypes.split(",")
        learners = [(d, False) for d in dtypes] + [(d, True) for d in dtypes if args.compile]

        def label(dtype: str, compile_learner: bool) -> str:
            return f"{dtype}{' compiled' if compile_learner else ''}"

        def config(dtype: str, compile_learner: bool, learning_rate: float = 1e-3) -> RL2Config:
            return RL2Config(
                episodes_per_trial=args.n,
                tasks_per_iteration=args.tasks,
                hidden_size=args.hidden,
                learning_rate=learning_rate,
                epochs=4,
                minibatches=4,
                learner_dtype=dtype,
                compile_learner=compile_learner,
            )

        for workers in (0, 1, 2):
            for dtype, compile_learner in learners:
                # 0: rollouts in this process (LocalPool), like the RLlib row's local sampling
                # (the warm-up iteration, not timed, compiles a compiled learner)
                pool = LocalPool(1) if workers == 0 else make_pool(workers)
                algo = RL2(config(dtype, compile_learner), family, pool, seed=0)
                rates, rollout, update, warm_up = _rates(algo.step, algo.init(), args.iterations)
                pool.close()
                where = "in-process" if workers == 0 else f"{workers} worker(s)"
                name = f"native, {where}, {label(dtype, compile_learner)} learner"
                results[name] = statistics.median(rates)
                rollout_only[name] = statistics.median(rollout)
                update_only[name] = statistics.median(update)
                warm_ups[name] = warm_up

        learned: dict[str, tuple[float, float]] = {}
        for dtype, compile_learner in learners if args.learn_iterations else ():
            # lr 3e-3: the timed config learns n=10 bandits in ~100 updates (lr does not
            # change the timing); seed 0 for all, so they start from the same policy
            algo = RL2(config(dtype, compile_learner, 3e-3), family, LocalPool(1), seed=0)
            state = algo.init()
            if not learned:
                m = algo.evaluate(state, "val", 1000)
                learned["untrained"] = (m["val/trial_return"], m["val/trial_return_ci95"])
            for _ in range(args.learn_iterations):
                state, _ = algo.step(state)
            m = algo.evaluate(state, "val", 1000)
            learned[label(dtype, compile_learner)] = (
                m["val/trial_return"],
                m["val/trial_return_ci95"],
            )

        if not args.skip_rllib:
            from metaplat.outer.rl2_rllib import RL2RLlib, RL2RLlibConfig

            rcfg = RL2RLlibConfig(
                episodes_per_trial=args.n,
                train_batch_size=steps_per_update,
                minibatch_size=steps_per_update // 4,
                num_epochs=4,
                lstm_cell_size=args.hidden,
                num_env_runners=0,
                num_envs_per_env_runner=8,
                max_seq_len=args.n,
            )
            ralgo = RL2RLlib(rcfg, family, LocalPool(1), seed=0)
            rates, _, _, _ = _rates(ralgo.step, ralgo.init(), args.iterations)
            ralgo.close()
            results["RLlib PPO+LSTM (local sampling)"] = statistics.median(rates)
    finally:
        ray.shutdown()

    print(
        f"RL² training throughput, bandit k={args.arms}, n={args.n}, {args.tasks} trials "
        f"({steps_per_update} env steps) per update, width {args.hidden}, 4 PPO epochs, "
        f"{args.threads} learner thread(s); "
        f"median of {args.iterations} iterations"
    )
    print(f"native rollout pool: {pool_kind}")
    base = results.get("RLlib PPO+LSTM (local sampling)")
    for name, rate in results.items():
        ratio = f"{rate / base:8.1f}x RLlib" if base else ""
        print(f"  {name:49s} {rate:12,.0f} env steps/s  {ratio}")
    for name, rate in rollout_only.items():
        print(
            f"  ({name}: rollout alone {rate:,.0f} env steps/s, "
            f"learner's PPO update alone {update_only[name]:,.0f}; "
            f"warm-up iteration {warm_ups[name]:.1f} s)"
        )
    for name, (mean, half) in learned.items():
        what = name if name == "untrained" else f"{name} learner, {args.learn_iterations} updates"
        print(f"  learning check ({what}): meta-val return {mean:.2f} ± {half:.2f}, 1000 tasks")
    if base:
        print(
            f"target: native >= 100x RLlib -> "
            f"{'met' if max(results.values()) >= 100 * base else 'NOT met'}"
        )


if __name__ == "__main__":
    main()

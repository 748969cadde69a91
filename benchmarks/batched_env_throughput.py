"""Env-steps per second of the batched torch envs against a Python loop over gymnasium twins.

Baseline: 64 gymnasium envs of the same family stepped one by one in Python (what a worker
would do without a batched env). Each figure is the median over ``--repeats`` full
episodes (reset + ``--steps`` steps, actions pre-drawn), printed beside the baseline with
the ratio. Run::

    PYTHONPATH=. python benchmarks/batched_env_throughput.py [--family cartpole_physics]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from metaplat.tasks.base import RLFamily
from metaplat.tasks.registry import make_family

BATCH_SIZES = (1, 64, 1024, 16384)
GYM_ENVS = 64


def _median_rate(run: Callable[[], None], env_steps: int, repeats: int) -> float:
    run()  # warm-up (allocations, CUDA kernels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return env_steps / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="point_nav", choices=["point_nav", "cartpole_physics"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode timed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    family = make_family(args.family)
    if not (isinstance(family, RLFamily) and family.batchable):
        parser.error(f"--family {args.family}: has no batched environment")
    rng = np.random.default_rng(0)
    steps = min(args.steps, getattr(family, "horizon", args.steps))
    discrete = args.family == "cartpole_physics"

    def draw(b: int) -> np.ndarray:
        if discrete:
            return rng.integers(0, 2, size=(steps, b))
        return rng.uniform(-0.15, 0.15, size=(steps, b, 2)).astype(np.float32)

    # Baseline: GYM_ENVS gymnasium envs in a Python loop.
    specs = family.sample(rng, "train", GYM_ENVS)
    envs = [family.build(s) for s in specs]
    gym_actions = draw(GYM_ENVS)
    gym_actions_list = [[a[i] for i in range(GYM_ENVS)] for a in gym_actions]

    def run_gym() -> None:
        for i, env in enumerate(envs):
            env.reset(seed=i)
        for row in gym_actions_list:
            for env, a in zip(envs, row, strict=True):
                _, _, terminated, truncated, _ = env.step(int(a) if discrete else a)
                if terminated or truncated:  # what a worker without a batched env does
                    env.reset()

    gym_rate = _median_rate(run_gym, GYM_ENVS * steps, args.repeats)

    print(
        f"family={args.family} device={device} steps/episode={steps} "
        f"repeats={args.repeats} torch threads={args.threads}"
    )
    print(
        f"baseline: {GYM_ENVS} gymnasium envs stepped in a Python loop: {gym_rate:,.0f} env-steps/s"
    )
    print(f"{'B':>7} {'batched env-steps/s':>20} {'gymnasium loop':>15} {'ratio':>8}")
    for b in BATCH_SIZES:
        specs_b = family.sample(rng, "train", b)
        batched = family.build_batched(specs_b, device)
        actions = torch.as_tensor(draw(b), device=device)

        def run_batched(batched: Any = batched, actions: torch.Tensor = actions) -> None:
            batched.reset(seed=0)
            for t in range(steps):
                batched.step(actions[t])
            _sync(device)

        rate = _median_rate(run_batched, b * steps, args.repeats)
        print(f"{b:>7} {rate:>20,.0f} {gym_rate:>15,.0f} {rate / gym_rate:>7.1f}x")


if __name__ == "__main__":
    main()

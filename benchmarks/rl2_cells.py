"""RL² recurrent cells: forward + backward cost of one PPO minibatch, plain GRU vs LN-GRU.

    PYTHONPATH=. python benchmarks/rl2_cells.py [--lengths 100,500] [--trials 32] [--hidden 128]

The PPO update backpropagates through whole trials, so its cost per env step should not
grow with the trial length. For each trial length this times ``GRUPolicy.unroll`` plus the
backward of its outputs, for ``--trials`` trials of a 5-armed bandit policy, with PyTorch's
fused GRU (``rnn_cell="gru"``, the baseline) and the Python-loop LN-GRU
(``rnn_cell="lngru"``) side by side, and prints the medians, the LN-GRU / GRU ratio and each
cell's cost per step at the longest trial relative to the shortest (1.0: linear in the
trial length; a backward that is quadratic in it reads about longest / shortest).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metaplat.nn.recurrent import CELLS, GRUPolicy


def fwd_bwd_ms(cell: str, steps: int, trials: int, hidden: int, repeats: int) -> float:
    """Median wall clock (ms) of one forward + backward through ``steps`` x ``trials``."""
    net = GRUPolicy(obs_dim=1, num_actions=5, hidden_size=hidden, cell=cell)
    params = {k: v.requires_grad_(True) for k, v in net.init_params(0).items()}
    x = torch.randn(steps, trials, net.input_size, generator=torch.Generator().manual_seed(0))
    h0 = net.initial_hidden(trials)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        head, value, _ = net.unroll(params, x, h0)
        # the gradients themselves, as the PPO update takes them (no .grad accumulation)
        torch.autograd.grad(head.sum() + value.sum(), list(params.values()))
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lengths", default="100,500", help="trial lengths (steps), comma-separated")
    p.add_argument("--trials", type=int, default=32, help="trials per minibatch")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lengths = sorted(int(n) for n in args.lengths.split(","))

    ms = {
        (cell, n): fwd_bwd_ms(cell, n, args.trials, args.hidden, args.repeats)
        for n in lengths
        for cell in CELLS
    }
    print(
        f"RL² cell forward + backward, {args.trials} trials, width {args.hidden}, "
        f"{args.threads} thread(s), median of {args.repeats}"
    )
    print(f"  {'steps':>6} {'gru ms':>10} {'lngru ms':>10} {'lngru / gru':>12}")
    for n in lengths:
        gru, ln = ms["gru", n], ms["lngru", n]
        print(f"  {n:>6} {gru:>10.1f} {ln:>10.1f} {ln / gru:>11.2f}x")
    if len(lengths) > 1:
        short, long = lengths[0], lengths[-1]
        for cell in CELLS:
            growth = (ms[cell, long] / long) / (ms[cell, short] / short)
            print(
                f"  {cell}: cost per step at {long} steps / at {short} steps = {growth:.2f} "
                f"(1.0: linear in the trial length; quadratic would read about {long / short:.1f})"
            )


if __name__ == "__main__":
    main()

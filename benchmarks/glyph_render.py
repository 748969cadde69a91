"""Median time to render one glyph episode, beside the cost of gathering pre-rendered images.

    PYTHONPATH=. python benchmarks/glyph_render.py [--repeats 30]

Baseline: the same episode gathered from an in-memory array of pre-rendered images (what a
stored-image loader such as Omniglot's pays per episode). Target: well under 10 ms for 5w1s.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from metaplat.tasks._classification import episode_from_classes
from metaplat.tasks.glyphs import GlyphFamily

QUERY = 15


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def render_ms(ways: int, shots: int, repeats: int) -> float:
    fam = GlyphFamily(num_ways=ways, num_shots=shots, num_query=QUERY)
    specs = iter(fam.sample(np.random.default_rng(0), "train", repeats + 1))
    fam.build(next(specs))  # warm the stroke cache
    return median_ms(lambda: fam.build(next(specs)), repeats)


def gather_ms(ways: int, shots: int, repeats: int) -> float:
    """Baseline: 20 stored images per class, a random K + Q of them per episode."""
    pool = np.random.default_rng(0).random((ways, 20, 28, 28), dtype=np.float32)
    rng = np.random.default_rng(1)
    m = shots + QUERY
    return median_ms(
        lambda: episode_from_classes(
            [pool[c][rng.permutation(20)[:m]] for c in range(ways)], shots
        ),
        repeats,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = ("setting", "images", "render ms", "gather ms", "ratio", "us/img")
    print("{:>8} {:>6} {:>10} {:>10} {:>6} {:>7}".format(*header))
    for ways, shots in ((5, 1), (5, 5), (20, 1), (20, 5)):
        render = render_ms(ways, shots, args.repeats)
        base = gather_ms(ways, shots, args.repeats)
        n = ways * (shots + QUERY)
        print(
            f"{ways:>5}w{shots}s {n:>6} {render:>10.2f} {base:>10.2f} {render / base:>6.1f} "
            f"{1e3 * render / n:>7.1f}"
        )


if __name__ == "__main__":
    main()

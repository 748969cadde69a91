"""How hard is the glyph family? Pixel-space 1-nearest-neighbour accuracy beside Omniglot's.

    PYTHONPATH=. python benchmarks/glyph_pixel_nn.py [--tasks 200] [--jitter 1.0]

Each query is labelled by its nearest support image in raw pixels (L2, and cosine
similarity), on meta-test tasks. The Omniglot column is the "Pixels, cosine" baseline of
Matching Networks (Vinyals et al. 2016, Table 1) as recalled, not re-measured here (we
have no Omniglot copy): 41.7 / 63.2 / 26.7 / 42.6 % for 5w1s / 5w5s / 20w1s / 20w5s.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from metaplat.stats import format_ci, mean_ci95
from metaplat.tasks.glyphs import GlyphFamily

OMNIGLOT_PIXEL_COSINE = {(5, 1): 41.7, (5, 5): 63.2, (20, 1): 26.7, (20, 5): 42.6}


def nn_accuracy(fam: GlyphFamily, tasks: int) -> tuple[list[float], list[float]]:
    l2, cos = [], []
    for spec in fam.sample(np.random.default_rng(0), "test", tasks):
        ep = fam.build(spec)
        s, q = ep.support_x.flatten(1), ep.query_x.flatten(1)
        pred = ep.support_y[torch.cdist(q, s).argmin(1)]
        l2.append(100 * (pred == ep.query_y).float().mean().item())
        sn, qn = s / s.norm(dim=1, keepdim=True), q / q.norm(dim=1, keepdim=True)
        pred = ep.support_y[(qn @ sn.T).argmax(1)]
        cos.append(100 * (pred == ep.query_y).float().mean().item())
    return l2, cos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--jitter", type=float, default=1.0)
    parser.add_argument("--augment-rotations", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"glyphs, jitter {args.jitter}, rotations {args.augment_rotations}, {args.tasks} test tasks"
    )
    print(f"{'setting':>8} {'glyphs L2 %':>14} {'glyphs cosine %':>16} {'Omniglot cos %':>15}")
    for (ways, shots), omni in OMNIGLOT_PIXEL_COSINE.items():
        fam = GlyphFamily(
            num_ways=ways,
            num_shots=shots,
            num_query=5,
            jitter=args.jitter,
            augment_rotations=args.augment_rotations,
        )
        l2, cos = nn_accuracy(fam, args.tasks)
        print(
            f"{ways:>3}w{shots}s {format_ci(*mean_ci95(l2), 1):>14} "
            f"{format_ci(*mean_ci95(cos), 1):>16} {omni:>15.1f}"
        )


if __name__ == "__main__":
    main()

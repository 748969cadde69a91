"""Shared pieces of N-way K-shot image families (glyphs, omniglot): class splits, episodes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from metaplat.tasks.base import SPLITS, Episode, Split


def split_counts(total: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Class counts of train/val/test for ``total`` classes in proportions ``fractions``.

    Val and test get ``round(total * fraction)`` each, at least one class when
    ``total >= 3``; train gets the rest.
    """
    f_train, f_val, f_test = (float(f) for f in fractions)
    s = f_train + f_val + f_test
    n_val = round(total * f_val / s)
    n_test = round(total * f_test / s)
    if total >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    return total - n_val - n_test, n_val, n_test


def split_classes(
    keys: Sequence[str], counts: tuple[int, int, int], seed: int
) -> dict[Split, tuple[str, ...]]:
    """Partition ``keys`` into train/val/test of sizes ``counts``, fixed by ``seed``.

    Keys are sorted first, so the partition depends only on the set of keys and the seed,
    never on file-system or dict order. Each split's keys are returned sorted.
    """
    if sum(counts) != len(keys):
        raise ValueError(f"split counts {counts} do not add up to {len(keys)} classes")
    order = sorted(keys)
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    bounds = np.cumsum((0, *counts))
    return {s: tuple(sorted(shuffled[bounds[i] : bounds[i + 1]])) for i, s in enumerate(SPLITS)}


def episode_from_classes(images: Sequence[np.ndarray], num_shots: int) -> Episode:
    """An episode from ``images[c]: [num_shots + num_query, H, W]`` of class ``c``.

    Returns ``support_x [N*K, 1, H, W]``, ``query_x [N*Q, 1, H, W]`` float32 and int64 labels
    in ``[0, N)``, class-major (the first K support images are class 0, and so on).
    """
    stack = np.stack(images).astype(np.float32, copy=False)  # [N, K+Q, H, W]
    n, m, h, w = stack.shape
    # numpy slicing + from_numpy: no torch op overhead on these small copies
    support = torch.from_numpy(np.ascontiguousarray(stack[:, :num_shots]).reshape(-1, 1, h, w))
    query = torch.from_numpy(np.ascontiguousarray(stack[:, num_shots:]).reshape(-1, 1, h, w))
    labels = torch.arange(n, dtype=torch.int64)
    return Episode(
        support,
        labels.repeat_interleave(num_shots),
        query,
        labels.repeat_interleave(m - num_shots),
    )


def check_episode_shape(num_ways: int, num_shots: int, num_query: int, image_size: int) -> None:
    """Validate the common N-way K-shot fields, naming the offending one."""
    for field, value, low in (
        ("num_ways", num_ways, 2),
        ("num_shots", num_shots, 1),
        ("num_query", num_query, 1),
        ("image_size", image_size, 4),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{field} must be an integer >= {low}, got {value!r}")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) <= 0:
        raise ValueError(
            f"split_fractions must be three positive numbers (train, val, test), got {fractions!r}"
        )
    return fr  # type: ignore[return-value]

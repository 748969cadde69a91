"""Seeds form a tree: experiment -> trial -> worker/iteration -> task.

Randomness is always an argument. These helpers derive child seeds deterministically from
a parent seed and a path of names or integers, so any process reproduces them.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *path: int | str) -> int:
    """A 63-bit child seed of ``seed`` along ``path`` (stable across processes and versions)."""
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF]
    for p in path:
        if isinstance(p, str):
            p = int.from_bytes(hashlib.sha256(p.encode()).digest()[:4], "little")
        words.append(int(p) & 0xFFFFFFFF)
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def rng(seed: int, *path: int | str) -> np.random.Generator:
    """A numpy generator for the node ``path`` below ``seed``."""
    return np.random.default_rng(derive_seed(seed, *path))

"""Stroke data: kanji as straight line segments, loaded once per process."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

import numpy as np

# kanjidraw's data lie on a 256-unit grid (used range about 9..246).
_GRID = 256.0


@functools.lru_cache(maxsize=1)
def kanji_strokes() -> Mapping[str, np.ndarray]:
    """Every kanji of ``kanjidraw``: ``char -> float32 [num_strokes, 4]`` segments (x1, y1, x2, y2).

    Coordinates are mapped from the 256-unit source grid to the canvas square [-1, 1]
    (y downwards). Cached: the JSON (1.7 MB) is parsed once per process. The mapping is
    read-only and the arrays are marked non-writeable, since the cache is shared.
    """
    text = resources.files("kanjidraw").joinpath("data.json").read_text(encoding="utf-8")
    raw: dict[str, dict[str, list[list[int]]]] = json.loads(text)
    out: dict[str, np.ndarray] = {}
    for by_char in raw.values():
        for char, segments in by_char.items():
            arr = np.asarray(segments, dtype=np.float32).reshape(-1, 4) / (_GRID / 2) - 1.0
            arr.setflags(write=False)
            out[char] = arr
    return MappingProxyType(dict(sorted(out.items())))

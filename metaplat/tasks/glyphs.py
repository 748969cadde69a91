"""Omniglot-like N-way K-shot classification of procedurally "handwritten" kanji; no download.

Classes are the 6,394 kanji of the ``kanjidraw`` stroke data (optionally filtered by stroke
count, optionally ×4 by 90° rotations as in MAML's Omniglot setup). Every instance is a
fresh rendering with its own random affine map, endpoint noise and stroke width (see
``environments.glyphs``), so instances of a class differ like different writers' and an
episode has no fixed pool of images to memorise.

Splits. The characters (not the task seeds alone) are partitioned once into
train/val/test by ``split_seed``; a meta-test class is never seen in meta-training, and
all four rotations of a character fall in the character's split.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from environments.glyphs import Jitter, jitter_segments, kanji_strokes, render
from environments.glyphs.render import jitter_widths
from metaplat.tasks._classification import (
    check_episode_shape,
    check_fractions,
    episode_from_classes,
    split_classes,
    split_counts,
)
from metaplat.tasks.base import SPLITS, Episode, Split, SupervisedFamily, TaskSpec

# Glyph templates fill 85% of the canvas, leaving room for jitter (Omniglot's resized
# characters also keep a margin).
_BASE_SCALE = 0.85


@functools.lru_cache(maxsize=16)
def _class_pool(
    min_strokes: int, max_strokes: int, split_seed: int, fractions: tuple[float, float, float]
) -> dict[Split, tuple[str, ...]]:
    strokes = kanji_strokes()
    chars = [c for c, s in strokes.items() if min_strokes <= len(s) <= max_strokes]
    return split_classes(chars, split_counts(len(chars), fractions), split_seed)


@dataclasses.dataclass(frozen=True, repr=False)
class GlyphFamily(SupervisedFamily):
    """N-way K-shot classification of jittered kanji renderings (Omniglot-like, offline)."""

    num_ways: int = 5
    """N: classes per episode."""
    num_shots: int = 1
    """K: support images per class."""
    num_query: int = 15
    """Query images per class."""
    image_size: int = 28
    """Side of the square images, pixels (Omniglot as resized by MAML: 28)."""
    augment_rotations: bool = False
    """Also use each character rotated by 90°, 180° and 270° as three more classes (MAML)."""
    jitter: float = 1.0
    """Strength of the per-instance variation: multiplies every term of the default Jitter."""
    stroke_width: float = 0.07
    """Mean stroke width as a fraction of the image side (about 2 px at 28 px)."""
    min_strokes: int = 1
    """Use only characters with at least this many strokes."""
    max_strokes: int = 30
    """Use only characters with at most this many strokes (kanji have 1 to 30)."""
    split_seed: int = 0
    """Seed of the fixed character partition into train/val/test."""
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    """Proportions of characters in train/val/test."""

    name = "glyphs"
    description = (
        "N-way K-shot jittered kanji renderings; an Omniglot-like benchmark with no download"
    )

    def __post_init__(self) -> None:
        check_episode_shape(self.num_ways, self.num_shots, self.num_query, self.image_size)
        object.__setattr__(self, "split_fractions", check_fractions(self.split_fractions))
        object.__setattr__(self, "augment_rotations", bool(self.augment_rotations))
        if not 0 <= self.jitter <= 5:
            raise ValueError(f"jitter must be in [0, 5], got {self.jitter!r}")
        if not 0 < self.stroke_width <= 0.5:
            raise ValueError(f"stroke_width must be in (0, 0.5], got {self.stroke_width!r}")
        if not 1 <= self.min_strokes <= self.max_strokes:
            raise ValueError(
                "min_strokes and max_strokes must satisfy 1 <= min_strokes <= max_strokes, "
                f"got {self.min_strokes}, {self.max_strokes}"
            )
        for split in SPLITS:
            if self.num_classes(split) < self.num_ways:
                raise ValueError(
                    f"num_ways={self.num_ways} exceeds the {self.num_classes(split)} classes of "
                    f"split {split!r} (stroke filter {self.min_strokes}..{self.max_strokes})"
                )

    def config(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {
            "split_fractions": list(self.split_fractions)
        }

    # -- classes -----------------------------------------------------------------------
    def characters(self, split: Split) -> tuple[str, ...]:
        """The characters of ``split`` (sorted); disjoint across splits."""
        pool = _class_pool(
            self.min_strokes, self.max_strokes, self.split_seed, self.split_fractions
        )
        return pool[split]

    def num_classes(self, split: Split) -> int:
        """Classes of ``split``: characters, times 4 with rotation augmentation."""
        return len(self.characters(split)) * (4 if self.augment_rotations else 1)

    # -- tasks -------------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        """``classes`` (characters) and ``quarter_turns`` (0..3) of label 0, 1, ..., N-1.

        Classes are drawn without replacement in random order, which is also the episode's
        label permutation.
        """
        chars = self.characters(split)
        turns = 4 if self.augment_rotations else 1
        picks = rng.choice(len(chars) * turns, size=self.num_ways, replace=False)
        return {
            "classes": [chars[int(i) // turns] for i in picks],
            "quarter_turns": [int(i) % turns for i in picks],
        }

    def build(self, spec: TaskSpec) -> Episode:
        """Render the episode: ``support_x [N*K, 1, H, W]``, ``query_x [N*Q, 1, H, W]`` in [0, 1].

        Labels are int64 in ``[0, N)``, class-major. Ink is 1, background 0.
        """
        strokes = kanji_strokes()
        classes, turns = spec.params["classes"], spec.params["quarter_turns"]
        if len(classes) != self.num_ways or len(turns) != self.num_ways:
            raise ValueError(f"spec has {len(classes)} classes, family num_ways is {self.num_ways}")
        jit = Jitter().scaled(self.jitter)
        rng = np.random.default_rng([spec.seed, 1])  # data stream, separate from params
        n = self.num_shots + self.num_query
        images = []
        for char, k in zip(classes, turns, strict=True):
            if char not in strokes:
                raise ValueError(f"unknown glyph class {char!r} in spec {spec.digest()}")
            seg = jitter_segments(
                strokes[char], rng, n, jit, base_scale=_BASE_SCALE, quarter_turns=int(k)
            )
            widths = jitter_widths(rng, n, self.stroke_width, jit)
            images.append(render(seg, self.image_size, widths))
        return episode_from_classes(images, self.num_shots)

    def describe(self) -> dict[str, Any]:
        per_split = {s: self.num_classes(s) for s in SPLITS}
        return super().describe() | {
            "classes": per_split,
            "characters": {s: len(self.characters(s)) for s in SPLITS},
            "splits": f"characters partitioned {list(self.split_fractions)} by split_seed "
            f"{self.split_seed}; task seeds disjoint per split (seed % 3)",
            "data": f"{self.num_ways}-way {self.num_shots}-shot, {self.num_query} query/class, "
            f"{self.image_size}x{self.image_size} grayscale, rendered per episode",
        }

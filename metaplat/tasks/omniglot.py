"""Real Omniglot (Lake et al. 2015) N-way K-shot episodes, for users who have it on disk.

metaplat never downloads Omniglot. Point ``root`` at the unpacked dataset::

    <root>/images_background/<Alphabet>/<character01>/*.png   (964 characters)
    <root>/images_evaluation/<Alphabet>/<character01>/*.png   (659 characters)

Either subset alone also works. Images are read as grayscale, inverted (ink = 1, like the
glyph family), and area-resized to ``image_size``.

Splits follow MAML (Finn et al. 2017): with the full 1,623 characters, 1,100 train,
100 val and 423 test characters, drawn by a fixed permutation (``split_seed``) of the sorted
character paths; with a partial copy, the same proportions. Rotations by 90°, 180° and 270°
are extra classes within each character's split.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from metaplat.tasks._classification import (
    check_episode_shape,
    episode_from_classes,
    split_classes,
    split_counts,
)
from metaplat.tasks._png import read_gray
from metaplat.tasks.base import SPLITS, Episode, Split, SupervisedFamily, TaskSpec

SUBSETS = ("images_background", "images_evaluation")
LAYOUT = "<root>/images_background/<Alphabet>/<character>/*.png (and/or images_evaluation/...)"
_FULL = 1623
_MAML_COUNTS = (1100, 100, 423)  # MAML: 1,200 meta-training characters, 100 of them for val


@dataclasses.dataclass(frozen=True)
class _Index:
    """Character directories (relative to root, sorted) and their image file names."""

    characters: tuple[str, ...]
    files: dict[str, tuple[str, ...]]


@functools.lru_cache(maxsize=4)
def _index(root: str) -> _Index:
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(
            f"Omniglot root {str(base)!r} does not exist or is not a directory; expected {LAYOUT}. "
            "metaplat never downloads Omniglot: unpack it there yourself."
        )
    files: dict[str, tuple[str, ...]] = {}
    for subset in SUBSETS:
        if not (base / subset).is_dir():
            continue
        for alphabet in sorted(p for p in (base / subset).iterdir() if p.is_dir()):
            for char in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                pngs = tuple(sorted(f for f in os.listdir(char) if f.lower().endswith(".png")))
                if pngs:
                    files[f"{subset}/{alphabet.name}/{char.name}"] = pngs
    if not files:
        raise FileNotFoundError(f"no Omniglot images under {str(base)!r}; expected {LAYOUT}")
    return _Index(tuple(sorted(files)), files)


@functools.cache
def _images(root: str, character: str, size: int) -> np.ndarray:
    """All images of one character: float32 ``[n, size, size]``, ink 1, read-only, cached."""
    folder = Path(root).expanduser() / character
    ink = np.stack([1.0 - read_gray(folder / f) / 255.0 for f in _index(root).files[character]])
    x = torch.from_numpy(ink.astype(np.float32)).unsqueeze(1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    out = x.squeeze(1).numpy()
    out.setflags(write=False)
    return out


@dataclasses.dataclass(frozen=True, repr=False)
class OmniglotFamily(SupervisedFamily):
    """N-way K-shot Omniglot episodes read from ``root`` (never downloaded)."""

    root: str
    """Directory holding images_background/ and/or images_evaluation/."""
    num_ways: int = 5
    """N: classes per episode."""
    num_shots: int = 1
    """K: support images per class."""
    num_query: int = 15
    """Query images per class (Omniglot has 20 drawers per character: K + Q <= 20)."""
    image_size: int = 28
    """Side of the resized square images, pixels (MAML: 28)."""
    augment_rotations: bool = False
    """Also use each character rotated by 90°, 180° and 270° as three more classes (MAML)."""
    split_seed: int = 0
    """Seed of the fixed character partition into train/val/test."""

    name = "omniglot"
    description = "Omniglot N-way K-shot from a local copy (MAML splits); never downloaded"

    def __post_init__(self) -> None:
        check_episode_shape(self.num_ways, self.num_shots, self.num_query, self.image_size)
        object.__setattr__(self, "root", str(self.root))
        object.__setattr__(self, "augment_rotations", bool(self.augment_rotations))
        index = _index(self.root)
        fewest = min(len(f) for f in index.files.values())
        if self.num_shots + self.num_query > fewest:
            raise ValueError(
                f"num_shots + num_query = {self.num_shots + self.num_query} exceeds the {fewest} "
                f"images of the smallest character under {self.root!r}"
            )
        # num_ways is checked per split when sampling: a partial copy may have a tiny val split
        # that is never used.

    def config(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def characters(self, split: Split) -> tuple[str, ...]:
        """Character paths (``subset/Alphabet/character``) of ``split``; disjoint across splits."""
        chars = _index(self.root).characters
        counts = _MAML_COUNTS if len(chars) == _FULL else split_counts(len(chars), _MAML_COUNTS)
        return split_classes(chars, counts, self.split_seed)[split]

    def num_classes(self, split: Split) -> int:
        return len(self.characters(split)) * (4 if self.augment_rotations else 1)

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        """Per label: ``classes`` (character paths), ``quarter_turns``, ``images`` (file ids)."""
        chars = self.characters(split)
        files = _index(self.root).files
        if self.num_classes(split) < self.num_ways:
            raise ValueError(
                f"num_ways={self.num_ways} exceeds the {self.num_classes(split)} classes of split "
                f"{split!r} ({len(files)} characters under {self.root!r})"
            )
        turns = 4 if self.augment_rotations else 1
        picks = rng.choice(len(chars) * turns, size=self.num_ways, replace=False)
        classes = [chars[int(i) // turns] for i in picks]
        m = self.num_shots + self.num_query
        return {
            "classes": classes,
            "quarter_turns": [int(i) % turns for i in picks],
            # distinct drawers per class, in random order: the first K are the support
            "images": [
                [int(i) for i in rng.choice(len(files[c]), m, replace=False)] for c in classes
            ],
        }

    def build(self, spec: TaskSpec) -> Episode:
        """``support_x [N*K, 1, H, W]``, ``query_x [N*Q, 1, H, W]`` in [0, 1] (ink 1).

        Labels are int64 in ``[0, N)``, class-major.
        """
        per_class = []
        for char, k, idx in zip(
            spec.params["classes"], spec.params["quarter_turns"], spec.params["images"], strict=True
        ):
            imgs = _images(self.root, char, self.image_size)[np.asarray(idx)]
            per_class.append(np.rot90(imgs, k=int(k), axes=(1, 2)))
        return episode_from_classes(per_class, self.num_shots)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "classes": {s: self.num_classes(s) for s in SPLITS},
            "characters": {s: len(self.characters(s)) for s in SPLITS},
            "splits": "MAML: 1100/100/423 characters (proportional on a partial copy), "
            f"split_seed {self.split_seed}; task seeds disjoint per split (seed % 3)",
        }

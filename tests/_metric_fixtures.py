"""A tiny synthetic N-way K-shot family for the metric-method tests (Gaussian clusters).

Each task draws ``num_ways`` class centres; only the first ``informative`` coordinates of a
centre are task-specific, every other coordinate is pure noise of scale ``distractor`` (so an
embedding that learns to ignore them beats the raw input space). Examples can be shaped like
images (``shape=(1, 16, 16)``) or vectors (``shape=(32,)``). Support is shuffled, so labels
are not in class order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from metaplat.tasks.base import Episode, Split, SupervisedFamily, TaskSpec
from metaplat.tasks.registry import FAMILIES

NAME = "metric_blobs_test"


@dataclasses.dataclass(frozen=True, repr=False)
class BlobFamily(SupervisedFamily):
    num_ways: int = 5
    num_shots: int = 1
    num_query: int = 3
    shape: tuple[int, ...] = (16,)
    informative: int = 4
    spread: float = 2.0
    noise: float = 0.5
    distractor: float = 2.0

    name = NAME

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    def config(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        return {}

    def build(self, spec: TaskSpec) -> Episode:
        rng = np.random.default_rng([spec.seed, 7])
        d = math.prod(self.shape)
        centres = np.zeros((self.num_ways, d))
        centres[:, : self.informative] = self.spread * rng.standard_normal(
            (self.num_ways, self.informative)
        )

        def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = np.repeat(np.arange(self.num_ways), per_class)
            rng.shuffle(y)
            x = centres[y] + self.noise * rng.standard_normal((len(y), d))
            x[:, self.informative :] = self.distractor * rng.standard_normal(
                (len(y), d - self.informative)
            )
            return (
                torch.as_tensor(x, dtype=torch.float32).reshape(len(y), *self.shape),
                torch.as_tensor(y, dtype=torch.int64),
            )

        sx, sy = draw(self.num_shots)
        qx, qy = draw(self.num_query)
        return Episode(sx, sy, qx, qy)


if NAME not in FAMILIES:
    FAMILIES.register(NAME, BlobFamily)

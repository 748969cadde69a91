"""Task distributions: specs are data, tasks are built late (see :mod:`metaplat.tasks.base`)."""

from metaplat.tasks.base import (
    SPLITS,
    Episode,
    RLFamily,
    Split,
    SupervisedFamily,
    TaskFamily,
    TaskSpec,
)
from metaplat.tasks.registry import FAMILIES, build, family_names, family_of, make_family, sample

__all__ = [
    "FAMILIES",
    "SPLITS",
    "Episode",
    "RLFamily",
    "Split",
    "SupervisedFamily",
    "TaskFamily",
    "TaskSpec",
    "build",
    "family_names",
    "family_of",
    "make_family",
    "sample",
]

"""Small child datasets: registry tasks when available, else procedural data owned here.

Children must train in well under a second on one CPU core, so these are tiny. Sources:

- ``spirals``: ``num_classes`` interleaved noisy spiral arms in 2-d (needs a nonlinear net).
- ``blobs``: Gaussian clusters in ``dim`` dimensions.
- ``shapes``: ``image_size``² grey images of simple strokes (bars, diagonals, box, cross,
  ring), jittered and noisy; the image task for conv children when ``glyphs`` is absent.
- ``registry``: one task of a registered supervised family (support = train, query = val);
  e.g. ``glyphs`` (N-way images) or ``sinusoid`` (regression). If the family's module is
  not installed yet, ``fallback`` names the procedural source used instead (logged).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from metaplat.seeding import derive_seed

log = logging.getLogger(__name__)

SOURCES = ("spirals", "blobs", "shapes", "registry")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which child task to train on."""

    source: str = "spirals"
    """One of ``SOURCES``."""
    num_train: int = 256
    """Training examples (procedural sources)."""
    num_val: int = 256
    """Validation examples (procedural sources)."""
    num_classes: int = 3
    """Classes (procedural classification sources)."""
    noise: float = 0.2
    """Noise level of procedural sources."""
    dim: int = 8
    """Input dimension of ``blobs``."""
    image_size: int = 28
    """Side of ``shapes`` images."""
    family: str = ""
    """Registered family for ``source: registry``."""
    family_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The family's config for ``source: registry``."""
    fallback: str = "shapes"
    """Procedural source used when the registry family cannot be imported."""
    seed: int = 0
    """Data seed (the same for every child, so rewards are comparable)."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} not allowed; allowed: {', '.join(SOURCES)}")
        if self.fallback not in SOURCES[:3]:
            raise ValueError(f"fallback {self.fallback!r} not allowed; allowed: {SOURCES[:3]}")
        if self.source == "registry" and not self.family:
            raise ValueError("source 'registry' needs 'family' (a registered family name)")
        for name in ("num_train", "num_val", "dim", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> DataConfig:
        d = dict(d or {})
        allowed = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - allowed)
        if bad:
            raise ValueError(
                f"unknown data field {bad[0]!r}; allowed: {', '.join(sorted(allowed))}"
            )
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class ChildData:
    """Train/val tensors; ``num_classes`` is ``None`` for regression (float targets)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int | None
    name: str

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def out_dim(self) -> int:
        return self.num_classes if self.num_classes is not None else int(self.train_y[0].numel())


def spirals(
    rng: np.random.Generator, n: int, k: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(k, size=n)
    r = rng.uniform(0.05, 1.0, size=n)
    theta = y * (2 * np.pi / k) + 4.0 * r + rng.normal(0, noise, size=n)
    x = np.stack([r * np.sin(theta), r * np.cos(theta)], 1)
    return x.astype(np.float32), y


def blobs(rng: np.random.Generator, n: int, k: int, dim: int, noise: float, centers: np.ndarray):
    y = rng.integers(k, size=n)
    x = centers[y] + rng.normal(0, 1.0 + noise, size=(n, dim))
    return x.astype(np.float32), y


def shapes(rng: np.random.Generator, n: int, k: int, size: int, noise: float):
    """Strokes drawn on a ``size``² canvas; class ``c % 7`` picks the shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    y = rng.integers(k, size=n)
    imgs = np.empty((n, 1, size, size), np.float32)
    for i, c in enumerate(y):
        cx, cy = rng.uniform(0.35, 0.65, size=2)
        s = rng.uniform(0.2, 0.3)
        w = 0.06
        dx, dy = xx - cx, yy - cy
        box = (np.abs(dx) < s) & (np.abs(dy) < s)
        shape = [
            (np.abs(dy) < w) & (np.abs(dx) < s),  # horizontal bar
            (np.abs(dx) < w) & (np.abs(dy) < s),  # vertical bar
            (np.abs(dx - dy) < w) & box,  # diagonal
            (np.abs(dx + dy) < w) & box,  # anti-diagonal
            box & ~((np.abs(dx) < s - w) & (np.abs(dy) < s - w)),  # square outline
            ((np.abs(dx) < w) | (np.abs(dy) < w)) & box,  # cross
            np.abs(np.hypot(dx, dy) - s) < w,  # ring
        ][c % 7]
        imgs[i, 0] = shape + rng.normal(0, noise, size=(size, size))
    return imgs, y


def make_data(config: DataConfig) -> ChildData:
    """Build the child dataset ``config`` describes (deterministic in ``config.seed``)."""
    src = config.source
    if src == "registry":
        try:
            from metaplat.tasks.registry import make_family

            fam = make_family(config.family, dict(config.family_config))
            spec = fam.sample(np.random.default_rng(config.seed), "train", 1)[0]
            ep = fam.build(spec)
        except (ImportError, AttributeError) as e:  # family module not installed on this branch
            log.warning(
                "family %r unavailable (%s); using %r data", config.family, e, config.fallback
            )
            return make_data(dataclasses.replace(config, source=config.fallback))
        is_cls = not torch.is_floating_point(ep.support_y)
        ncls = int(max(ep.support_y.max(), ep.query_y.max())) + 1 if is_cls else None
        return ChildData(ep.support_x, ep.support_y, ep.query_x, ep.query_y, ncls, config.family)
    rng = np.random.default_rng(derive_seed(config.seed, "child_data", src))
    n = config.num_train + config.num_val
    if src == "spirals":
        x, y = spirals(rng, n, config.num_classes, config.noise)
    elif src == "blobs":
        centers = rng.normal(0, 1.5, size=(config.num_classes, config.dim))
        x, y = blobs(rng, n, config.num_classes, config.dim, config.noise, centers)
    else:
        x, y = shapes(rng, n, config.num_classes, config.image_size, config.noise)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.int64)
    k = config.num_train
    return ChildData(xt[:k], yt[:k], xt[k:], yt[k:], config.num_classes, src)

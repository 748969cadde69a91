"""Jitter and rasterise line-segment glyphs with numpy, many instances at once."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Jitter:
    """How much one writer's instance of a glyph differs from the template.

    Affine terms are drawn uniformly in ``[-value, value]`` per instance; endpoint noise is
    Gaussian per stroke endpoint. Lengths are canvas units (the canvas is [-1, 1]²).
    """

    rotation: float = 0.2
    """Largest rotation, radians (0.2 rad is about 11 degrees)."""
    scale: float = 0.12
    """Largest |log| of the overall scale factor."""
    aspect: float = 0.08
    """Largest |log| of the x/y scale ratio."""
    shear: float = 0.2
    """Largest horizontal shear coefficient."""
    translation: float = 0.1
    """Largest shift along each axis, canvas units."""
    endpoint: float = 0.035
    """Standard deviation of the independent noise on each stroke endpoint, canvas units."""
    width: float = 0.25
    """Largest |log| of the per-instance stroke-width factor."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and v >= 0):
                raise ValueError(f"Jitter.{f.name} must be a number >= 0, got {v!r}")

    def scaled(self, k: float) -> Jitter:
        """Every term multiplied by ``k`` (``k = 0``: exact copies of the template)."""
        if not k >= 0:
            raise ValueError(f"jitter strength must be >= 0, got {k!r}")
        return Jitter(*(getattr(self, f.name) * k for f in dataclasses.fields(self)))


def jitter_segments(
    segments: np.ndarray,
    rng: np.random.Generator,
    n: int,
    jitter: Jitter,
    *,
    base_scale: float = 1.0,
    quarter_turns: int = 0,
) -> np.ndarray:
    """``n`` jittered instances of one glyph: ``segments [S, 4] -> float32 [n, S, 4]``.

    The template is first rotated by ``quarter_turns`` × 90° (exact: a different *class* in
    the Omniglot augmentation) and scaled by ``base_scale`` about the canvas centre; then each
    instance gets its own endpoint noise and random affine map.
    """
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 2)  # [S, endpoint, xy]
    k = quarter_turns % 4
    for _ in range(k):  # 90° clockwise on screen (y down): (x, y) -> (-y, x)
        seg = np.stack([-seg[..., 1], seg[..., 0]], axis=-1)
    seg = seg * base_scale

    pts = seg[None] + rng.normal(0.0, jitter.endpoint, size=(n, *seg.shape))
    u = lambda m: rng.uniform(-m, m, size=n)  # noqa: E731
    angle, log_s, log_a, shear = (
        u(jitter.rotation),
        u(jitter.scale),
        u(jitter.aspect),
        u(jitter.shear),
    )
    shift = rng.uniform(-jitter.translation, jitter.translation, size=(n, 2))
    sx, sy = np.exp(log_s + log_a / 2), np.exp(log_s - log_a / 2)
    c, s = np.cos(angle), np.sin(angle)
    # A = R(angle) @ Shear(shear) @ diag(sx, sy), one per instance: [n, 2, 2]
    a = np.empty((n, 2, 2))
    a[:, 0, 0] = c * sx
    a[:, 0, 1] = (c * shear - s) * sy
    a[:, 1, 0] = s * sx
    a[:, 1, 1] = (s * shear + c) * sy
    out = np.einsum("nij,nsej->nsei", a, pts) + shift[:, None, None, :]
    return out.reshape(n, -1, 4).astype(np.float32)


def jitter_widths(rng: np.random.Generator, n: int, width: float, jitter: Jitter) -> np.ndarray:
    """Per-instance stroke widths ``float32 [n]`` around ``width`` (canvas fraction)."""
    return (width * np.exp(rng.uniform(-jitter.width, jitter.width, size=n))).astype(np.float32)


def render(segments: np.ndarray, size: int = 28, width: float | np.ndarray = 0.07) -> np.ndarray:
    """Rasterise glyphs: ``segments [n, S, 4]`` (canvas units) -> ``float32 [n, size, size]``.

    Ink is 1 on a 0 background. A pixel's value is the ink coverage of a stroke of
    ``width`` (a fraction of the image side; scalar or ``[n]``), approximated by a one-pixel
    linear ramp of the distance from the pixel centre to the nearest segment, so edges are
    anti-aliased. All pixels, segments and instances are computed at once.
    """
    seg = np.asarray(segments, dtype=np.float32)
    if seg.ndim != 3 or seg.shape[-1] != 4:
        raise ValueError(f"segments must have shape [n, S, 4], got {seg.shape}")
    n = seg.shape[0]
    p = (seg + 1.0) * (size / 2.0)  # canvas [-1, 1] -> pixel coordinates [0, size]
    ax, ay, bx, by = (p[..., i, None, None] for i in range(4))  # each [n, S, 1, 1]
    ux, uy = bx - ax, by - ay
    inv_len2 = 1.0 / np.maximum(ux * ux + uy * uy, 1e-12)
    centres = np.arange(size, dtype=np.float32) + 0.5
    dx = centres[None, None, None, :] - ax  # [n, S, 1, W]
    dy = centres[None, None, :, None] - ay  # [n, S, H, 1]
    # Projection of the pixel onto the segment, clamped to its ends; the separable terms
    # keep the first products at [n, S, H] or [n, S, W] size, and the full-size [n, S, H, W]
    # work runs in place (half the time of the allocating version).
    t = dx * (ux * inv_len2) + dy * (uy * inv_len2)  # [n, S, H, W]
    np.clip(t, 0.0, 1.0, out=t)
    ex = t * ux
    np.subtract(dx, ex, out=ex)
    ex *= ex  # squared x-distance to the nearest point of the segment
    t *= uy
    np.subtract(dy, t, out=t)
    t *= t
    ex += t
    d = np.sqrt(ex.min(axis=1))  # nearest segment: [n, H, W]
    half = np.broadcast_to(np.asarray(width, dtype=np.float32) * (size / 2.0), (n,))
    return np.clip(half[:, None, None] + 0.5 - d, 0.0, 1.0).astype(np.float32, copy=False)

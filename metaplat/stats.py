"""Summary statistics shared by evaluations and benchmark tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% normal-approximation confidence interval."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(1.96 * x.std(ddof=1) / math.sqrt(x.size))


def format_ci(mean: float, half: float, digits: int = 2) -> str:
    """``"78.31 ± 0.42"``."""
    return f"{mean:.{digits}f} ± {half:.{digits}f}"

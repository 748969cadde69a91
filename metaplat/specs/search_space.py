"""Search-space domains as plain data: ``{loguniform: [0.001, 0.1]}`` -> :class:`Domain`.

The spec says *what* to search; ``metaplat.tuning.space`` turns a :class:`Domain` into the
matching ``ray.tune`` sampler (only the tuning layer imports Tune). Each domain also knows a
few representative values (both ends of a range, every grid point), which validation builds
the method ``Config`` with, so a bad range fails before any trial starts.

==============  ===================  ===========================================
YAML            arguments            Tune
==============  ===================  ===========================================
grid            [v1, v2, ...]        ``tune.grid_search`` (every value, x num_samples)
choice          [v1, v2, ...]        ``tune.choice``
uniform         [low, high]          ``tune.uniform``
quniform        [low, high, q]       ``tune.quniform``
loguniform      [low, high]          ``tune.loguniform`` (low > 0)
qloguniform     [low, high, q]       ``tune.qloguniform``
randint         [low, high]          ``tune.randint`` (high exclusive)
qrandint        [low, high, q]       ``tune.qrandint`` (high inclusive)
lograndint      [low, high]          ``tune.lograndint`` (high exclusive)
randn           [mean, sd]           ``tune.randn``
==============  ===================  ===========================================
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from metaplat.specs.typecheck import SpecError, unknown_key_message

#: name -> (argument names, whether the values are integers); None = a list of values.
DOMAINS: dict[str, tuple[tuple[str, ...] | None, bool]] = {
    "grid": (None, False),
    "choice": (None, False),
    "uniform": (("low", "high"), False),
    "quniform": (("low", "high", "q"), False),
    "loguniform": (("low", "high"), False),
    "qloguniform": (("low", "high", "q"), False),
    "randint": (("low", "high"), True),
    "qrandint": (("low", "high", "q"), True),
    "lograndint": (("low", "high"), True),
    "randn": (("mean", "sd"), False),
}


@dataclasses.dataclass(frozen=True)
class Domain:
    """One searched value: a domain name from :data:`DOMAINS` and its arguments."""

    kind: str
    """Domain name: grid, choice, uniform, quniform, loguniform, qloguniform, randint, ..."""
    args: tuple[Any, ...]
    """The values (grid, choice) or the numeric arguments in the order of :data:`DOMAINS`."""

    def __post_init__(self) -> None:
        if self.kind not in DOMAINS:
            raise ValueError(unknown_key_message("domain", self.kind, list(DOMAINS)))
        names, integer = DOMAINS[self.kind]
        if names is None:
            if len(self.args) == 0:
                raise ValueError(f"{self.kind} needs a non-empty list of values")
            return
        if len(self.args) != len(names):
            raise ValueError(f"{self.kind} takes [{', '.join(names)}], got {list(self.args)}")
        for n, a in zip(names, self.args, strict=True):
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
                raise ValueError(f"{self.kind} {n} must be a finite number, got {a!r}")
            if integer and n != "q" and not float(a).is_integer():
                raise ValueError(f"{self.kind} {n} must be an integer, got {a!r}")
        if self.kind == "randn":
            if self.args[1] <= 0:
                raise ValueError(f"randn sd must be > 0, got {self.args[1]}")
            return
        low, high = self.args[0], self.args[1]
        if not low < high:
            raise ValueError(f"{self.kind} needs low < high, got [{low}, {high}]")
        if self.kind.startswith(("log", "qlog")) and low <= 0:
            raise ValueError(f"{self.kind} needs low > 0, got {low}")
        if len(self.args) == 3 and self.args[2] <= 0:
            raise ValueError(f"{self.kind} q must be > 0, got {self.args[2]}")

    @classmethod
    def from_yaml(cls, data: Any, path: str) -> Domain:
        """Parse ``{kind: args}``; a bare list is shorthand for ``{grid: list}``."""
        if isinstance(data, list):
            data = {"grid": data}
        if not isinstance(data, dict) or len(data) != 1:
            raise SpecError(
                f"{path}: got {data!r}, expected one domain like {{loguniform: [0.001, 0.1]}} "
                f"or {{grid: [1, 5]}}; domains: {', '.join(DOMAINS)}"
            )
        ((kind, args),) = data.items()
        if kind not in DOMAINS:
            raise SpecError(unknown_key_message(path, str(kind), list(DOMAINS)))
        if not isinstance(args, (list, tuple)):
            raise SpecError(f"{path}.{kind}: got {args!r}, expected a list")
        try:
            return cls(str(kind), tuple(args))
        except ValueError as e:
            raise SpecError(f"{path}.{kind}: {e}") from None

    def to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.args)}

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    @property
    def integer(self) -> bool:
        """Whether every value this domain yields is an ``int``."""
        if DOMAINS[self.kind][0] is None:
            return all(isinstance(v, int) and not isinstance(v, bool) for v in self.args)
        return DOMAINS[self.kind][1]

    def representatives(self) -> list[Any]:
        """Values to validate with: every listed value, or the extremes of a range."""
        if DOMAINS[self.kind][0] is None:
            return list(self.args)
        if self.kind == "randn":
            mean, sd = self.args
            return [float(mean - 3 * sd), float(mean + 3 * sd)]
        low, high = self.args[0], self.args[1]
        if self.kind in ("randint", "lograndint"):  # Tune's high is exclusive here
            return [int(low), int(high) - 1]
        if self.integer:
            return [int(low), int(high)]
        return [float(low), float(high)]

    def size(self) -> int | None:
        """Number of grid points (``None`` for sampled domains)."""
        return len(self.args) if self.is_grid else None

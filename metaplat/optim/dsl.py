"""The update-rule language of Neural Optimizer Search (Bello et al. 2017), as data.

A rule is a chain of *units*. Unit ``k`` computes ``b(u1(op1), u2(op2))`` where ``op1``,
``op2`` are operands (gradient statistics, constants, or the output ``u0..u{k-1}`` of an
earlier unit), ``u1``, ``u2`` unary functions and ``b`` a binary function. The last unit's
output is the step direction: ``w <- w - lr * out`` (``Δw = -lr · b(u1(op1), u2(op2))``).
One unit is Bello's basic grammar; chaining units expresses rules such as PowerSign
``exp(sign(g)·sign(m̂))·g`` (two units) and AddSign ``(1 + sign(g)·sign(m̂))·g`` (three).

Operands (per-coordinate): ``g``, ``g2`` (g²), ``g3`` (g³), ``m`` (EMA of g, β=0.9),
``v`` (EMA of g², β=0.999), ``y`` (EMA of g³, β=0.999), ``sign_g``, ``sign_m``, ``one``,
``two``, ``noise`` (Gaussian, standard deviation 0.01), ``wd1e-4 .. wd1e-1`` (c·w, weight
decay), ``adam`` (bias-corrected m̂/(√v̂+1e-8), i.e. Adam's step) and ``rmsprop``
(g/(√v+1e-8)). The EMAs start at zero and are *not* bias corrected (only ``adam`` is), so
``m`` after ``t`` steps equals ``(1-β)·buf`` of torch's SGD momentum buffer with μ=β: SGD
with momentum at rate ``lr`` is the rule ``m`` at rate ``lr / (1-β)`` (see tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

OPERANDS: tuple[str, ...] = (
    "g", "g2", "g3", "m", "v", "y", "sign_g", "sign_m", "one", "two", "noise",
    "wd1e-4", "wd1e-3", "wd1e-2", "wd1e-1", "adam", "rmsprop",
)  # fmt: skip
UNARY: tuple[str, ...] = (
    "identity", "neg", "exp", "log_abs", "sqrt_abs", "clip1e-5", "clip1e-4", "clip1e-3",
    "drop0.1", "drop0.3", "drop0.5", "sign",
)  # fmt: skip
BINARY: tuple[str, ...] = ("add", "sub", "mul", "div", "pow", "keep_left")

_OPERAND_TEXT = {
    "g": "g", "g2": "g²", "g3": "g³", "m": "m̂", "v": "v̂", "y": "ŷ₃", "sign_g": "sign(g)",
    "sign_m": "sign(m̂)", "one": "1", "two": "2", "noise": "ε", "wd1e-4": "1e-4·w",
    "wd1e-3": "1e-3·w", "wd1e-2": "1e-2·w", "wd1e-1": "1e-1·w",
    "adam": "adam", "rmsprop": "rmsprop",
}  # fmt: skip


def unit_operands(k: int) -> tuple[str, ...]:
    """Operands available to unit ``k``: the base operands and earlier units' outputs."""
    return OPERANDS + tuple(f"u{j}" for j in range(k))


@dataclasses.dataclass(frozen=True)
class Unit:
    """``b(u1(op1), u2(op2))``."""

    op1: str
    op2: str
    u1: str = "identity"
    u2: str = "identity"
    b: str = "keep_left"


@dataclasses.dataclass(frozen=True)
class Program:
    """An update rule: units evaluated in order; the last one's output is the direction."""

    units: tuple[Unit, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", tuple(self.units))
        if not self.units:
            raise ValueError("Program.units must hold at least one unit")
        for k, u in enumerate(self.units):
            allowed = unit_operands(k)
            for field, value, vocab in (
                ("op1", u.op1, allowed), ("op2", u.op2, allowed),
                ("u1", u.u1, UNARY), ("u2", u.u2, UNARY), ("b", u.b, BINARY),
            ):  # fmt: skip
                if value not in vocab:
                    raise ValueError(
                        f"unit {k} field {field}={value!r} not allowed; allowed: {', '.join(vocab)}"
                    )

    @staticmethod
    def single(op1: str, op2: str = "one", u1: str = "identity", u2: str = "identity",
               b: str = "keep_left") -> Program:  # fmt: skip
        return Program((Unit(op1, op2, u1, u2, b),))

    def to_dict(self) -> dict[str, Any]:
        return {"units": [dataclasses.asdict(u) for u in self.units]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Program:
        return cls(tuple(Unit(**u) for u in d["units"]))

    def used_units(self) -> list[int]:
        """Indices of units the output depends on (the last unit and its ancestors)."""
        need, stack = set(), [len(self.units) - 1]
        while stack:
            k = stack.pop()
            if k in need:
                continue
            need.add(k)
            u = self.units[k]
            ops = [u.op1] + ([] if u.b == "keep_left" else [u.op2])
            stack += [int(o[1:]) for o in ops if o.startswith("u") and o[1:].isdigit()]
        return sorted(need)

    def operands(self) -> set[str]:
        """Base operands the output depends on (decides which statistics are tracked)."""
        out = set()
        for k in self.used_units():
            u = self.units[k]
            for o in [u.op1] + ([] if u.b == "keep_left" else [u.op2]):
                if o in OPERANDS:
                    out.add(o)
        return out

    def formula(self) -> str:
        """The rule as a formula for the direction ``d`` (``Δw = -lr·d``)."""
        texts: list[str] = []
        for u in self.units:
            a = _unary_text(u.u1, _operand_text(u.op1, texts))
            if u.b == "keep_left":
                texts.append(a)
                continue
            c = _unary_text(u.u2, _operand_text(u.op2, texts))
            texts.append(_binary_text(u.b, a, c))
        out = texts[-1]
        return (
            out[1:-1] if out.startswith("(") and out.endswith(")") and _balanced(out[1:-1]) else out
        )


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def _operand_text(op: str, texts: Sequence[str]) -> str:
    return texts[int(op[1:])] if op.startswith("u") and op[1:].isdigit() else _OPERAND_TEXT[op]


def _unary_text(name: str, x: str) -> str:
    if name == "identity":
        return x
    if name == "neg":
        return f"-{x}"
    if name in ("exp", "sign"):
        return f"{name}({x})"
    if name == "log_abs":
        return f"log|{x}|"
    if name == "sqrt_abs":
        return f"√|{x}|"
    if name.startswith("clip"):
        return f"clip({x}, {name[4:]})"
    return f"drop({x}, {name[4:]})"


def _binary_text(name: str, a: str, b: str) -> str:
    return {
        "add": f"({a} + {b})",
        "sub": f"({a} - {b})",
        "mul": f"{a}·{b}",
        "div": f"{a}/({b} + 1e-8)",
        "pow": f"{a}^{b}",
    }[name]


# Named rules, for tests, baselines and the report of what the search found.
SGD = Program.single("g")
MOMENTUM = Program.single("m")  # at lr / (1 - 0.9) equals torch SGD(momentum=0.9) at lr
ADAM = Program.single("adam")
RMSPROP = Program.single("rmsprop")  # equals torch RMSprop(alpha=0.999, eps=1e-8)
POWERSIGN = Program((Unit("sign_g", "sign_m", b="mul"), Unit("u0", "g", u1="exp", b="mul")))
ADDSIGN = Program(
    (
        Unit("sign_g", "sign_m", b="mul"),
        Unit("one", "u0", b="add"),
        Unit("u1", "g", b="mul"),
    )
)
NAMED: dict[str, Program] = {
    "sgd": SGD, "momentum": MOMENTUM, "adam": ADAM, "rmsprop": RMSPROP,
    "powersign": POWERSIGN, "addsign": ADDSIGN,
}  # fmt: skip

"""The Neural Optimizer Search space: ``num_units`` units of 5 tokens (op1, op2, u1, u2, b).

Unit ``k`` may also use the outputs ``u0..u{k-1}`` of earlier units as operands, so its
operand decisions have ``len(OPERANDS) + k`` choices. Decoding gives
``Program.to_dict()``; :func:`program_of` turns it back into a :class:`Program`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from metaplat.optim.dsl import BINARY, OPERANDS, UNARY, Program, Unit, unit_operands
from metaplat.search.space import Decision, choices_of


@dataclasses.dataclass(frozen=True)
class NOSSpace:
    """Update rules of ``num_units`` chained units over a (sub)set of the grammar."""

    num_units: int = 2
    """Units per rule (1 = Bello's basic grammar; 2 reaches PowerSign, 3 AddSign)."""
    operands: tuple[str, ...] = OPERANDS
    """Base operands offered (a subset of ``dsl.OPERANDS``)."""
    unary: tuple[str, ...] = UNARY
    """Unary functions offered."""
    binary: tuple[str, ...] = BINARY
    """Binary functions offered."""

    name = "nos"

    def __post_init__(self) -> None:
        if self.num_units < 1:
            raise ValueError(f"num_units must be >= 1, got {self.num_units}")
        for field, allowed in (("operands", OPERANDS), ("unary", UNARY), ("binary", BINARY)):
            values = tuple(getattr(self, field))
            bad = [v for v in values if v not in allowed]
            if not values or bad:
                raise ValueError(
                    f"{field} must be a non-empty subset of {list(allowed)}, got {list(values)}"
                )
            object.__setattr__(self, field, values)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        out: list[Decision] = []
        for k in range(self.num_units):
            ops = self.operands + unit_operands(k)[len(OPERANDS) :]
            out += [
                Decision(f"unit{k}/op1", ops),
                Decision(f"unit{k}/op2", ops),
                Decision(f"unit{k}/u1", self.unary),
                Decision(f"unit{k}/u2", self.unary),
                Decision(f"unit{k}/b", self.binary),
            ]
        return tuple(out)

    def decode(self, tokens: Sequence[int]) -> dict[str, Any]:
        c = choices_of(self, tokens)
        units = [
            Unit(*(c[f"unit{k}/{f}"] for f in ("op1", "op2", "u1", "u2", "b")))
            for k in range(self.num_units)
        ]
        return {"kind": "nos", **Program(tuple(units)).to_dict()}

    def describe(self, program: dict[str, Any]) -> str:
        return program_of(program).formula()


def program_of(program: dict[str, Any]) -> Program:
    """The :class:`Program` of a decoded NOS program dict."""
    return Program.from_dict({"units": program["units"]})

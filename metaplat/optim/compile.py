"""Compile a NOS :class:`~metaplat.optim.dsl.Program` into a functional optimizer.

``compile_program(program, lr) -> FunctionalOptimizer(init, update)`` over
``dict[str, Tensor]`` params, optax-style: ``update(grads, state, params) -> (updates,
state)`` and the caller applies ``params[k] + updates[k]``. Only the statistics the rule
uses are tracked. Randomness (``noise``, ``drop``) comes from generators seeded by
``(seed, step, parameter name)``, so a rule is a pure function of its inputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from metaplat.optim.dsl import Program
from metaplat.seeding import derive_seed

Params = dict[str, torch.Tensor]


@dataclasses.dataclass
class OptState:
    """Per-parameter statistics (only those the rule needs) and the step count."""

    step: int
    m: Params
    """EMA of g (β1), zero-initialised, no bias correction."""
    v: Params
    """EMA of g² (β2)."""
    y: Params
    """EMA of g³ (β3)."""


class FunctionalOptimizer(NamedTuple):
    init: Callable[[Params], OptState]
    update: Callable[[Params, OptState, Params], tuple[Params, OptState]]


def _unary(name: str, x: torch.Tensor, gen: Callable[[], torch.Generator]) -> torch.Tensor:
    if name == "identity":
        return x
    if name == "neg":
        return -x
    if name == "exp":
        return torch.exp(x)
    if name == "log_abs":
        return torch.log(x.abs())
    if name == "sqrt_abs":
        return x.abs().sqrt()
    if name == "sign":
        return torch.sign(x)
    if name.startswith("clip"):
        c = float(name[4:])
        return x.clamp(-c, c)
    if name.startswith("drop"):
        # Bello et al.: drop(x, p) zeroes each coordinate with probability p (no rescaling).
        p = float(name[4:])
        keep = torch.rand(x.shape, generator=gen(), dtype=x.dtype) >= p
        return x * keep
    raise ValueError(f"unknown unary function {name!r}")


def _binary(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if name == "add":
        return a + b
    if name == "sub":
        return a - b
    if name == "mul":
        return a * b
    if name == "div":
        return a / (b + 1e-8)
    if name == "pow":
        # sign-preserving power, so that negative bases give real numbers
        return torch.sign(a) * a.abs().pow(b)
    if name == "keep_left":
        return a
    raise ValueError(f"unknown binary function {name!r}")


def compile_program(
    program: Program,
    lr: float,
    seed: int = 0,
    beta1: float = 0.9,
    beta2: float = 0.999,
    beta3: float = 0.999,
    eps: float = 1e-8,
) -> FunctionalOptimizer:
    """The rule ``w <- w - lr * program(...)`` as a functional optimizer."""
    if not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    ops = program.operands()
    need_m = bool(ops & {"m", "sign_m", "adam"})
    need_v = bool(ops & {"v", "adam", "rmsprop"})
    need_y = "y" in ops
    used = set(program.used_units())

    def init(params: Params) -> OptState:
        def z(flag: bool) -> Params:
            return {k: torch.zeros_like(p) for k, p in params.items()} if flag else {}

        return OptState(0, z(need_m), z(need_v), z(need_y))

    def update(grads: Params, state: OptState, params: Params) -> tuple[Params, OptState]:
        t = state.step + 1
        m, v, y, updates = {}, {}, {}, {}
        for name, g in grads.items():
            if need_m:
                m[name] = beta1 * state.m[name] + (1 - beta1) * g
            if need_v:
                v[name] = beta2 * state.v[name] + (1 - beta2) * g * g
            if need_y:
                y[name] = beta3 * state.y[name] + (1 - beta3) * g * g * g
            gens: list[torch.Generator] = []

            def gen(name: str = name) -> torch.Generator:
                s = derive_seed(seed, t, name, len(gens)) % 2**63
                gens.append(torch.Generator().manual_seed(s))
                return gens[-1]

            w = params[name]

            def operand(op: str, outs: dict[int, torch.Tensor]) -> torch.Tensor:
                if op.startswith("u") and op[1:].isdigit():
                    return outs[int(op[1:])]
                if op == "g":
                    return g
                if op == "g2":
                    return g * g
                if op == "g3":
                    return g * g * g
                if op == "m":
                    return m[name]
                if op == "v":
                    return v[name]
                if op == "y":
                    return y[name]
                if op == "sign_g":
                    return torch.sign(g)
                if op == "sign_m":
                    return torch.sign(m[name])
                if op == "one":
                    return torch.ones_like(g)
                if op == "two":
                    return torch.full_like(g, 2.0)
                if op == "noise":
                    return 0.01 * torch.randn(g.shape, generator=gen(), dtype=g.dtype)
                if op.startswith("wd"):
                    return float(op[2:]) * w
                if op == "adam":
                    mh = m[name] / (1 - beta1**t)
                    return mh / ((v[name] / (1 - beta2**t)).sqrt() + eps)
                if op == "rmsprop":
                    return g / (v[name].sqrt() + eps)
                raise ValueError(f"unknown operand {op!r}")

            outs: dict[int, torch.Tensor] = {}
            for k, u in enumerate(program.units):
                if k not in used:
                    continue
                a = _unary(u.u1, operand(u.op1, outs), gen)
                if u.b == "keep_left":
                    outs[k] = a
                else:
                    outs[k] = _binary(u.b, a, _unary(u.u2, operand(u.op2, outs), gen))
            updates[name] = -lr * outs[len(program.units) - 1]
        return updates, OptState(t, m, v, y)

    return FunctionalOptimizer(init, update)


def apply_updates(params: Params, updates: Params) -> Params:
    """``params + updates``, key by key (new tensors; nothing is mutated)."""
    return {k: p + updates[k] for k, p in params.items()}

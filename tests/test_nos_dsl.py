"""NOS grammar: compiled rules equal torch.optim and the hand-written PowerSign/AddSign formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from metaplat.optim import dsl
from metaplat.optim.compile import apply_updates, compile_program
from metaplat.optim.dsl import Program, Unit

STEPS = 5


def _problem() -> tuple[torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    data = [(torch.randn(8, 3), torch.randn(8, 2)) for _ in range(STEPS)]
    return model, data


def _loss(model: torch.nn.Module, params: dict[str, torch.Tensor], x, y) -> torch.Tensor:
    return ((functional_call(model, params, (x,)) - y) ** 2).mean()


def _run_compiled(program: Program, lr: float) -> dict[str, torch.Tensor]:
    model, data = _problem()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = compile_program(program, lr)
    state = opt.init(params)
    for x, y in data:
        p = {k: v.requires_grad_(True) for k, v in params.items()}
        grads = dict(
            zip(p, torch.autograd.grad(_loss(model, p, x, y), list(p.values())), strict=True)
        )
        upd, state = opt.update(grads, state, {k: v.detach() for k, v in p.items()})
        params = apply_updates({k: v.detach() for k, v in p.items()}, upd)
    assert state.step == STEPS
    return params


def _run_torch(make_opt) -> dict[str, torch.Tensor]:
    model, data = _problem()
    opt = make_opt(model.parameters())
    for x, y in data:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return {k: v.detach() for k, v in model.named_parameters()}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_sgd_equals_torch() -> None:
    _close(_run_compiled(dsl.SGD, 0.1), _run_torch(lambda p: torch.optim.SGD(p, lr=0.1)))


def test_momentum_equals_torch_up_to_the_ema_factor() -> None:
    # m = (1 - beta) * torch's momentum buffer, so rate lr / (1 - beta) reproduces it exactly.
    _close(
        _run_compiled(dsl.MOMENTUM, 0.1 / (1 - 0.9)),
        _run_torch(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    )


def test_adam_equals_torch() -> None:
    _close(_run_compiled(dsl.ADAM, 0.01), _run_torch(lambda p: torch.optim.Adam(p, lr=0.01)))


def test_rmsprop_equals_torch_with_matching_decay() -> None:
    _close(
        _run_compiled(dsl.RMSPROP, 0.01),
        _run_torch(lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.999, eps=1e-8)),
    )


@pytest.mark.parametrize("name", ["powersign", "addsign"])
def test_powersign_and_addsign_equal_hand_formulas(name: str) -> None:
    gs = [torch.tensor([0.5, -1.0, 2.0, -0.1]), torch.tensor([-0.3, -2.0, 1.0, 0.4]),
          torch.tensor([0.2, 1.0, -0.5, 0.3])]  # fmt: skip
    lr, w = 0.1, torch.zeros(4)
    opt = compile_program(dsl.NAMED[name], lr)
    state = opt.init({"w": w})
    m = torch.zeros(4)
    for g in gs:
        upd, state = opt.update({"w": g}, state, {"w": w})
        m = 0.9 * m + 0.1 * g
        s = torch.sign(g) * torch.sign(m)
        d = torch.exp(s) * g if name == "powersign" else (1 + s) * g
        torch.testing.assert_close(upd["w"], -lr * d)


def test_formulas_print_readably() -> None:
    assert dsl.POWERSIGN.formula() == "exp(sign(g)·sign(m̂))·g"
    assert dsl.ADDSIGN.formula() == "(1 + sign(g)·sign(m̂))·g"
    assert dsl.SGD.formula() == "g"
    assert Program.single("g", "v", u2="sqrt_abs", b="div").formula() == "g/(√|v̂| + 1e-8)"


def test_program_round_trips_and_rejects_bad_fields() -> None:
    assert Program.from_dict(dsl.ADDSIGN.to_dict()) == dsl.ADDSIGN
    with pytest.raises(ValueError, match="op1='u0'"):
        Program((Unit("u0", "g"),))
    with pytest.raises(ValueError, match="b='max'"):
        Program((Unit("g", "g", b="max"),))


def test_only_needed_statistics_are_tracked_and_random_rules_reproduce() -> None:
    params = {"w": torch.ones(3)}
    assert compile_program(dsl.SGD, 0.1).init(params).m == {}
    st = compile_program(dsl.POWERSIGN, 0.1).init(params)
    assert set(st.m) == {"w"} and st.v == {}
    noisy = Program.single("g", "noise", u1="drop0.5", b="add")
    g = {"w": torch.arange(1.0, 101.0)}
    a = compile_program(noisy, 1.0, seed=3)
    u1, _ = a.update(g, a.init(g), g)
    u2, _ = compile_program(noisy, 1.0, seed=3).update(g, a.init(g), g)
    torch.testing.assert_close(u1["w"], u2["w"])
    dropped = float((u1["w"].abs() < 0.1).float().mean())
    assert 0.3 < dropped < 0.7 and math.isfinite(float(u1["w"].sum()))

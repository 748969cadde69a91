"""Oracles for the MAML family's meta-gradients: hand-written per-task autograd references."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.func import functional_call

from metaplat.estimators.backprop import (
    LR_PREFIX,
    MetaGradJob,
    ModelSpec,
    build_episode,
    make_kernels,
)
from metaplat.inner.adapt import InnerRule, adapt, stack_params
from metaplat.outer.maml import MAML, MAMLConfig
from metaplat.tasks.base import Episode
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool

SINE = ModelSpec(kind="mlp", in_shape=(1,), out_dim=1, hidden=(16, 16))
CONV = ModelSpec(kind="conv4", in_shape=(1, 28, 28), out_dim=5, channels=4)
KERNELS = ("bmm", "vmap", "loop")
CPU = torch.device("cpu")


def double(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in d.items()}


def sine_episode(num_tasks: int = 4) -> Episode:
    fam = make_family("sinusoid", {"num_support": 5, "num_query": 7})
    ep = build_episode(fam.sample(torch_rng(0), "train", num_tasks), CPU)
    return Episode(*(t.double() for t in (ep.support_x, ep.support_y, ep.query_x, ep.query_y)))


def image_episode(num_tasks: int = 2, ways: int = 5, shots: int = 1, queries: int = 2) -> Episode:
    g = torch.Generator().manual_seed(3)
    sx = torch.randn(num_tasks, ways * shots, 1, 28, 28, generator=g, dtype=torch.float64)
    qx = torch.randn(num_tasks, ways * queries, 1, 28, 28, generator=g, dtype=torch.float64)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(num_tasks, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(num_tasks, 1)
    return Episode(sx, sy, qx, qy)


def torch_rng(seed: int):  # numpy generator for family.sample
    import numpy as np

    return np.random.default_rng(seed)


def loss_one(
    module: torch.nn.Module, p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The plain single-task loss the references use (no stacking, no vmap)."""
    out = functional_call(module, p, (x,))
    if y.is_floating_point():
        return (out - y).pow(2).mean()
    return torch.nn.functional.cross_entropy(out, y)


def reference_maml(
    spec: ModelSpec,
    params,
    ep: Episode,
    lr: float,
    steps: int,
    second_order: bool,
    names=None,
    lrs=None,
):
    """Sum over tasks of each task's meta-gradient, one task at a time with torch.autograd.grad."""
    module = spec.build().double()
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    total_lr = {k: torch.zeros_like(v) for k, v in (lrs or {}).items()}
    for t in range(ep.support_x.shape[0]):
        theta = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        alphas = {k: v.detach().clone().requires_grad_() for k, v in (lrs or {}).items()}
        p = dict(theta)
        adapted_names = list(names or p)
        for _ in range(steps):
            loss = loss_one(module, p, ep.support_x[t], ep.support_y[t])
            gs = torch.autograd.grad(loss, [p[n] for n in adapted_names], create_graph=second_order)
            p = dict(p)
            for n, g in zip(adapted_names, gs, strict=True):
                step = alphas[n] * g if n in alphas else lr * g
                p[n] = p[n] - step if second_order else (p[n] - step).detach().requires_grad_()
        q = loss_one(module, p, ep.query_x[t], ep.query_y[t])
        wrt = theta if second_order else p
        gs = torch.autograd.grad(q, list(wrt.values()) + list(alphas.values()), allow_unused=True)
        for k, g in zip(list(wrt) + [LR_PREFIX + a for a in alphas], gs, strict=True):
            if g is None:
                continue
            if k.startswith(LR_PREFIX):
                total_lr[k[len(LR_PREFIX) :]] += g
            else:
                total[k] += g
    return total, total_lr


def assert_dicts_close(a, b, atol=1e-10, rtol=1e-8):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=f"mismatch in {k}")


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("kernel", KERNELS)
def test_second_order_maml_equals_autograd_reference(steps: int, kernel: str) -> None:
    ep = sine_episode()
    params = double(SINE.init_params(0))
    job = MetaGradJob(SINE, InnerRule(steps=steps, lr=0.05), "second_order", kernel)  # type: ignore[arg-type]
    kernels = make_kernels(SINE, kernel, CPU)  # type: ignore[arg-type]
    res = job.compute(params, ep, kernels)
    ref, _ = reference_maml(SINE, params, ep, 0.05, steps, second_order=True)
    assert res.num_ok == 4
    assert_dicts_close(res.grad_sum, ref)
    # and it is genuinely second order: differs from the first-order gradient
    fo, _ = reference_maml(SINE, params, ep, 0.05, steps, second_order=False)
    assert not torch.allclose(res.grad_sum["0.weight"], fo["0.weight"], atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_fomaml_equals_gradient_at_adapted_params(kernel: str) -> None:
    ep = sine_episode()
    params = double(SINE.init_params(1))
    job = MetaGradJob(SINE, InnerRule(steps=2, lr=0.05), "first_order", kernel)  # type: ignore[arg-type]
    res = job.compute(params, ep, make_kernels(SINE, kernel, CPU))  # type: ignore[arg-type]
    ref, _ = reference_maml(SINE, params, ep, 0.05, 2, second_order=False)
    assert_dicts_close(res.grad_sum, ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_classification_maml_mlp_equals_reference(kernel: str) -> None:
    """Cross-entropy on int labels through the MLP kernels (images flattened)."""
    spec = ModelSpec(kind="mlp", in_shape=(1, 28, 28), out_dim=5, hidden=(8,))
    ep = image_episode(num_tasks=3, shots=2)
    params = double(spec.init_params(0))
    job = MetaGradJob(spec, InnerRule(steps=2, lr=0.4), "second_order", kernel)  # type: ignore[arg-type]
    res = job.compute(params, ep, make_kernels(spec, kernel, CPU))  # type: ignore[arg-type]
    flat = Episode(ep.support_x.flatten(2), ep.support_y, ep.query_x.flatten(2), ep.query_y)
    ref, _ = reference_maml(spec, params, flat, 0.4, 2, second_order=True)
    assert_dicts_close(res.grad_sum, ref)


@pytest.mark.parametrize("kernel", ("grouped", "vmap", "loop"))
def test_classification_maml_conv4_equals_reference(kernel: str) -> None:
    """Cross-entropy on int labels, Conv4 with batch-statistics BatchNorm, vmap and loop."""
    ep = image_episode()
    params = double(CONV.init_params(0))
    job = MetaGradJob(CONV, InnerRule(steps=2, lr=0.4), "second_order", kernel)  # type: ignore[arg-type]
    res = job.compute(params, ep, make_kernels(CONV, kernel, CPU))  # type: ignore[arg-type]
    ref, _ = reference_maml(CONV, params, ep, 0.4, 2, second_order=True)
    assert_dicts_close(res.grad_sum, ref, atol=1e-8, rtol=1e-6)


def test_reptile_meta_gradient_is_initial_minus_adapted() -> None:
    ep = sine_episode(3)
    params = double(SINE.init_params(2))
    rule = InnerRule(steps=4, lr=0.02)
    job = MetaGradJob(SINE, rule, "reptile", "auto")
    res = job.compute(params, ep, make_kernels(SINE, "auto", CPU))
    module = SINE.build().double()
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for t in range(3):
        x = torch.cat([ep.support_x[t], ep.query_x[t]])
        y = torch.cat([ep.support_y[t], ep.query_y[t]])
        phi = {k: v.clone().requires_grad_() for k, v in params.items()}
        for _ in range(4):
            gs = torch.autograd.grad(loss_one(module, phi, x, y), list(phi.values()))
            phi = {
                k: (v - 0.02 * g).detach().requires_grad_()
                for (k, v), g in zip(phi.items(), gs, strict=True)
            }
        for k in params:
            expected[k] += params[k] - phi[k].detach()
    assert_dicts_close(res.grad_sum, expected)


def test_anil_adapts_only_the_head() -> None:
    ep = sine_episode(2)
    params = double(SINE.init_params(0))
    head = SINE.head_names()
    assert head == ("4.weight", "4.bias")
    kernels = make_kernels(SINE, "vmap", CPU)
    res = adapt(
        stack_params(params, 2),
        ep.support_x,
        ep.support_y,
        kernels.forward,
        InnerRule(steps=3, lr=0.1, names=head),
    )
    for k, v in res.params.items():
        same = torch.equal(v.detach(), params[k].expand_as(v))
        assert same == (k not in head), k
    # second-order ANIL's meta-gradient matches the reference that adapts only the head
    job = MetaGradJob(SINE, InnerRule(steps=2, lr=0.1, names=head), "second_order", "bmm")
    out = job.compute(params, ep, make_kernels(SINE, "bmm", CPU))
    ref, _ = reference_maml(SINE, params, ep, 0.1, 2, second_order=True, names=head)
    assert_dicts_close(out.grad_sum, ref)
    assert CONV.head_names() == ("head.weight", "head.bias")


def test_metasgd_with_fixed_rates_equals_maml_and_rate_gradient_matches() -> None:
    ep = sine_episode(3)
    params = double(SINE.init_params(0))
    lrs = {k: torch.full_like(v, 0.05) for k, v in params.items()}
    payload = params | {LR_PREFIX + k: v for k, v in lrs.items()}
    job = MetaGradJob(SINE, InnerRule(steps=2, lr=999.0), "second_order", "auto")  # rule.lr unused
    res = job.compute(payload, ep, make_kernels(SINE, "auto", CPU))
    maml, _ = reference_maml(SINE, params, ep, 0.05, 2, second_order=True)
    assert_dicts_close({k: v for k, v in res.grad_sum.items() if not k.startswith(LR_PREFIX)}, maml)
    _, ref_lr = reference_maml(SINE, params, ep, 0.05, 2, second_order=True, lrs=lrs)
    assert_dicts_close(
        {k[len(LR_PREFIX) :]: v for k, v in res.grad_sum.items() if k.startswith(LR_PREFIX)}, ref_lr
    )


def test_nan_guard_drops_a_poisoned_task() -> None:
    ep = sine_episode(4)
    ep.support_y[1, 0, 0] = math.nan
    params = double(SINE.init_params(0))
    job = MetaGradJob(SINE, InnerRule(steps=1, lr=0.05), "second_order", "auto")
    res = job.compute(params, ep, make_kernels(SINE, "auto", CPU))
    assert res.num_ok == 3 and res.ok.tolist() == [True, False, True, True]
    keep = Episode(*(t[[0, 2, 3]] for t in (ep.support_x, ep.support_y, ep.query_x, ep.query_y)))
    ref, _ = reference_maml(SINE, params, keep, 0.05, 1, second_order=True)
    assert_dicts_close(res.grad_sum, ref)


def test_inner_grad_clip_bounds_each_task_step() -> None:
    ep = sine_episode(3)
    params = double(SINE.init_params(0))
    kernels = make_kernels(SINE, "bmm", CPU)
    stacked = stack_params(params, 3)
    res = adapt(
        stacked,
        ep.support_x,
        ep.support_y,
        kernels.forward,
        InnerRule(steps=1, lr=1.0, grad_clip=0.01),
        value_and_grad=kernels.value_and_grad,
    )
    for t in range(3):
        sq = sum((stacked[k][t] - res.params[k][t]).pow(2).sum() for k in params)
        step_norm = float(torch.as_tensor(sq).detach().sqrt())
        assert step_norm == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize("workers", [2, 3])
def test_sharding_does_not_change_the_meta_gradient(workers: int) -> None:
    fam = make_family("sinusoid", {})
    cfg = MAMLConfig(meta_batch_size=7, hidden=(16, 16), inner_steps=2)
    one = MAML(cfg, fam, LocalPool(1), seed=5)
    many = MAML(cfg, fam, LocalPool(workers), seed=5)
    s1, m1 = one.step(one.init())
    s2, m2 = many.step(many.init())
    assert_dicts_close(s1.params, s2.params, atol=1e-6, rtol=1e-6)
    assert m1 == pytest.approx(m2, rel=1e-6)


def test_vmap_and_loop_outer_steps_agree() -> None:
    fam = make_family("sinusoid", {})
    a = MAML(MAMLConfig(meta_batch_size=5, hidden=(8,)), fam, LocalPool(1), seed=1)
    b = MAML(MAMLConfig(meta_batch_size=5, hidden=(8,), vectorize=False), fam, LocalPool(1), seed=1)
    sa, sb = a.init(), b.init()
    for _ in range(3):
        sa, _ = a.step(sa)
        sb, _ = b.step(sb)
    assert_dicts_close(sa.params, sb.params, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernel", ("grouped", "vmap", "loop"))
def test_per_step_bn_copies_sum_to_the_shared_bn_gradient(kernel: str) -> None:
    """MAML++ per-step BN with identical copies: the copies' meta-gradients add up to the
    gradient of shared (non-adapted) BN parameters, and the rest equals that MAML's."""
    from metaplat.estimators.backprop import BN_PREFIX

    ep = image_episode()
    params = double(CONV.init_params(0))
    bn = CONV.bn_names()
    assert len(bn) == 8 and all(".1." in n for n in bn)
    rest = tuple(n for n in params if n not in bn)
    steps = 2
    payload = {k: v for k, v in params.items() if k not in bn}
    payload |= {f"{BN_PREFIX}{s}.{n}": params[n].clone() for s in range(steps + 1) for n in bn}
    job = MetaGradJob(
        CONV,
        InnerRule(steps=steps, lr=0.4, names=rest),
        "second_order",
        kernel,  # type: ignore[arg-type]
        per_step_bn=steps + 1,
    )
    res = job.compute(payload, ep, make_kernels(CONV, kernel, CPU))  # type: ignore[arg-type]
    ref, _ = reference_maml(CONV, params, ep, 0.4, steps, second_order=True, names=rest)
    for n in rest:
        torch.testing.assert_close(res.grad_sum[n], ref[n], atol=1e-8, rtol=1e-6)
    for n in bn:
        copies = [res.grad_sum[f"{BN_PREFIX}{s}.{n}"] for s in range(steps + 1)]
        torch.testing.assert_close(sum(copies), ref[n], atol=1e-8, rtol=1e-6)
        assert not torch.allclose(copies[0], copies[-1])  # each step's copy gets its own gradient


# -- the autograd-free MLP meta-gradient (the default for kernel "bmm") ----------------------
IMAGE_MLP = ModelSpec(kind="mlp", in_shape=(1, 28, 28), out_dim=5, hidden=(16, 8))


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize(
    "names", [None, ("4.weight", "4.bias"), ("2.weight", "2.bias", "4.weight")]
)
@pytest.mark.parametrize("second_order", [True, False])
def test_hand_meta_gradient_equals_autograd(steps: int, names, second_order: bool) -> None:
    ep = sine_episode(4)
    params = double(SINE.init_params(0))
    meta_grad = make_kernels(SINE, "bmm", CPU).meta_grad
    assert meta_grad is not None
    r = meta_grad(
        stack_params(params, 4, requires_grad=False),
        (ep.support_x, ep.support_y),
        (ep.query_x, ep.query_y),
        steps,
        0.1,
        tuple(params) if names is None else names,
        first_order=not second_order,
    )
    ref, _ = reference_maml(SINE, params, ep, 0.1, steps, second_order, names=names)
    assert_dicts_close({k: g.sum(0) for k, g in r.grads.items()}, ref)


def test_hand_meta_gradient_learned_rates_and_cross_entropy() -> None:
    ep = sine_episode(3)
    params = double(SINE.init_params(0))
    g = torch.Generator().manual_seed(0)
    lrs = {
        k: 0.05 + 0.01 * torch.rand(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()
    }
    meta_grad = make_kernels(SINE, "bmm", CPU).meta_grad
    assert meta_grad is not None
    r = meta_grad(
        stack_params(params, 3, requires_grad=False),
        (ep.support_x, ep.support_y),
        (ep.query_x, ep.query_y),
        2,
        999.0,  # unused: every adapted name has a learned rate
        tuple(params),
        lrs=stack_params(lrs, 3, requires_grad=False),
    )
    ref, ref_lr = reference_maml(SINE, params, ep, 999.0, 2, True, lrs=lrs)
    assert_dicts_close({k: v.sum(0) for k, v in r.grads.items()}, ref)
    assert_dicts_close({k: v.sum(0) for k, v in r.lr_grads.items()}, ref_lr)
    # cross-entropy on flattened images (softmax Hessian terms)
    img = image_episode(3, shots=2)
    ip = double(IMAGE_MLP.init_params(1))
    flat = Episode(img.support_x.flatten(2), img.support_y, img.query_x.flatten(2), img.query_y)
    flat_spec = ModelSpec(kind="mlp", in_shape=(784,), out_dim=5, hidden=(16, 8))
    hand = make_kernels(IMAGE_MLP, "bmm", CPU).meta_grad
    assert hand is not None
    r = hand(
        stack_params(ip, 3, requires_grad=False),
        (img.support_x, img.support_y),
        (img.query_x, img.query_y),
        2,
        0.4,
        tuple(ip),
    )
    ref, _ = reference_maml(flat_spec, ip, flat, 0.4, 2, True)
    assert_dicts_close({k: v.sum(0) for k, v in r.grads.items()}, ref)


@pytest.mark.parametrize("kind", ["second_order", "first_order"])
def test_job_by_hand_equals_job_through_autograd_with_a_failed_task(kind: str) -> None:
    ep = sine_episode(4)
    ep.query_y[2, 1, 0] = math.inf  # task 2 fails: dropped and counted by both paths
    params = double(SINE.init_params(0))
    job = MetaGradJob(SINE, InnerRule(steps=2, lr=0.05), kind, "bmm")  # type: ignore[arg-type]
    kernels = make_kernels(SINE, "bmm", CPU)
    by_hand = job.compute(params, ep, kernels)
    autograd = job.compute(params, ep, dataclasses.replace(kernels, meta_grad=None))
    assert by_hand.num_ok == autograd.num_ok == 3
    assert by_hand.ok.tolist() == autograd.ok.tolist() == [True, True, False, True]
    assert_dicts_close(by_hand.grad_sum, autograd.grad_sum)
    torch.testing.assert_close(by_hand.post_loss, autograd.post_loss)
    clipped = MetaGradJob(SINE, InnerRule(steps=1, lr=0.05, grad_clip=0.1), kind, "bmm")  # type: ignore[arg-type]
    # inner clipping is not in the hand recursion: the job takes the autograd path for it
    a = clipped.compute(params, ep, kernels)
    b = clipped.compute(params, ep, dataclasses.replace(kernels, meta_grad=None))
    assert_dicts_close(a.grad_sum, b.grad_sum)


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from metaplat.inner import kernels as kernel_module

    def broken(fn, **_):
        def run(*args):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(kernel_module.torch, "compile", broken)
    ep = sine_episode(2)
    params = stack_params(double(SINE.init_params(0)), 2, requires_grad=False)
    args = (params, (ep.support_x, ep.support_y), (ep.query_x, ep.query_y), 2, 0.1, tuple(params))
    with caplog.at_level("WARNING"):
        fallback = kernel_module.mlp_meta_grad(3, compile=True)(*args)
    assert "no C++ compiler" in caplog.text
    eager = kernel_module.mlp_meta_grad(3)(*args)
    assert_dicts_close(fallback.grads, eager.grads, atol=0, rtol=0)


@pytest.mark.slow
def test_compiled_meta_gradient_equals_eager() -> None:
    """torch.compile of the hand-written meta-gradient (compiles for ~10-30 s)."""
    ep = sine_episode(4)
    params = stack_params(double(SINE.init_params(0)), 4, requires_grad=False)
    g = torch.Generator().manual_seed(1)
    lrs = {
        k: 0.05 + 0.01 * torch.rand(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()
    }
    args = (params, (ep.support_x, ep.support_y), (ep.query_x, ep.query_y), 2, 0.1, tuple(params))
    eager = make_kernels(SINE, "bmm", CPU).meta_grad
    compiled = make_kernels(SINE, "bmm", CPU, compile=True).meta_grad
    assert eager is not None and compiled is not None
    a, b = eager(*args, lrs=lrs), compiled(*args, lrs=lrs)
    assert_dicts_close(a.grads, b.grads, atol=1e-12, rtol=1e-9)
    assert_dicts_close(a.lr_grads, b.lr_grads, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(a.post, b.post)

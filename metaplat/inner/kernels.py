"""Hand-batched MLP kernels for stacked per-task parameters (no ``vmap`` dispatch overhead).

On a CPU the 1-40-40-1 MLP of the MAML paper is so small that per-operator overhead
dominates an outer iteration: ``vmap`` + ``functional_call`` pay it in the forward, and
``autograd.grad(create_graph=True)`` pays it again, twice, for the double backward. Here the
same network is written as batched matrix products over stacked weights, in three layers:

- :func:`mlp_bmm_forward`: the forward;
- :func:`mlp_value_and_grad`: the inner-loop gradient written out with ordinary
  differentiable ops (a second-order meta-gradient through it needs one plain backward);
- :func:`mlp_meta_grad`: the whole meta-gradient without autograd (reverse mode through
  the inner SGD steps with hand-written Hessian-vector products), optionally compiled.

The math is identical to autograd's (ReLU's derivative is ``h > 0``, as in
``threshold_backward``); the oracle tests in ``tests/test_maml_oracle.py`` check it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from metaplat.inner.adapt import Forward, ValueAndGrad, sgd_step

log = logging.getLogger(__name__)


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm``, with the products of a size-1 inner or outer dimension (the 1-input and
    1-output layers of a regression MLP) done as broadcasts: 3x cheaper than bmm on CPU there."""
    if a.shape[2] == 1:  # outer products
        return a * b
    if b.shape[2] == 1:  # matrix-vector products
        return (a * b.transpose(1, 2)).sum(2, keepdim=True)
    return torch.bmm(a, b)


def _layers(
    x: torch.Tensor, p: Mapping[str, torch.Tensor], num_linear: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and the input of every layer (``acts[i]`` feeds Linear ``i``)."""
    h, acts = x, []
    for i in range(num_linear):
        acts.append(h)
        w, b = p[_w(i)], p[_b(i)].unsqueeze(1)
        if 1 in w.shape[1:]:
            h = _bmm(h, w.transpose(1, 2)) + b
        else:
            h = torch.baddbmm(b, h, w.transpose(1, 2))
        if i < num_linear - 1:
            h = torch.relu(h)
    return h, acts


@dataclasses.dataclass
class _Cache:
    """One forward and backward of the MLP on a batch: what a Hessian-vector product reuses."""

    acts: list[torch.Tensor]
    """``acts[i]``: input of Linear ``i`` (``acts[i] > 0`` is the ReLU mask of layer ``i - 1``)."""
    dz: dict[int, torch.Tensor]
    """Loss gradient with respect to the output of Linear ``i`` (layers ``>= lowest``)."""
    prob: torch.Tensor | None
    """Softmax of the outputs (cross-entropy only)."""
    grads: dict[str, torch.Tensor]
    losses: torch.Tensor
    out: torch.Tensor


def _named(keys: Sequence[str], tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(zip(keys, tensors, strict=True))


def _lowest_layer(names: Sequence[str]) -> int:
    """Index of the lowest Linear among parameter names ``"<2i>.weight"``/``"<2i>.bias"``."""
    return min(int(n.split(".")[0]) // 2 for n in names)


def _w(i: int) -> str:
    return f"{2 * i}.weight"


def _b(i: int) -> str:
    return f"{2 * i}.bias"


def _loss_grad(
    out: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-task losses, d loss / d out, and the softmax (cross-entropy) -- as ``task_losses``."""
    t = out.shape[0]
    if y.is_floating_point():
        diff = out - y
        return diff.pow(2).reshape(t, -1).mean(1), diff * (2.0 / diff[0].numel()), None
    logp = F.log_softmax(out, -1)
    prob = logp.exp()
    losses = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).reshape(t, -1).mean(1)
    return losses, (prob - F.one_hot(y, out.shape[-1]).to(out.dtype)) / y[0].numel(), prob


def _run(
    p: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, num_linear: int, lowest: int
) -> _Cache:
    """Forward, loss, and the backward down to Linear ``lowest``, keeping what an HVP needs."""
    out, acts = _layers(x, p, num_linear)
    losses, dz, prob = _loss_grad(out, y)
    dzs: dict[int, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    for i in reversed(range(lowest, num_linear)):
        dzs[i] = dz
        grads[_w(i)] = _bmm(dz.transpose(1, 2), acts[i])
        grads[_b(i)] = dz.sum(1)
        if i > lowest:
            # ReLU's derivative, with the op autograd itself uses (a float mask; multiplying
            # by a bool mask costs 3x more on CPU); it is differentiable, its own derivative.
            dz = torch.ops.aten.threshold_backward(_bmm(dz, p[_w(i)]), acts[i], 0)
    return _Cache(acts, dzs, prob, grads, losses, out)


def mlp_bmm_forward(num_linear: int, flatten: bool = False) -> Forward:
    """Forward of ``metaplat.nn.backbones.mlp`` (ReLU, ``num_linear`` Linear layers at even
    indices ``0, 2, 4, ...`` of the Sequential) over stacked params
    ``{"0.weight": [T, out, in], ...}``.

    ``x: [T, N, in]`` (or ``[T, N, *image]`` with ``flatten``) -> ``[T, N, out]``.
    """

    def fwd(p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return _layers(x.flatten(2) if flatten else x, p, num_linear)[0]

    return fwd


def mlp_value_and_grad(num_linear: int, flatten: bool = False) -> ValueAndGrad:
    """Per-task losses ``[T]`` and their gradients for the names asked (MSE or cross-entropy,
    as :func:`metaplat.inner.adapt.task_losses`), written out layer by layer."""

    def vg(
        p: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, names: Sequence[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = _run(p, x.flatten(2) if flatten else x, y, num_linear, _lowest_layer(names))
        return c.losses, {n: c.grads[n] for n in names}

    return vg


def conv4_grouped_forward(num_blocks: int = 4, eps: float = 1e-5) -> Forward:
    """Forward of ``metaplat.nn.backbones.Conv4`` (with ``head``) for ``T`` tasks at once,
    as grouped convolutions over a task-major channel layout.

    ``x: [T, N, C, H, W] -> logits [T, N, num_classes]``; params stacked ``[T, *shape]``.
    Activations live as ``[N, T * channels, H, W]`` throughout: a convolution with
    ``groups=T`` applies each task's filters to its own channels, and batch-statistics
    BatchNorm over that layout normalises each task's channels with that task's statistics,
    exactly as ``Conv4`` does per task. ``vmap`` produces the same grouped convolution but
    permutes and copies every layer's input into that layout and back (about 1.7x the
    activation memory of a per-task loop, see ``benchmarks/maml_memory.py``); here only the
    network input is rearranged once.
    """

    def fwd(p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        t, n = x.shape[:2]
        h = x.transpose(0, 1).reshape(n, t * x.shape[2], *x.shape[3:])
        for i in range(num_blocks):
            w = p[f"encoder.{i}.0.weight"]  # [T, O, C, 3, 3]
            h = F.conv2d(
                h,
                w.reshape(t * w.shape[1], *w.shape[2:]),
                p[f"encoder.{i}.0.bias"].reshape(-1),
                padding=1,
                groups=t,
            )
            h = F.batch_norm(
                h,
                None,
                None,
                p[f"encoder.{i}.1.weight"].reshape(-1),
                p[f"encoder.{i}.1.bias"].reshape(-1),
                training=True,
                eps=eps,
            )
            h = F.max_pool2d(torch.relu(h), 2)
        z = h.reshape(n, t, -1).transpose(0, 1)  # [T, N, features], features in (C, H, W) order
        return torch.baddbmm(p["head.bias"].unsqueeze(1), z, p["head.weight"].transpose(1, 2))

    return fwd


# -- the whole meta-gradient by hand -------------------------------------------------------
@dataclasses.dataclass
class MetaGradResult:
    """What :func:`mlp_meta_grad` returns for ``T`` tasks (all tensors detached)."""

    grads: dict[str, torch.Tensor]
    """``[T, *shape]`` meta-gradient per parameter name."""
    lr_grads: dict[str, torch.Tensor]
    """``[T, *shape]`` gradient of the query loss with respect to each learned inner rate."""
    pre: torch.Tensor
    """``[T]`` query loss at the initial parameters."""
    post: torch.Tensor
    """``[T]`` query loss at the adapted parameters."""
    out: torch.Tensor
    """``[T, Nq, out]`` query outputs at the adapted parameters."""
    step_losses: torch.Tensor
    """``[T, steps]`` support loss at every inner step."""
    adapted: dict[str, torch.Tensor]
    """``[T, *shape]`` adapted parameters (every name; unadapted ones are the initial ones)."""
    finite: torch.Tensor
    """``[T]`` bool: the task's support losses, and query losses before and after, are finite."""
    grad_sums: dict[str, torch.Tensor]
    """``grads`` summed over the tasks."""
    lr_grad_sums: dict[str, torch.Tensor]
    """``lr_grads`` summed over the tasks."""
    all_finite: torch.Tensor
    """Scalar bool: every task ``finite`` and every summed gradient entry finite (a nan or inf
    in any task's term makes its sum non-finite), i.e. no task needs dropping."""


MetaGrad = Callable[..., MetaGradResult]
"""``(params, (support_x, support_y), (query_x, query_y), steps, lr, names, lrs=None,
first_order=False) -> MetaGradResult``; see :func:`mlp_meta_grad`."""


def _hvp(
    p: Mapping[str, torch.Tensor],
    c: _Cache,
    v: Mapping[str, torch.Tensor],
    num_linear: int,
    is_mse: bool,
) -> dict[str, torch.Tensor]:
    """Hessian of the (per-task) loss at ``p`` times the direction ``v`` (any subset of the
    names; the others are zero), for every name: Pearlmutter's R-operator written out.

    ReLU's second derivative is zero almost everywhere, so the R-forward and R-backward pass
    the masks through unchanged; the only second-order terms are the bilinear ones between
    weights and activations, and (cross-entropy) the softmax Jacobian.
    """
    acts, n = c.acts, num_linear
    r_acts: list[torch.Tensor | None] = [None] * n  # R(input of Linear i)
    r: torch.Tensor | None = None
    for i in range(n):
        if i > 0 and r is not None:
            r_acts[i] = torch.ops.aten.threshold_backward(r, acts[i], 0)
        ra = r_acts[i]
        r = None if ra is None else _bmm(ra, p[_w(i)].transpose(1, 2))
        if _w(i) in v:
            term = _bmm(acts[i], v[_w(i)].transpose(1, 2))
            r = term if r is None else r + term
        if _b(i) in v:
            bias = v[_b(i)].unsqueeze(1)
            r = bias.expand(-1, acts[i].shape[1], -1) if r is None else r + bias
    assert r is not None, "empty direction"
    if is_mse:
        rd = r * (2.0 / r[0].numel())
    else:
        assert c.prob is not None
        pr = c.prob * r
        rd = (pr - c.prob * pr.sum(-1, keepdim=True)) / r.shape[1]
    hv: dict[str, torch.Tensor] = {}
    for i in reversed(range(n)):
        gw = _bmm(rd.transpose(1, 2), acts[i])
        ra = r_acts[i]
        if ra is not None:
            gw = gw + _bmm(c.dz[i].transpose(1, 2), ra)
        hv[_w(i)], hv[_b(i)] = gw, rd.sum(1)
        if i > 0:
            rdh = _bmm(rd, p[_w(i)])
            if _w(i) in v:
                rdh = rdh + _bmm(c.dz[i], v[_w(i)])
            rd = torch.ops.aten.threshold_backward(rdh, acts[i], 0)
    return hv


def mlp_meta_grad(num_linear: int, flatten: bool = False, compile: bool = False) -> MetaGrad:
    """MAML's meta-gradient for the ReLU MLP, computed without autograd.

    Inner loop (SGD, ``steps`` steps on the names in ``names``, rate ``lr`` or Meta-SGD's
    per-parameter ``lrs``): ``θ_{k+1} = θ_k - α ∘ ∇L_s(θ_k)``. Reverse mode through it is the
    recursion ``v_N = ∇L_q(θ_N)``, ``v_k = v_{k+1} - H_s(θ_k) (α ∘ v_{k+1})`` (``H_s`` the
    support loss's Hessian; its rows for unadapted names carry their cross terms), and the
    meta-gradient is ``v_0``; a learned rate gets ``Σ_k -v_{k+1} ∘ ∇L_s(θ_k)``. Each
    Hessian-vector product is written out (:func:`_hvp`) over the forward/backward already
    computed for the inner step, so an outer iteration costs about three forward-backward
    passes per inner step, all as batched matrix products, with none of autograd's graph
    building or double backward. ``first_order`` skips the recursion (FOMAML: ``v_N``).
    The oracle tests check every case against ``torch.autograd``.

    ``compile``: run it through ``torch.compile`` (inductor fuses the element-wise work
    between the matrix products; ~2.5x faster on CPU, see ``benchmarks/maml_speed.py``),
    compiled once per input shape and inner-loop setting; where compilation fails (no C++
    compiler, say) it logs why and runs eagerly.
    """

    def core(
        params: Mapping[str, torch.Tensor],
        support: tuple[torch.Tensor, torch.Tensor],
        query: tuple[torch.Tensor, torch.Tensor],
        steps: int,
        lr: float,
        names: Sequence[str],
        lrs: Mapping[str, torch.Tensor] | None = None,
        first_order: bool = False,
    ) -> tuple[Any, ...]:
        sx, sy = support
        qx, qy = query
        if flatten:
            sx, qx = sx.flatten(2), qx.flatten(2)
        is_mse = sy.is_floating_point()
        lowest = _lowest_layer(names)

        rates = dict(lrs or {})
        learned = [n for n in names if n in rates]
        fixed = [n for n in names if n not in rates]
        with torch.no_grad():
            p = {k: v.detach() for k, v in params.items()}
            caches: list[tuple[dict[str, torch.Tensor], _Cache]] = []
            for _ in range(steps):
                c = _run(p, sx, sy, num_linear, lowest)
                caches.append((p, c))
                p = sgd_step(p, {n: c.grads[n] for n in names}, lr, lrs)
            q = _run(p, qx, qy, num_linear, 0)
            v = dict(q.grads)
            lr_grads = {n: torch.zeros_like(r) for n, r in rates.items()}
            for pk, c in [] if first_order else reversed(caches):
                # u = α ∘ v on the adapted names (one foreach call per kind of rate), and
                # d/dα of θ_{k+1} = θ_k - α ∘ g_k contributes -v_{k+1} ∘ g_k
                u: dict[str, torch.Tensor] = {}
                if fixed:
                    u |= _named(fixed, torch._foreach_mul([v[n] for n in fixed], lr))
                if learned:
                    vl, gl = [v[n] for n in learned], [c.grads[n] for n in learned]
                    u |= _named(learned, torch._foreach_mul(vl, [rates[n] for n in learned]))
                    lr_grads |= _named(
                        learned,
                        torch._foreach_addcmul([lr_grads[n] for n in learned], vl, gl, value=-1),
                    )
                hv = _hvp(pk, c, u, num_linear, is_mse)
                v = _named(list(v), torch._foreach_sub(list(v.values()), [hv[k] for k in v]))
            step_losses = (
                torch.stack([c.losses for _, c in caches], 1)
                if caches
                else q.losses.new_zeros(q.losses.shape[0], 0)
            )
            pre = _loss_grad(_layers(qx, params, num_linear)[0], qy)[0]
            finite = torch.isfinite(step_losses).all(1) & torch.isfinite(pre)
            finite &= torch.isfinite(q.losses)
            sums = {k: g.sum(0) for k, g in v.items()}
            lr_sums = {k: g.sum(0) for k, g in lr_grads.items()}
            flat = torch.cat([s.reshape(-1) for s in (*sums.values(), *lr_sums.values())])
            all_finite = finite.all() & torch.isfinite(flat).all()
        return (
            v,
            lr_grads,
            pre,
            q.losses,
            q.out,
            step_losses,
            p,
            finite,
            sums,
            lr_sums,
            all_finite,
        )

    run = compiled(core, "the MLP meta-gradient") if compile else core

    def meta_grad(
        params: Mapping[str, torch.Tensor],
        support: tuple[torch.Tensor, torch.Tensor],
        query: tuple[torch.Tensor, torch.Tensor],
        steps: int,
        lr: float,
        names: Sequence[str],
        lrs: Mapping[str, torch.Tensor] | None = None,
        first_order: bool = False,
    ) -> MetaGradResult:
        return MetaGradResult(
            *run(params, support, query, steps, lr, tuple(names), lrs, first_order)
        )

    return meta_grad


def compiled(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``torch.compile(fn)``, falling back to ``fn`` itself (once, with a warning) if compiling
    or running the compiled code raises."""
    fast = torch.compile(fn, dynamic=False)
    state = {"eager": False}

    def call(*args: Any) -> Any:
        if not state["eager"]:
            try:
                return fast(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly instead
                state["eager"] = True
                log.warning("torch.compile of %s failed (%s); running it eagerly", what, e)
        return fn(*args)

    return call

"""Hand-batched MLP kernels for stacked per-task parameters (no ``vmap`` dispatch overhead).

On a CPU the 1-40-40-1 MLP of the MAML paper is so small that per-operator overhead
dominates an outer iteration: ``vmap`` + ``functional_call`` pay it in the forward, and
``autograd.grad(create_graph=True)`` pays it again, twice, for the double backward. Here the
same network is written as ``torch.baddbmm`` over stacked weights, and its inner-loop
gradient is written out by hand (ordinary differentiable ops), so a second-order meta-gradient
needs one plain backward instead of a double backward. The math is identical to autograd's
(ReLU's derivative is ``h > 0``, as in ``threshold_backward``); the oracle tests check it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from metaplat.inner.adapt import Forward, ValueAndGrad


def _layers(
    x: torch.Tensor, p: Mapping[str, torch.Tensor], num_linear: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and the input of every layer (``acts[i]`` feeds Linear ``i``)."""
    h, acts = x, []
    for i in range(num_linear):
        acts.append(h)
        h = torch.baddbmm(p[f"{2 * i}.bias"].unsqueeze(1), h, p[f"{2 * i}.weight"].transpose(1, 2))
        if i < num_linear - 1:
            h = torch.relu(h)
    return h, acts


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
        out, acts = _layers(x.flatten(2) if flatten else x, p, num_linear)
        t = out.shape[0]
        if y.is_floating_point():
            diff = out - y
            losses = diff.pow(2).reshape(t, -1).mean(1)
            dz = diff * (2.0 / diff[0].numel())
        else:
            logp = F.log_softmax(out, -1)
            losses = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).reshape(t, -1).mean(1)
            dz = (logp.exp() - F.one_hot(y, out.shape[-1]).to(out.dtype)) / y[0].numel()
        lowest = min(int(n.split(".")[0]) // 2 for n in names)
        grads: dict[str, torch.Tensor] = {}
        for i in reversed(range(lowest, num_linear)):
            grads[f"{2 * i}.weight"] = torch.bmm(dz.transpose(1, 2), acts[i])
            grads[f"{2 * i}.bias"] = dz.sum(1)
            if i > lowest:
                # ReLU's derivative, with the op autograd itself uses (a float mask; multiplying
                # by a bool mask costs 3x more on CPU); it is differentiable, its own derivative.
                dz = torch.ops.aten.threshold_backward(
                    torch.bmm(dz, p[f"{2 * i}.weight"]), acts[i], 0
                )
        return losses, {n: grads[n] for n in names}

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

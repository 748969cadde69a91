"""Meta-gradients by backpropagation through inner loops, as picklable worker jobs.

A job receives the meta-parameters (CPU tensors) and a shard of task specs, builds the
shard's episodes on its own device, runs every task's inner loop vectorised over the shard
(per-task loop as fallback), and returns one compact :class:`ShardGrad`: the *sum* of the
finite per-task meta-gradients plus per-task losses, on CPU. The outer loop adds shard sums
in task order and divides by the number of finite tasks.

Meta-gradient per method (``kind``):

- ``second_order`` (MAML, Meta-SGD, ANIL): d query-loss(adapted(θ)) / dθ, through the inner loop.
- ``first_order`` (FOMAML, first-order ANIL): d query-loss / d adapted params, evaluated at them.
- ``reptile``: θ − adapted(θ) (so a descent step moves θ toward the adapted weights).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from metaplat.inner.adapt import (
    AdaptResult,
    Forward,
    InnerRule,
    Params,
    StepView,
    ValueAndGrad,
    adapt,
    all_finite_per_task,
    loop_forward,
    per_step_view,
    stack_params,
    task_accuracies,
    task_losses,
    vmap_forward,
)
from metaplat.inner.kernels import (
    MetaGrad,
    conv4_grouped_forward,
    mlp_bmm_forward,
    mlp_meta_grad,
    mlp_value_and_grad,
)
from metaplat.nn.backbones import Conv4, mlp
from metaplat.tasks.base import Episode, TaskSpec
from metaplat.tasks.registry import family_of

log = logging.getLogger(__name__)

LR_PREFIX = "lr."
"""Meta-SGD's learned inner learning rates travel in the payload as ``lr.<param name>``."""
BN_PREFIX = "bnstep"
"""MAML++ per-step BatchNorm parameters travel as ``bnstep<step>.<param name>``."""

GradKind = Literal["second_order", "first_order", "reptile"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A learner architecture as plain data; built (and initialised) wherever it is needed."""

    kind: Literal["mlp", "conv4"]
    """``mlp`` (ReLU MLP; image inputs are flattened) or ``conv4`` (4 conv blocks + linear head)."""
    in_shape: tuple[int, ...]
    """Shape of one input, e.g. ``(1,)`` for sinusoids, ``(1, 28, 28)`` for glyphs."""
    out_dim: int
    """Outputs: regression dimension or number of classes (ways)."""
    hidden: tuple[int, ...] = (40, 40)
    """MLP hidden sizes."""
    channels: int = 64
    """Conv4 filters per block."""

    def build(self) -> nn.Module:
        if self.kind == "mlp":
            return mlp(math.prod(self.in_shape), self.hidden, self.out_dim)
        if len(self.in_shape) != 3:
            raise ValueError(
                f"model 'conv4' needs image inputs (C, H, W); got input shape {self.in_shape}"
            )
        c, h, _ = self.in_shape
        return Conv4(in_channels=c, hidden=self.channels, num_classes=self.out_dim, image_size=h)

    def init_params(self, seed: int) -> Params:
        """Fresh parameters: PyTorch's default init under ``seed`` (global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.build()
        return {k: v.detach().clone() for k, v in module.named_parameters()}

    @property
    def flatten(self) -> bool:
        return self.kind == "mlp" and len(self.in_shape) > 1

    def param_names(self) -> tuple[str, ...]:
        return _param_names(self)

    def bn_names(self) -> tuple[str, ...]:
        """Parameters of the BatchNorm layers (MAML++ keeps one copy of them per inner step)."""
        return _bn_names(self)

    def head_names(self) -> tuple[str, ...]:
        """The parameters ANIL adapts: ``head.*`` for Conv4, the last ``Linear`` of an MLP."""
        names = self.param_names()
        if self.kind == "conv4":
            return tuple(n for n in names if n.startswith("head."))
        last = names[-1].split(".")[0]
        return tuple(n for n in names if n.split(".")[0] == last)


@functools.cache
def _param_names(spec: ModelSpec) -> tuple[str, ...]:
    return tuple(k for k, _ in spec.build().named_parameters())


@functools.cache
def _bn_names(spec: ModelSpec) -> tuple[str, ...]:
    return tuple(
        f"{m}.{n}"
        for m, mod in spec.build().named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm)
        for n, _ in mod.named_parameters(recurse=False)
    )


Kernel = Literal["auto", "bmm", "grouped", "vmap", "loop"]


@dataclasses.dataclass(frozen=True)
class Kernels:
    """How a shard's tasks are computed: a batched forward, optionally a hand-written
    loss-and-gradient for the inner loop, and the name that metrics/logs report."""

    forward: Forward
    value_and_grad: ValueAndGrad | None
    name: str
    meta_grad: MetaGrad | None = None
    """The whole (first- or second-order) meta-gradient without autograd, where the model has
    one (:func:`metaplat.inner.kernels.mlp_meta_grad`); used for plain-SGD inner loops."""


@functools.cache
def _mlp_meta_grad(num_linear: int, flatten: bool, compile: bool) -> MetaGrad:
    """One per process and setting, so a compiled one is compiled once per worker."""
    return mlp_meta_grad(num_linear, flatten, compile)


def make_kernels(
    spec: ModelSpec, kernel: Kernel, device: torch.device, compile: bool = False
) -> Kernels:
    """``auto``: ``bmm`` for MLPs (hand-batched forward and inner gradient, and the whole
    meta-gradient without autograd), ``grouped`` for Conv4 (grouped convolutions over a
    task-major layout); ``vmap``: ``vmap(functional_call)`` + autograd, for any model;
    ``loop``: the per-task fallback. ``compile``: ``torch.compile`` the MLP meta-gradient."""
    if kernel == "auto":
        kernel = "bmm" if spec.kind == "mlp" else "grouped"
    if kernel == "grouped":
        if spec.kind != "conv4":
            raise ValueError(f"kernel 'grouped' needs model 'conv4', got {spec.kind!r}")
        return Kernels(conv4_grouped_forward(), None, "grouped")
    if kernel == "bmm":
        if spec.kind != "mlp":
            raise ValueError(f"kernel 'bmm' needs model 'mlp', got {spec.kind!r}")
        n = len(spec.hidden) + 1
        return Kernels(
            mlp_bmm_forward(n, spec.flatten),
            mlp_value_and_grad(n, spec.flatten),
            "bmm",
            _mlp_meta_grad(n, spec.flatten, compile),
        )
    if kernel == "loop":
        return Kernels(loop_forward(spec.build().to(device), spec.flatten), None, "loop")
    return Kernels(vmap_forward(spec.build().to(device), spec.flatten), None, "vmap")


@dataclasses.dataclass
class ShardGrad:
    """One shard's result. Tensors are on CPU; per-task lists are in task order."""

    grad_sum: dict[str, torch.Tensor]
    """Sum over the shard's finite tasks of their meta-gradients (payload names)."""
    num_ok: int
    """Tasks whose losses and gradients stayed finite."""
    pre_loss: torch.Tensor
    """``[n]`` query loss before adaptation."""
    post_loss: torch.Tensor
    """``[n]`` query loss after adaptation (Reptile: loss on its training data)."""
    ok: torch.Tensor
    """``[n]`` bool, finite tasks."""
    kernel: str
    """Which forward ran (``bmm``, ``vmap`` or ``loop``); a fallback is logged on the worker."""
    post_acc: torch.Tensor | None = None
    """``[n]`` accuracy after adaptation (classification only)."""


def build_episode(specs: Sequence[TaskSpec], device: torch.device) -> Episode:
    """The stacked episode of ``specs`` (all from one family) on ``device``."""
    return family_of(specs[0]).build_batch(specs, device)  # type: ignore[attr-defined, no-any-return]


@dataclasses.dataclass(frozen=True)
class MetaGradJob:
    """Worker job: summed meta-gradient of a shard of tasks (see the module docstring)."""

    model: ModelSpec
    rule: InnerRule
    kind: GradKind
    kernel: Kernel = "auto"
    """``auto``/``vmap``: vectorised over the shard; ``loop``: one task at a time."""
    reptile_use_query: bool = True
    """Reptile trains on support and query points together (the paper's transductive setting)."""
    per_step_bn: int = 0
    """MAML++ per-step BatchNorm: number of copies ``bnstep<s>.<name>`` in the payload (0: off)."""
    tasks_per_pass: int = 0
    """Tasks vectorised per forward/backward pass on the worker (0: the whole shard)."""
    compile: bool = False
    """``torch.compile`` the hand-written MLP meta-gradient (kernel ``bmm``)."""

    def step_view(self) -> StepView | None:
        return (
            per_step_view(self.model.bn_names(), self.per_step_bn, BN_PREFIX)
            if self.per_step_bn
            else None
        )

    def __call__(
        self, payload: dict[str, torch.Tensor], specs: Sequence[TaskSpec], device: torch.device
    ) -> ShardGrad:
        ep = build_episode(specs, device)
        payload = {k: v.to(device) for k, v in payload.items()}
        kernels = make_kernels(self.model, self.kernel, device, self.compile)
        try:
            return self.compute_chunked(payload, ep, kernels)
        except RuntimeError as e:  # vmap cannot batch some op: redo the shard task by task
            if kernels.name == "loop":
                raise
            log.warning(
                "vectorised (%s) meta-gradient failed (%s); falling back to a per-task loop",
                kernels.name,
                e,
            )
            return self.compute_chunked(payload, ep, make_kernels(self.model, "loop", device))

    def compute_chunked(
        self, payload: dict[str, torch.Tensor], ep: Episode, kernels: Kernels
    ) -> ShardGrad:
        """:meth:`compute` over chunks of ``tasks_per_pass`` tasks (one backward each), added up
        in task order: bounds worker memory by the chunk instead of the shard."""
        t = ep.support_x.shape[0]
        size = self.tasks_per_pass or t
        if size >= t:
            return self.compute(payload, ep, kernels)
        parts = [self.compute(payload, ep[i : i + size], kernels) for i in range(0, t, size)]
        grad_sum = {k: parts[0].grad_sum[k] for k in parts[0].grad_sum}
        for part in parts[1:]:
            grad_sum = {k: v + part.grad_sum[k] for k, v in grad_sum.items()}
        accs = [p.post_acc for p in parts if p.post_acc is not None]
        return ShardGrad(
            grad_sum=grad_sum,
            num_ok=sum(p.num_ok for p in parts),
            pre_loss=torch.cat([p.pre_loss for p in parts]),
            post_loss=torch.cat([p.post_loss for p in parts]),
            ok=torch.cat([p.ok for p in parts]),
            kernel=kernels.name,
            post_acc=torch.cat(accs) if accs else None,
        )

    def compute(self, payload: dict[str, torch.Tensor], ep: Episode, kernels: Kernels) -> ShardGrad:
        """The shard's meta-gradient for an already-built episode (used directly by benchmarks)."""
        forward, vg, view = kernels.forward, kernels.value_and_grad, self.step_view()
        if (
            kernels.meta_grad is not None
            and self.kind != "reptile"
            and self.rule.optimizer == "sgd"
            and self.rule.grad_clip is None
            and view is None
        ):
            return self._compute_by_hand(payload, ep, kernels, kernels.meta_grad)
        at = (lambda p, s: view(p, s)) if view is not None else (lambda p, s: p)  # noqa: E731
        t = ep.support_x.shape[0]
        leaves = stack_params(payload, t)
        params = {k: v for k, v in leaves.items() if not k.startswith(LR_PREFIX)}
        lrs = {k[len(LR_PREFIX) :]: v for k, v in leaves.items() if k.startswith(LR_PREFIX)} or None
        with torch.no_grad():
            pre = task_losses(forward(at(params, 0), ep.query_x), ep.query_y)
        acc = None
        if self.kind == "reptile":
            x, y = ep.support_x, ep.support_y
            if self.reptile_use_query:
                x, y = torch.cat([x, ep.query_x], 1), torch.cat([y, ep.query_y], 1)
            res = adapt(params, x, y, forward, self.rule, value_and_grad=vg, step_view=view)
            with torch.no_grad():
                post = task_losses(forward(at(res.params, self.rule.steps), x), y)
                grads = {k: params[k].detach() - res.params[k].detach() for k in params}
        else:
            res = adapt(
                params,
                ep.support_x,
                ep.support_y,
                forward,
                self.rule,
                lrs=lrs,
                create_graph=self.kind == "second_order",
                value_and_grad=vg,
                step_view=view,
            )
            out = forward(at(res.params, self.rule.steps), ep.query_x)
            post = task_losses(out, ep.query_y)
            grads = self._query_grads(post, res, leaves, lrs)
            post = post.detach()
            if not ep.query_y.is_floating_point():
                acc = task_accuracies(out.detach(), ep.query_y).cpu()
        result = self._reduce(
            grads, res.ok & torch.isfinite(pre) & torch.isfinite(post), pre, post, kernels.name
        )
        return dataclasses.replace(result, post_acc=acc)

    def _compute_by_hand(
        self, payload: dict[str, torch.Tensor], ep: Episode, kernels: Kernels, meta_grad: MetaGrad
    ) -> ShardGrad:
        """:meth:`compute` through the kernel's autograd-free meta-gradient (same math)."""
        t = ep.support_x.shape[0]
        stacked = {k: v.detach().unsqueeze(0).expand(t, *v.shape) for k, v in payload.items()}
        params = {k: v for k, v in stacked.items() if not k.startswith(LR_PREFIX)}
        lrs = {k[len(LR_PREFIX) :]: v for k, v in stacked.items() if k.startswith(LR_PREFIX)}
        names = tuple(params) if self.rule.names is None else self.rule.names
        r = meta_grad(
            params,
            (ep.support_x, ep.support_y),
            (ep.query_x, ep.query_y),
            self.rule.steps,
            self.rule.lr,
            names,
            lrs=lrs or None,
            first_order=self.kind == "first_order",
        )
        second = self.kind == "second_order"
        acc = None
        if not ep.query_y.is_floating_point():
            acc = task_accuracies(r.out, ep.query_y).cpu()
        if bool(r.all_finite):  # the common case: no task to drop
            sums = r.grad_sums | (
                {LR_PREFIX + n: g for n, g in r.lr_grad_sums.items()} if second else {}
            )
            return ShardGrad(
                grad_sum={k: v.cpu() for k, v in sums.items()},
                num_ok=t,
                pre_loss=r.pre.cpu(),
                post_loss=r.post.cpu(),
                ok=r.finite.cpu(),
                kernel=kernels.name,
                post_acc=acc,
            )
        grads = r.grads | ({LR_PREFIX + n: g for n, g in r.lr_grads.items()} if second else {})
        ok = r.finite & all_finite_per_task([r.adapted[n] for n in names])
        return dataclasses.replace(
            self._reduce(grads, ok, r.pre, r.post, kernels.name), post_acc=acc
        )

    def _query_grads(
        self, post: torch.Tensor, res: AdaptResult, leaves: Params, lrs: Params | None
    ) -> Params:
        if self.kind == "second_order":
            keys = list(leaves)
            gs = torch.autograd.grad(post.sum(), [leaves[k] for k in keys], allow_unused=True)
            return {
                k: torch.zeros_like(leaves[k]) if g is None else g
                for k, g in zip(keys, gs, strict=True)
            }
        # first order: gradient at the adapted parameters (unadapted names: at the initial ones)
        keys = list(res.params)
        gs = torch.autograd.grad(post.sum(), [res.params[k] for k in keys], allow_unused=True)
        return {
            k: torch.zeros_like(res.params[k]) if g is None else g
            for k, g in zip(keys, gs, strict=True)
        }

    @staticmethod
    def _reduce(
        grads: Params, ok: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, kernel: str
    ) -> ShardGrad:
        mask = ok & all_finite_per_task(list(grads.values()))
        if bool(mask.all()):
            grad_sum = {k: g.detach().sum(0).cpu() for k, g in grads.items()}
        else:  # index, not multiply: 0 * nan is nan
            grad_sum = {k: g.detach()[mask].sum(0).cpu() for k, g in grads.items()}
        return ShardGrad(
            grad_sum=grad_sum,
            num_ok=int(mask.sum()),
            pre_loss=pre.detach().cpu(),
            post_loss=post.detach().cpu(),
            ok=mask.cpu(),
            kernel=kernel,
        )


@dataclasses.dataclass
class ShardEval:
    """Per-task query curves of one evaluation shard (CPU)."""

    losses: torch.Tensor
    """``[n, steps + 1]`` query loss before and after each inner step."""
    accs: torch.Tensor | None
    """``[n, steps + 1]`` query accuracy (classification) or ``None``."""


@dataclasses.dataclass(frozen=True)
class EvalJob:
    """Worker job: adapt on support with ``rule`` and record query loss/accuracy per step."""

    model: ModelSpec
    rule: InnerRule
    kernel: Kernel = "auto"
    per_step_bn: int = 0
    """As :attr:`MetaGradJob.per_step_bn` (steps beyond the last copy reuse it)."""

    def __call__(
        self, payload: dict[str, torch.Tensor], specs: Sequence[TaskSpec], device: torch.device
    ) -> ShardEval:
        ep = build_episode(specs, device)
        payload = {k: v.to(device) for k, v in payload.items()}
        kernels = make_kernels(self.model, self.kernel, device)
        try:
            res = self._run(payload, ep, kernels)
        except RuntimeError as e:
            if kernels.name == "loop":
                raise
            log.warning(
                "vectorised (%s) evaluation failed (%s); falling back to a per-task loop",
                kernels.name,
                e,
            )
            res = self._run(payload, ep, make_kernels(self.model, "loop", device))
        assert res.query_losses is not None
        accs = None if res.query_accs is None else res.query_accs.cpu()
        return ShardEval(losses=res.query_losses.cpu(), accs=accs)

    def _run(self, payload: dict[str, torch.Tensor], ep: Episode, kernels: Kernels) -> AdaptResult:
        leaves = stack_params(payload, ep.support_x.shape[0])
        params = {k: v for k, v in leaves.items() if not k.startswith(LR_PREFIX)}
        lrs = {
            k[len(LR_PREFIX) :]: v.detach() for k, v in leaves.items() if k.startswith(LR_PREFIX)
        } or None
        return adapt(
            params,
            ep.support_x,
            ep.support_y,
            kernels.forward,
            self.rule,
            lrs=lrs,
            query=(ep.query_x, ep.query_y),
            value_and_grad=kernels.value_and_grad,
            step_view=per_step_view(self.model.bn_names(), self.per_step_bn, BN_PREFIX)
            if self.per_step_bn
            else None,
        )

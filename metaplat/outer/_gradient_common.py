"""What MAML, FOMAML, Reptile, Meta-SGD and ANIL share: config fields, state, the outer step.

The outer step of every gradient-based method is the same algorithm box::

    specs  <- sample meta_batch_size tasks of the train split        (seeded by iteration)
    shards <- pool.map(MetaGradJob, meta-params, specs)              (inner loops on workers)
    g      <- sum of shard gradient sums / number of finite tasks     (task order)
    θ      <- Adam (or SGD) step with g

Methods differ only in the meta-parameters they start from, the inner rule (which names
adapt, which optimizer) and the kind of meta-gradient; each method module sets those three.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, ClassVar, Literal

import torch

from metaplat.estimators.backprop import (
    BN_PREFIX,
    EvalJob,
    GradKind,
    Kernel,
    MetaGradJob,
    ModelSpec,
    ShardEval,
    ShardGrad,
)
from metaplat.inner.adapt import InnerRule, Params
from metaplat.optim.functional import AdamState, adam_init, adam_update, sgd_update
from metaplat.outer.base import Metrics, OuterLoop
from metaplat.seeding import derive_seed, rng
from metaplat.stats import mean_ci95
from metaplat.tasks.base import Split, TaskFamily
from metaplat.workers.base import Pool

log = logging.getLogger(__name__)

_MODELS = ("mlp", "conv4")
_OUTER_OPTIMIZERS = ("adam", "sgd")
_KERNELS = {"mlp": ("auto", "bmm", "vmap"), "conv4": ("auto", "grouped", "vmap")}


def _check(cond: bool, field: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{field}={value!r} is not allowed; {field} must be {allowed}")


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    """Fields every gradient-based few-shot method understands (paper defaults: MAML sinusoid)."""

    meta_batch_size: int = 25
    """Tasks per outer iteration."""
    inner_lr: float = 0.01
    """Inner-loop step size α (Meta-SGD: the initial value of every learned rate)."""
    inner_steps: int = 1
    """Inner gradient steps during meta-training."""
    eval_inner_steps: int = 10
    """Inner gradient steps when evaluating on fresh tasks (the curve reports every step)."""
    outer_lr: float = 1e-3
    """Outer (meta) step size β."""
    outer_optimizer: Literal["adam", "sgd"] = "adam"
    """Optimizer of the meta-parameters."""
    first_order: bool = False
    """Drop second derivatives: gradient of the query loss at the adapted parameters."""
    vectorize: bool = True
    """Batch the tasks of a shard with one vectorised forward; ``False``: one task at a time."""
    kernel: Literal["auto", "bmm", "grouped", "vmap"] = "auto"
    """How a vectorised shard is computed: ``vmap`` (``vmap(functional_call)``, any model),
    ``bmm`` (hand-batched MLP with an analytic inner gradient, ~1.7x faster than ``vmap`` on
    CPU), ``grouped`` (Conv4 as grouped convolutions, ~0.6x ``vmap``'s memory); ``auto``
    picks ``bmm`` for mlp and ``grouped`` for conv4."""
    inner_grad_clip: float | None = None
    """Clip each task's inner gradient to this global L2 norm (``None``: no clipping)."""
    model: Literal["mlp", "conv4"] = "mlp"
    """Learner: ReLU MLP or the 4-block conv net (input/output sizes come from the family)."""
    hidden: tuple[int, ...] = (40, 40)
    """MLP hidden sizes."""
    conv_channels: int = 64
    """Conv4 filters per block."""
    eval_tasks: int = 100
    """Default number of fresh tasks scored by ``evaluate``."""
    eval_batch_size: int | None = None
    """Tasks per pool round in ``evaluate`` (bounds worker memory); ``None``: 250 for the MLP,
    20 for Conv4 (a round of 250 20-way 5-shot glyph episodes holds 50k images' activations,
    over 20 GB)."""
    tasks_per_pass: int | None = None
    """Tasks a worker vectorises per backward pass (``None``: its whole shard); bounds memory."""
    per_step_bn: bool = False
    """MAML++ per-step BatchNorm: one meta-learned copy of the BN weights/biases per inner step
    (not adapted in the inner loop); needs a model with BatchNorm (conv4)."""
    compile: bool = False
    """``torch.compile`` the MLP's hand-written meta-gradient (kernel ``bmm``): about 2.5x
    faster per iteration on CPU after a one-off compile of ~20 s per worker and shard shape
    (needs a C++ compiler; without one it warns and runs eagerly). Worth it for long runs."""

    def __post_init__(self) -> None:
        for f in (
            "meta_batch_size",
            "inner_steps",
            "conv_channels",
            "eval_tasks",
        ):
            v = getattr(self, f)
            _check(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1, f, v, "an integer >= 1"
            )
        _check(
            isinstance(self.eval_inner_steps, int) and self.eval_inner_steps >= 0,
            "eval_inner_steps",
            self.eval_inner_steps,
            "an integer >= 0",
        )
        for f in ("inner_lr", "outer_lr"):
            v = getattr(self, f)
            _check(
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0,
                f,
                v,
                "a finite number > 0",
            )
        _check(
            self.outer_optimizer in _OUTER_OPTIMIZERS,
            "outer_optimizer",
            self.outer_optimizer,
            f"one of {', '.join(_OUTER_OPTIMIZERS)}",
        )
        _check(self.model in _MODELS, "model", self.model, f"one of {', '.join(_MODELS)}")
        c = self.inner_grad_clip
        _check(
            c is None or (isinstance(c, (int, float)) and c > 0),
            "inner_grad_clip",
            c,
            "null or a number > 0",
        )
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _check(
            all(isinstance(h, int) and h >= 1 for h in self.hidden),
            "hidden",
            self.hidden,
            "a list of integers >= 1",
        )
        _check(
            self.kernel in _KERNELS[self.model],
            "kernel",
            self.kernel,
            f"one of {', '.join(_KERNELS[self.model])} for model {self.model!r}",
        )
        for f in ("eval_batch_size", "tasks_per_pass"):
            n = getattr(self, f)
            _check(
                n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 1),
                f,
                n,
                "null or an integer >= 1",
            )
        _check(
            not self.compile
            or (self.model == "mlp" and self.vectorize and self.kernel in ("auto", "bmm")),
            "compile",
            self.compile,
            "false unless model is mlp, vectorize is true and kernel is auto or bmm",
        )
        _check(
            not self.per_step_bn or self.model == "conv4",
            "per_step_bn",
            self.per_step_bn,
            "false unless model is conv4 (the MLP has no BatchNorm)",
        )


@dataclasses.dataclass
class GradientState:
    """Meta-parameters and the outer optimizer's state (tensors and ints: loads weights-only)."""

    params: dict[str, torch.Tensor]
    """Meta-parameters: the initial weights (and Meta-SGD's ``lr.<name>`` rates)."""
    opt_m: dict[str, torch.Tensor]
    """Adam first moments (empty for SGD)."""
    opt_v: dict[str, torch.Tensor]
    """Adam second moments (empty for SGD)."""
    opt_step: int
    """Outer optimizer steps taken."""
    iteration: int
    """Outer iterations done (iteration ``i`` samples its tasks with ``rng(seed, "train", i)``)."""


def _sum_in_order(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Left-to-right sum (shard results in task order, so a seed reproduces bit for bit)."""
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


def model_spec_for(family: TaskFamily, config: GradientConfig) -> ModelSpec:
    """The learner for ``family``: input shape and output size read off one built episode."""
    ep = family.build(family.spec(0, "train"))  # seed 0 belongs to the train split
    in_shape = tuple(ep.support_x.shape[1:])
    if ep.support_y.is_floating_point():
        out_dim = math.prod(ep.support_y.shape[1:]) or 1
    else:
        out_dim = int(family.config().get("num_ways", int(ep.support_y.max()) + 1))
    return ModelSpec(
        kind=config.model,
        in_shape=in_shape,
        out_dim=out_dim,
        hidden=config.hidden,
        channels=config.conv_channels,
    )


class GradientMethod(OuterLoop[GradientConfig, GradientState]):
    """The shared outer loop; subclasses set ``Config`` and override the three hooks below."""

    Config: ClassVar[type] = GradientConfig
    State: ClassVar[type] = GradientState
    task_kinds: ClassVar[tuple[str, ...]] = ("supervised",)

    def __init__(self, config: GradientConfig, family: TaskFamily, pool: Pool, seed: int):
        if not isinstance(config, self.Config):
            raise TypeError(
                f"method {self.name!r} needs a {self.Config.__qualname__}, "
                f"got {type(config).__name__}"
            )
        super().__init__(config, family, pool, seed)
        self.model = model_spec_for(family, config)
        kernel: Kernel = config.kernel if config.vectorize else "loop"
        bn_sets = config.inner_steps + 1 if config.per_step_bn else 0
        self.train_job = MetaGradJob(
            self.model,
            self.inner_rule(train=True),
            self.grad_kind(),
            kernel,
            per_step_bn=bn_sets,
            tasks_per_pass=config.tasks_per_pass or 0,
            compile=config.compile,
        )
        self.eval_job = EvalJob(
            self.model, self.inner_rule(train=False), kernel, per_step_bn=bn_sets
        )

    # -- hooks ---------------------------------------------------------------------------
    def grad_kind(self) -> GradKind:
        return "first_order" if self.config.first_order else "second_order"

    def inner_rule(self, train: bool) -> InnerRule:
        c = self.config
        names = None
        if c.per_step_bn:  # the per-step BN copies are meta-learned only
            names = tuple(n for n in self.model.param_names() if n not in self.model.bn_names())
        return InnerRule(
            steps=c.inner_steps if train else c.eval_inner_steps,
            lr=c.inner_lr,
            names=names,
            grad_clip=c.inner_grad_clip,
        )

    def init_meta_params(self) -> Params:
        params = self.model.init_params(derive_seed(self.seed, "init"))
        if not self.config.per_step_bn:
            return params
        bn = self.model.bn_names()
        copies = {
            f"{BN_PREFIX}{s}.{n}": params[n].clone()
            for s in range(self.config.inner_steps + 1)
            for n in bn
        }
        return {k: v for k, v in params.items() if k not in bn} | copies

    # -- the contract ----------------------------------------------------------------------
    def init(self) -> GradientState:
        params = self.init_meta_params()
        if self.config.outer_optimizer == "adam":
            a = adam_init(params)
            return GradientState(params, a.m, a.v, 0, 0)
        return GradientState(params, {}, {}, 0, 0)

    def step(self, state: GradientState) -> tuple[GradientState, Metrics]:
        c = self.config
        specs = self.family.sample(
            rng(self.seed, "train", state.iteration), "train", c.meta_batch_size
        )
        shards: list[ShardGrad] = self.pool.map(self.train_job, state.params, specs)
        num_ok = sum(s.num_ok for s in shards)
        if num_ok == 0:
            raise RuntimeError(
                f"{self.name}: all {len(specs)} tasks of iteration {state.iteration} had "
                f"non-finite losses or gradients; lower inner_lr ({c.inner_lr}) or outer_lr "
                f"({c.outer_lr}), or set inner_grad_clip"
            )
        grad = {k: _sum_in_order([s.grad_sum[k] for s in shards]) / num_ok for k in state.params}
        ok = torch.cat([s.ok for s in shards])
        pre = torch.cat([s.pre_loss for s in shards])[ok]
        post = torch.cat([s.post_loss for s in shards])[ok]
        accs = [s.post_acc for s in shards if s.post_acc is not None]
        metrics_acc = {"train/post_acc": float(torch.cat(accs)[ok].mean())} if accs else {}
        new = self.apply_update(state, grad)
        gnorm = _sum_in_order([g.pow(2).sum() for g in grad.values()]).sqrt()
        metrics = {
            "train/pre_loss": float(pre.mean()),
            "train/post_loss": float(post.mean()),
            "train/failed_tasks": float(len(specs) - num_ok),
            "train/meta_grad_norm": float(gnorm),
            "train/iteration": float(new.iteration),
        } | metrics_acc
        return new, metrics

    def apply_update(self, state: GradientState, grad: Params) -> GradientState:
        c = self.config
        if c.outer_optimizer == "sgd":
            return GradientState(
                sgd_update(state.params, grad, c.outer_lr),
                {},
                {},
                state.opt_step + 1,
                state.iteration + 1,
            )
        params, a = adam_update(
            state.params, grad, AdamState(state.opt_step, state.opt_m, state.opt_v), c.outer_lr
        )
        return GradientState(params, a.m, a.v, a.step, state.iteration + 1)

    def evaluate(self, state: GradientState, split: Split, num_tasks: int | None = None) -> Metrics:
        c = self.config
        n = num_tasks or c.eval_tasks
        specs = self.family.sample(rng(self.seed, "eval", split), split, n)
        parts: list[ShardEval] = []
        size = c.eval_batch_size or (250 if c.model == "mlp" else 20)
        for i in range(0, n, size):
            parts += self.pool.map(self.eval_job, state.params, specs[i : i + size])
        losses = torch.cat([p.losses for p in parts])  # [n, steps + 1]
        accs = (
            None
            if parts[0].accs is None
            else torch.cat([p.accs for p in parts if p.accs is not None])
        )
        ok = torch.isfinite(losses).all(1)
        losses = losses[ok]
        out: Metrics = {f"{split}/failed_tasks": float((~ok).sum()), f"{split}/num_tasks": float(n)}
        out[f"{split}/pre_loss"] = float(losses[:, 0].mean())
        out[f"{split}/post_loss"], out[f"{split}/post_loss_ci95"] = mean_ci95(losses[:, -1].numpy())
        if accs is None:
            out[f"{split}/pre_mse"] = out[f"{split}/pre_loss"]
            out[f"{split}/post_mse"], out[f"{split}/post_mse_ci95"] = mean_ci95(
                losses[:, -1].numpy()
            )
            curve, key = losses.mean(0), "mse"
        else:
            accs = accs[ok]
            out[f"{split}/pre_acc"] = float(accs[:, 0].mean())
            out[f"{split}/post_acc"], out[f"{split}/post_acc_ci95"] = mean_ci95(accs[:, -1].numpy())
            curve, key = accs.mean(0), "acc"
        for k in range(1, losses.shape[1]):
            out[f"{split}/{key}_step{k}"] = float(curve[k])
        return out

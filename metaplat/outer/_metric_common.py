"""What ProtoNets and Matching Networks share: config, state, embedding nets, worker job, Adam.

Both methods meta-learn an *embedding* (no inner optimisation): a task's "adaptation" is a
closed-form function of its support embeddings (prototypes, or an attention memory). One
outer iteration therefore is:

1. sample ``meta_batch_size`` meta-train specs (seeded by ``(seed, "train", iteration)``);
2. the pool runs :class:`EpisodeJob` on shards of them: each worker builds its episodes on
   its device, evaluates the per-task loss for all tasks of the shard at once with
   ``torch.func.vmap`` over ``functional_call``, and returns the *summed* gradient plus the
   per-task losses and accuracies;
3. the outer loop adds the shard gradients in task order, divides by the number of tasks and
   takes one Adam step (Snell et al. and Vinyals et al. both use Adam, lr 1e-3).

A task's model is an ``nn.Module`` whose ``forward(support_x, support_y, query_x, num_ways)``
returns query logits ``[Nq, num_ways]`` (log-probabilities up to a constant); the loss is the
query cross-entropy. Support and query are embedded in *one* call, so the backbone's
BatchNorm (batch statistics) normalises over the whole episode, as Snell et al.'s released
code does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metaplat.evaluation import (
    DEFAULT_NUM_TASKS,
    PerTask,
    build_batch,
    eval_specs,
    run_per_task,
    summarize,
)
from metaplat.nn.backbones import Conv4, mlp
from metaplat.optim.functional import AdamState, adam_update
from metaplat.outer.base import Metrics, OuterLoop
from metaplat.seeding import derive_seed, rng
from metaplat.tasks.base import Episode, Split, TaskFamily, TaskSpec
from metaplat.tasks.registry import make_family
from metaplat.workers.base import Pool

Params = dict[str, Tensor]
Backbone = Literal["auto", "conv4", "mlp"]


# -- config and state ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MetricConfig:
    """Settings shared by the metric-based methods."""

    meta_batch_size: int = 8
    """Episodes per outer iteration."""
    outer_lr: float = 1e-3
    """Adam learning rate of the embedding (both papers: 1e-3)."""
    lr_halve_every: int | None = None
    """Halve the learning rate every this many outer iterations (Snell et al.: every 2000
    episodes); ``None``: constant."""
    backbone: Backbone = "auto"
    """Embedding net: ``conv4`` for images ``[C, H, W]``, ``mlp`` for vectors; ``auto`` picks."""
    hidden: int = 64
    """Conv4 channels per block, or the MLP's hidden width (two hidden layers)."""
    embed_dim: int = 64
    """Output width of the MLP embedding (Conv4's is fixed by its channels and image size)."""
    train_ways: int | None = None
    """Ways of meta-training episodes if different from the family's (ProtoNets train 60-way
    on Omniglot); needs a family with a ``num_ways`` config key. ``None``: the family's."""
    eval_batch_size: int = 50
    """Episodes per ``pool.map`` call during evaluation (bounds memory, not results)."""
    vmap_chunk_size: int | None = None
    """Tasks vectorised at once inside a worker (``vmap(chunk_size=...)``). ``None``: auto --
    all of a shard's tasks on an accelerator, one at a time on CPU (see :func:`auto_chunk`)."""

    def __post_init__(self) -> None:
        _check(self.meta_batch_size >= 1, "meta_batch_size", self.meta_batch_size, "an int >= 1")
        _check(self.outer_lr > 0, "outer_lr", self.outer_lr, "a float > 0")
        _check(
            self.lr_halve_every is None or self.lr_halve_every >= 1,
            "lr_halve_every",
            self.lr_halve_every,
            "None or an int >= 1",
        )
        _check(
            self.backbone in ("auto", "conv4", "mlp"),
            "backbone",
            self.backbone,
            "'auto', 'conv4' or 'mlp'",
        )
        _check(self.hidden >= 1, "hidden", self.hidden, "an int >= 1")
        _check(self.embed_dim >= 1, "embed_dim", self.embed_dim, "an int >= 1")
        _check(
            self.train_ways is None or self.train_ways >= 2,
            "train_ways",
            self.train_ways,
            "None or an int >= 2",
        )
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "an int >= 1")
        _check(
            self.vmap_chunk_size is None or self.vmap_chunk_size >= 1,
            "vmap_chunk_size",
            self.vmap_chunk_size,
            "None or an int >= 1",
        )


def _check(ok: bool, field: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"config field {field!r} = {value!r} is invalid; allowed: {allowed}")


@dataclasses.dataclass
class MetricState:
    """Embedding parameters, Adam moments and the iteration counter."""

    params: dict[str, Tensor]
    adam_m: dict[str, Tensor]
    adam_v: dict[str, Tensor]
    iteration: int = 0


# -- embedding nets ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EmbeddingSpec:
    """A picklable description of an embedding net; ``build()`` makes it (uninitialised seed)."""

    kind: Literal["conv4", "mlp"]
    in_shape: tuple[int, ...]
    hidden: int
    embed_dim: int

    def build(self) -> nn.Module:
        if self.kind == "conv4":
            c, h, _ = self.in_shape
            return Conv4(in_channels=c, hidden=self.hidden, image_size=h)
        return nn.Sequential(
            nn.Flatten(), mlp(math.prod(self.in_shape), [self.hidden] * 2, self.embed_dim)
        )


def embedding_spec(config: MetricConfig, x_shape: tuple[int, ...]) -> EmbeddingSpec:
    """Choose the backbone for inputs of shape ``x_shape`` (one example, no batch dim)."""
    kind = config.backbone
    if kind == "auto":
        kind = "conv4" if len(x_shape) == 3 else "mlp"
    if kind == "conv4" and (len(x_shape) != 3 or min(x_shape[1:]) < 16):
        raise ValueError(f"backbone 'conv4' needs images [C, H, W] with H, W >= 16; got {x_shape}")
    return EmbeddingSpec(kind, tuple(x_shape), config.hidden, config.embed_dim)


class ModelSpec(Protocol):
    """Anything picklable and hashable that builds the per-task model."""

    def build(self) -> nn.Module: ...

    def __hash__(self) -> int: ...


@functools.lru_cache(maxsize=16)
def _model(spec: ModelSpec, device: str) -> nn.Module:
    # The module is only a template for functional_call; its own tensors are never used.
    return spec.build().to(device)


# -- the worker job ----------------------------------------------------------------------
def episode_loss(
    model: nn.Module, params: Params, ep: Episode, num_ways: int, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Per-task query cross-entropy and accuracy ``([T], [T])`` of a stacked batch ``ep``.

    Tasks are vmapped ``chunk_size`` at a time (``None``: all at once); ``chunk_size=1`` runs
    a per-task loop instead, which gives the same values.
    """

    def task(p: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Tensor, Tensor]:
        logits = functional_call(model, p, (sx, sy, qx), {"num_ways": num_ways})
        return F.cross_entropy(logits, qy), (logits.argmax(-1) == qy).float().mean()

    if chunk_size == 1:  # a plain loop: same values, without vmap's batching overhead
        out = [
            task(params, *(getattr(ep, f)[t] for f in _FIELDS))
            for t in range(ep.support_x.shape[0])
        ]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])
    return vmap(task, in_dims=(None, 0, 0, 0, 0), chunk_size=chunk_size)(
        params, ep.support_x, ep.support_y, ep.query_x, ep.query_y
    )


_FIELDS = ("support_x", "support_y", "query_x", "query_y")


def auto_chunk(chunk_size: int | None, device: torch.device, conv: bool) -> int | None:
    """The vmap chunk size to use on ``device`` when the config says ``chunk_size``.

    On CPU, vmapping Conv4 over tasks was 1.8-3x *slower* than a per-task loop (BatchNorm and
    ReLU under vmap 5-6x slower than unbatched; 2-core dev machine,
    ``benchmarks/metric_vectorisation.py``), so conv nets on CPU default to the loop
    (``chunk_size=1``). Small MLPs are faster vmapped everywhere (the loop's per-task
    overhead dominates), and on GPUs batching is what fills the device.
    """
    if chunk_size is not None:
        return chunk_size
    return 1 if conv and device.type == "cpu" else None


@dataclasses.dataclass(frozen=True)
class EpisodeJob:
    """Worker job: the summed meta-gradient (``grad=True``) or per-task eval metrics of a shard.

    ``payload`` is the embedding's params (CPU). With ``grad=True`` returns
    ``{"grad": {name: summed grad}, "loss": [per task], "acc": [per task]}``; otherwise the
    harness's per-task dict ``{"post_loss": [...], "post_acc": [...]}``.
    """

    model: ModelSpec
    grad: bool
    chunk_size: int | None = None
    conv: bool = False
    """Whether the embedding is convolutional (only used by :func:`auto_chunk`)."""

    def __call__(self, payload: Params, specs: Sequence[TaskSpec], device: torch.device) -> Any:
        ep = build_batch(specs, device)
        model = _model(self.model, str(device))
        params = {k: v.to(device) for k, v in payload.items()}
        # All classes appear in an N-way K-shot support set.
        num_ways = int(ep.support_y.max()) + 1
        chunk = auto_chunk(self.chunk_size, torch.device(device), self.conv)
        if not self.grad:
            with torch.no_grad():
                loss, acc = episode_loss(model, params, ep, num_ways, chunk)
            return {"post_loss": loss.cpu().tolist(), "post_acc": acc.cpu().tolist()}

        def total(p: Params) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            loss, acc = episode_loss(model, p, ep, num_ways, chunk)
            return loss.sum(), (loss.detach(), acc.detach())

        g, (loss, acc) = grad(total, has_aux=True)(params)
        return {
            "grad": {k: v.cpu() for k, v in g.items()},
            "loss": loss.cpu().tolist(),
            "acc": acc.cpu().tolist(),
        }


# -- the shared outer loop ---------------------------------------------------------------
class MetricOuterLoop(OuterLoop[MetricConfig, MetricState]):
    """Init / step / evaluate for a method defined by its per-task model (``model_spec``)."""

    State: ClassVar[type] = MetricState

    def __init__(self, config: MetricConfig, family: TaskFamily, pool: Pool, seed: int):
        super().__init__(config, family, pool, seed)
        probe = family.build(family.spec(0, "train"))
        if probe.support_y.dtype != torch.int64:
            raise ValueError(
                f"method {self.name!r} needs a classification family (int64 class labels); "
                f"{family.name!r} has {probe.support_y.dtype} targets"
            )
        self.train_family = self._train_family(config, family)
        self.model = self.model_spec(config, tuple(probe.support_x.shape[1:]))

    @staticmethod
    def _train_family(config: MetricConfig, family: TaskFamily) -> TaskFamily:
        if config.train_ways is None:
            return family
        fam_cfg = family.config()
        if "num_ways" not in fam_cfg:
            raise ValueError(
                f"config field 'train_ways' needs a family with a 'num_ways' "
                f"setting; {family.name!r} has {sorted(fam_cfg)}"
            )
        return make_family(family.name, fam_cfg | {"num_ways": config.train_ways})

    def model_spec(self, config: MetricConfig, x_shape: tuple[int, ...]) -> ModelSpec:
        raise NotImplementedError

    def _job(self, grad: bool) -> EpisodeJob:
        conv = getattr(getattr(self.model, "embedding", None), "kind", None) == "conv4"
        return EpisodeJob(self.model, grad, self.config.vmap_chunk_size, conv)

    def init(self) -> MetricState:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init") % 2**63)
            module = self.model.build()
        params = {k: v.detach().clone() for k, v in module.named_parameters()}
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return MetricState(params, zeros, {k: z.clone() for k, z in zeros.items()}, 0)

    def step(self, state: MetricState) -> tuple[MetricState, Metrics]:
        cfg = self.config
        specs = self.train_family.sample(
            rng(self.seed, "train", state.iteration), "train", cfg.meta_batch_size
        )
        job = self._job(grad=True)
        shards = self.pool.map(job, state.params, specs)
        # Sum in task (shard) order: the result does not depend on the number of workers.
        g = {k: torch.zeros_like(v) for k, v in state.params.items()}
        losses: list[float] = []
        accs: list[float] = []
        for res in shards:
            for k in g:
                g[k] += res["grad"][k]
            losses += res["loss"]
            accs += res["acc"]
        g = {k: v / len(specs) for k, v in g.items()}
        t = state.iteration + 1
        params, adam = adam_update(
            state.params, g, AdamState(state.iteration, state.adam_m, state.adam_v), self.lr(t)
        )
        m, v = adam.m, adam.v
        gnorm = math.sqrt(sum(float((x * x).sum()) for x in g.values()))
        metrics = {
            "train/loss": float(np.mean(losses)),
            "train/acc": float(np.mean(accs)),
            "train/grad_norm": gnorm,
            "train/iteration": float(t),
            "train/lr": self.lr(t),
        }
        return MetricState(params, m, v, t), metrics

    def lr(self, t: int) -> float:
        """The learning rate of outer iteration ``t`` (counted from 1)."""
        every = self.config.lr_halve_every
        return self.config.outer_lr * (0.5 ** ((t - 1) // every) if every else 1.0)

    def per_task(self, state: MetricState, split: Split, num_tasks: int) -> PerTask:
        """Per-task ``post_loss`` / ``post_acc`` on the run's fixed evaluation episodes."""
        specs = eval_specs(self.family, split, num_tasks, self.seed)
        job = self._job(grad=False)
        return run_per_task(self.pool, job, state.params, specs, self.config.eval_batch_size)

    def evaluate(self, state: MetricState, split: Split, num_tasks: int | None = None) -> Metrics:
        """``{split}/post_acc``, ``{split}/post_loss`` with ``_ci95`` half-widths."""
        return summarize(split, self.per_task(state, split, num_tasks or DEFAULT_NUM_TASKS))

    def load_state_dict(self, d: dict[str, Any]) -> MetricState:
        return MetricState(
            dict(d["params"]), dict(d["adam_m"]), dict(d["adam_v"]), int(d["iteration"])
        )

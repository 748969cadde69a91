"""Child training: the reward of one sampled program.

NAS child: build the program's network, train it ``steps`` minibatch steps with a fixed rule
(Adam by default), reward = validation metric (``accuracy``, or clipped ``r2`` for regression)
raised to ``reward_power`` (Zoph & Le cube the accuracy). NOS child: train a *fixed* small
network with the compiled rule at each of ``lrs``; reward = the best final validation metric
over those rates (Bello et al. try each rule at several rates).

A child that produces a non-finite loss, exceeds ``time_budget_s`` or raises gets
``worst_reward`` and a ``status``/``reason``; it never raises into the search.
Training is functional (``torch.func.functional_call`` over a params dict, the rule from
``metaplat.optim.compile``), so NAS and NOS children share one loop.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from typing import Any

import torch
from torch.func import functional_call

from metaplat.optim import dsl
from metaplat.optim.compile import FunctionalOptimizer, apply_updates, compile_program
from metaplat.search.data import ChildData, DataConfig, make_data
from metaplat.search.nas_space import build_network
from metaplat.search.nos_space import program_of
from metaplat.seeding import derive_seed

log = logging.getLogger(__name__)

METRICS = ("accuracy", "r2")


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """How a child is trained and scored."""

    steps: int = 100
    """Minibatch steps per training run."""
    batch_size: int = 32
    """Minibatch size."""
    optimizer: str = "adam"
    """Named rule (``dsl.NAMED``) that trains NAS children."""
    lr: float = 0.01
    """Learning rate of NAS children."""
    lrs: tuple[float, ...] = (0.1, 0.01, 0.001)
    """Learning rates each NOS rule is tried at; the best final metric counts."""
    metric: str = "accuracy"
    """``accuracy`` (classification) or ``r2`` (regression, clipped to [0, 1])."""
    reward_power: float = 1.0
    """reward = metric ** reward_power (3 in Zoph & Le)."""
    worst_reward: float = 0.0
    """Reward of a child that diverges, errors or runs out of time."""
    time_budget_s: float = 10.0
    """Wall-clock budget of one child (all of its learning rates)."""
    nos_network: dict[str, Any] | None = None
    """The fixed NAS program NOS children train (``None``: a 2x32 ReLU MLP for vectors, a
    two-layer 3x3 convnet for images)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """The child task."""

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", DataConfig.from_dict(self.data))
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )
        if self.optimizer not in dsl.NAMED:
            raise ValueError(
                f"optimizer {self.optimizer!r} not allowed; allowed: {list(dsl.NAMED)}"
            )
        if not self.lr > 0 or not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"lr and lrs must be > 0, got lr={self.lr}, lrs={list(self.lrs)}")
        object.__setattr__(self, "lrs", tuple(float(x) for x in self.lrs))
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} not allowed; allowed: {', '.join(METRICS)}")
        if not self.reward_power > 0 or not self.time_budget_s > 0:
            raise ValueError("reward_power and time_budget_s must be > 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ChildConfig:
        d = dict(d or {})
        allowed = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - allowed)
        if bad:
            raise ValueError(
                f"unknown child field {bad[0]!r}; allowed: {', '.join(sorted(allowed))}"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"lrs": list(self.lrs)}


@dataclasses.dataclass(frozen=True)
class ChildResult:
    """Outcome of one child: ``status`` is ok | nan | timeout | error."""

    reward: float
    status: str
    reason: str
    metrics: dict[str, float]


class _Failed(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@functools.lru_cache(maxsize=8)
def _cached_data(key: str) -> ChildData:
    return make_data(DataConfig.from_dict(json.loads(key)))


def child_data(config: DataConfig) -> ChildData:
    """``make_data(config)``, cached per process (children of one search share the data)."""
    return _cached_data(json.dumps(dataclasses.asdict(config), sort_keys=True))


def _loss(out: torch.Tensor, y: torch.Tensor, classification: bool) -> torch.Tensor:
    if classification:
        return torch.nn.functional.cross_entropy(out, y)
    return ((out - y.reshape(out.shape)) ** 2).mean()


def _score(out: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    if metric == "accuracy":
        return float((out.argmax(-1) == y).float().mean())
    y = y.reshape(out.shape)
    r2 = 1.0 - float(((out - y) ** 2).mean()) / max(float(y.var()), 1e-12)
    return min(max(r2, 0.0), 1.0)


def train_network(
    model: torch.nn.Module,
    data: ChildData,
    opt: FunctionalOptimizer,
    config: ChildConfig,
    seed: int,
    deadline: float,
) -> tuple[float, float]:
    """Train ``model``'s parameters (functionally) and return (val metric, val loss).

    Raises ``_Failed`` on a non-finite loss or when ``time.perf_counter()`` passes ``deadline``.
    """
    cls = data.num_classes is not None
    params = {k: v.detach() for k, v in model.named_parameters()}
    state = opt.init(params)
    g = torch.Generator().manual_seed(derive_seed(seed, "batches") % 2**63)
    n = data.train_x.shape[0]
    for step in range(config.steps):
        idx = torch.randint(n, (min(config.batch_size, n),), generator=g)
        p = {k: v.requires_grad_(True) for k, v in params.items()}
        loss = _loss(functional_call(model, p, (data.train_x[idx],)), data.train_y[idx], cls)
        if not math.isfinite(float(loss.detach())):
            raise _Failed("nan", f"non-finite training loss at step {step}")
        grads = dict(zip(p, torch.autograd.grad(loss, list(p.values())), strict=True))
        updates, state = opt.update(grads, state, params)
        params = apply_updates(params, updates)
        if time.perf_counter() > deadline:
            raise _Failed("timeout", f"time budget {config.time_budget_s}s exceeded at step {step}")
    with torch.no_grad():
        out = functional_call(model, params, (data.val_x,))
        val_loss = float(_loss(out, data.val_y, cls))
    if not math.isfinite(val_loss):
        raise _Failed("nan", "non-finite validation loss")
    return _score(out, data.val_y, config.metric), val_loss


def _build(program: dict[str, Any], data: ChildData, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng():  # child init is seeded without touching the caller's RNG
        torch.manual_seed(derive_seed(seed, "init") % 2**63)
        return build_network(program, data.in_shape, data.out_dim)


def default_nos_network(data: ChildData) -> dict[str, Any]:
    if len(data.in_shape) == 3:
        conv = {"filter_h": 3, "filter_w": 3, "stride": 2, "skips": []}
        return {"kind": "conv", "layers": [conv | {"filters": 8}, conv | {"filters": 16}]}
    return {"kind": "mlp", "layers": [{"width": 32, "activation": "relu"}] * 2}


def run_child(program: dict[str, Any], config: ChildConfig, seed: int) -> ChildResult:
    """Train the child ``program`` describes and score it; never raises."""
    t0 = time.perf_counter()
    deadline = t0 + config.time_budget_s
    metrics: dict[str, float] = {}
    try:
        data = child_data(config.data)
        if program.get("kind") == "nos":
            rule = program_of(program)
            net = config.nos_network or default_nos_network(data)
            best = -math.inf
            for lr in config.lrs:
                model = _build(net, data, seed)  # same init for every rate
                try:
                    score, loss = train_network(
                        model, data, compile_program(rule, lr, seed=seed), config, seed, deadline
                    )
                except _Failed as f:
                    if f.status == "timeout":
                        raise
                    metrics[f"child/lr{lr:g}_failed"] = 1.0
                    continue
                metrics[f"val/metric_lr{lr:g}"] = score
                if score > best:
                    best, metrics["val/loss"], metrics["child/best_lr"] = score, loss, lr
            if best == -math.inf:
                raise _Failed("nan", f"diverged at every learning rate {list(config.lrs)}")
            metric = best
        else:
            model = _build(program, data, seed)
            metrics["child/num_params"] = float(sum(p.numel() for p in model.parameters()))
            opt = compile_program(dsl.NAMED[config.optimizer], config.lr, seed=seed)
            metric, metrics["val/loss"] = train_network(model, data, opt, config, seed, deadline)
        metrics[f"val/{config.metric}"] = metric
        status, reason, reward = "ok", "", metric**config.reward_power
    except _Failed as f:
        status, reason, reward = f.status, f.reason, config.worst_reward
    except Exception as e:  # noqa: BLE001 -- a broken child must not stop the search
        status, reason, reward = "error", f"{type(e).__name__}: {e}", config.worst_reward
    if status != "ok":
        log.info("child failed (%s): %s; reward %s", status, reason, reward)
    metrics["child/seconds"] = time.perf_counter() - t0
    return ChildResult(float(reward), status, reason, metrics)

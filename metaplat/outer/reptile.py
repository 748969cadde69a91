"""Reptile (Nichol, Achiam & Schulman 2018).

Algorithm box (meta-parameters θ, outer step ε)::

    for each iteration:
        sample a batch of tasks T_i
        for each T_i (vectorised over a worker's shard):
            φ_i = k steps of SGD/Adam on T_i's support + query points, from θ
        θ <- θ + ε · mean_i (φ_i − θ)

The worker returns ``θ − φ_i`` as the meta-"gradient", so the update above is plain SGD
with step ``outer_lr = ε`` (the default); ``outer_optimizer: adam`` is also allowed.
Deviation: the paper anneals ε linearly to 0; here it stays constant.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from metaplat.estimators.backprop import GradKind
from metaplat.inner.adapt import InnerRule
from metaplat.outer._gradient_common import GradientConfig, GradientMethod, _check


@dataclasses.dataclass(frozen=True)
class ReptileConfig(GradientConfig):
    """Reptile; defaults follow the paper's sinusoid setting (inner SGD 0.02, outer ε 0.1)."""

    inner_lr: float = 0.02
    """Inner step size."""
    inner_steps: int = 10
    """Inner steps per task during meta-training (paper: 32 for sinusoids, 5-10 few-shot)."""
    outer_lr: float = 0.1
    """Outer step size ε (an SGD step toward the mean adapted weights)."""
    outer_optimizer: Literal["adam", "sgd"] = "sgd"
    """``sgd`` is Reptile's update θ += ε mean(φ − θ)."""
    first_order: bool = True
    """Reptile never differentiates through the inner loop."""
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    """Inner optimizer (the few-shot classification experiments use Adam with β1 = 0)."""
    inner_adam_beta1: float = 0.0
    """β1 of the inner Adam (paper: 0)."""
    train_on_query: bool = True
    """Train the inner loop on support and query points together (paper's transductive setting)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.inner_optimizer in ("sgd", "adam"),
            "inner_optimizer",
            self.inner_optimizer,
            "sgd or adam",
        )
        _check(
            0.0 <= self.inner_adam_beta1 < 1.0,
            "inner_adam_beta1",
            self.inner_adam_beta1,
            "in [0, 1)",
        )
        _check(
            self.first_order,
            "first_order",
            self.first_order,
            "true for reptile (it is first order)",
        )


class Reptile(GradientMethod):
    """Reptile: move the initialisation toward each task's adapted weights."""

    name = "reptile"
    Config = ReptileConfig

    def __init__(self, config: ReptileConfig, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(config, *args, **kwargs)
        self.train_job = dataclasses.replace(
            self.train_job, reptile_use_query=config.train_on_query
        )

    def grad_kind(self) -> GradKind:
        return "reptile"

    def inner_rule(self, train: bool) -> InnerRule:
        c: ReptileConfig = self.config  # type: ignore[assignment]
        return dataclasses.replace(
            super().inner_rule(train),
            optimizer=c.inner_optimizer,
            betas=(c.inner_adam_beta1, 0.999),
        )

"""Meta-SGD (Li et al. 2017): learn the initialisation *and* a learning rate per parameter.

Algorithm box::

    θ_i' = θ − α ∘ ∇_θ L_support(θ)          (α has θ's shape, element-wise product)
    (θ, α) <- Adam((θ, α), mean_i ∇_(θ,α) L_query(θ_i'), β)

The rates travel with the weights as ``lr.<name>`` entries of the meta-parameters.
Deviation: the paper draws the initial α from U[0.005, 0.1]; here every rate starts at
``inner_lr`` (so iteration 0 equals MAML).
"""

from __future__ import annotations

import dataclasses

import torch

from metaplat.estimators.backprop import LR_PREFIX
from metaplat.inner.adapt import Params
from metaplat.outer._gradient_common import GradientConfig, GradientMethod, _check


@dataclasses.dataclass(frozen=True)
class MetaSGDConfig(GradientConfig):
    """Meta-SGD; ``inner_lr`` is the initial value of every learned rate."""

    eval_inner_steps: int = 1
    """The paper adapts with the one learned step it was trained for (more steps can diverge)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            not self.first_order,
            "first_order",
            self.first_order,
            "false for metasgd (the rates only get gradients through the inner step)",
        )


class MetaSGD(GradientMethod):
    """MAML with learned per-parameter inner learning rates."""

    name = "metasgd"
    Config = MetaSGDConfig

    def init_meta_params(self) -> Params:
        params = super().init_meta_params()
        adapted = self.inner_rule(train=True).names or tuple(params)
        rates = {LR_PREFIX + k: torch.full_like(params[k], self.config.inner_lr) for k in adapted}
        return params | rates

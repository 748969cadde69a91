"""ANIL (Raghu et al. 2020): MAML that adapts only the head in the inner loop.

Algorithm box: as MAML, but θ_i' = (body, head − α ∇_head L_support); the meta-gradient
still reaches the body (through the features the head adapts on). The head is ``head.*`` for
Conv4 and the last ``Linear`` of an MLP.
"""

from __future__ import annotations

import dataclasses

from metaplat.inner.adapt import InnerRule
from metaplat.outer._gradient_common import GradientConfig, GradientMethod


@dataclasses.dataclass(frozen=True)
class ANILConfig(GradientConfig):
    """ANIL; every field of :class:`GradientConfig` (``first_order`` gives first-order ANIL)."""


class ANIL(GradientMethod):
    """Almost No Inner Loop: adapt the head only."""

    name = "anil"
    Config = ANILConfig

    def inner_rule(self, train: bool) -> InnerRule:
        return dataclasses.replace(super().inner_rule(train), names=self.model.head_names())

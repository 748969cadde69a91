"""MAML (Finn et al. 2017) and first-order MAML.

Algorithm box (meta-parameters θ, inner step α, outer step β)::

    for each iteration:
        sample a batch of tasks T_i
        for each T_i (vectorised over a worker's shard):
            θ_i' = θ - α ∇_θ L_support(θ)              (inner_steps times)
            g_i  = ∇_θ L_query(θ_i')                   (MAML: through the inner steps)
                 = ∇_θ' L_query(θ') at θ' = θ_i'        (first-order MAML)
        θ <- Adam(θ, mean_i g_i, β)
"""

from __future__ import annotations

import dataclasses

from metaplat.outer._gradient_common import GradientConfig, GradientMethod


@dataclasses.dataclass(frozen=True)
class MAMLConfig(GradientConfig):
    """MAML; every field of :class:`GradientConfig` (defaults: the paper's sinusoid setting)."""


@dataclasses.dataclass(frozen=True)
class FOMAMLConfig(GradientConfig):
    """First-order MAML: :class:`GradientConfig` with ``first_order`` on."""

    first_order: bool = True
    """Always true for first-order MAML."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.first_order:
            raise ValueError(
                "first_order=False is not allowed for fomaml; use method 'maml' instead"
            )


class MAML(GradientMethod):
    """Second-order MAML (``first_order: true`` makes it FOMAML)."""

    name = "maml"
    Config = MAMLConfig


class FOMAML(GradientMethod):
    """First-order MAML: the query gradient at the adapted parameters."""

    name = "fomaml"
    Config = FOMAMLConfig

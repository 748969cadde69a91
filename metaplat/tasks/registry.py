"""The one task-distribution registry: every supervised and RL family by name."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from metaplat._registry import LazyRegistry, unknown_name_message
from metaplat.tasks.base import Split, TaskFamily, TaskSpec

FAMILIES: LazyRegistry[type[TaskFamily]] = LazyRegistry(
    "task family",
    {
        "sinusoid": "metaplat.tasks.sinusoid:SinusoidFamily",
        "quadratic": "metaplat.tasks.quadratic:QuadraticFamily",
        "glyphs": "metaplat.tasks.glyphs:GlyphFamily",
        "omniglot": "metaplat.tasks.omniglot:OmniglotFamily",
        "bandit": "metaplat.tasks.bandit:BanditFamily",
        "tabular_mdp": "metaplat.tasks.tabular_mdp:TabularMDPFamily",
        "point_nav": "metaplat.tasks.point_nav:PointNavFamily",
        "cartpole_physics": "metaplat.tasks.cartpole:CartPolePhysicsFamily",
    },
)


def family_names() -> list[str]:
    return FAMILIES.names()


def make_family(name: str, config: dict[str, Any] | None = None) -> TaskFamily:
    """Instantiate family ``name`` with ``config``.

    Raises ``ValueError`` naming the field for unknown families or unknown config keys
    (with the allowed keys), and passes through the family's own validation errors.
    """
    try:
        cls = FAMILIES.get(name)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    config = dict(config or {})
    allowed = config_fields(cls)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(
            unknown_name_message(f"config key of task family {name!r}", unknown[0], allowed)
        )
    return cls(**config)


def config_fields(cls: type[TaskFamily]) -> list[str]:
    """The keyword arguments a family accepts."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p != "self"]


def family_of(spec: TaskSpec) -> TaskFamily:
    """The family instance that produced ``spec``."""
    return make_family(spec.family, dict(spec.config))


def build(spec: TaskSpec) -> Any:
    """Build the task a spec describes, in this process."""
    return family_of(spec).build(spec)


def sample(
    name: str, config: dict[str, Any] | None, split: Split, n: int, seed: int
) -> list[TaskSpec]:
    """Convenience: ``n`` specs of ``split`` from family ``name``, reproducible by ``seed``."""
    return make_family(name, config).sample(np.random.default_rng(seed), split, n)

"""Spec domains -> ``ray.tune`` samplers, and the flat trial config a Tuner searches over.

A trial's config is flat: ``{"seed": 3, "method.config.inner_lr": 0.01, "spec_hash": ...}``.
Keys are the spec's dotted search paths, so ``progress.csv`` columns read
``config/method.config.inner_lr`` and a trial config maps back onto the spec with
:meth:`ExperimentSpec.replace_path`.
"""

from __future__ import annotations

from typing import Any

from metaplat.specs.schema import ExperimentSpec
from metaplat.specs.search_space import Domain

#: Constant keys every trial config carries (not searched).
SPEC_HASH_KEY = "spec_hash"


def to_tune(domain: Domain) -> Any:
    """The ``ray.tune`` object for ``domain`` (``tune.grid_search`` for grids)."""
    from ray import tune

    a = domain.args
    factories: dict[str, Any] = {
        "grid": lambda: tune.grid_search(list(a)),
        "choice": lambda: tune.choice(list(a)),
        "uniform": lambda: tune.uniform(a[0], a[1]),
        "quniform": lambda: tune.quniform(a[0], a[1], a[2]),
        "loguniform": lambda: tune.loguniform(a[0], a[1]),
        "qloguniform": lambda: tune.qloguniform(a[0], a[1], a[2]),
        "randint": lambda: tune.randint(int(a[0]), int(a[1])),
        "qrandint": lambda: tune.qrandint(int(a[0]), int(a[1]), int(a[2])),
        "lograndint": lambda: tune.lograndint(int(a[0]), int(a[1])),
        "randn": lambda: tune.randn(a[0], a[1]),
    }
    return factories[domain.kind]()


def param_space(spec: ExperimentSpec) -> dict[str, Any]:
    """The Tuner's ``param_space``: the seed, every searched path, and the spec hash
    (and a ``trainable`` spec's ``param_space`` constants)."""
    space: dict[str, Any] = {**spec.param_space, "seed": spec.seed, SPEC_HASH_KEY: spec.digest()}
    for path, domain in spec.tune.search_space.items():
        space[path] = to_tune(domain)
    return space


def trial_spec(spec: ExperimentSpec, config: dict[str, Any]) -> ExperimentSpec:
    """The experiment spec with one trial's sampled values filled in."""
    out = spec
    for key, value in config.items():
        if key == SPEC_HASH_KEY:
            continue
        if hasattr(value, "item"):  # numpy scalars from samplers
            value = value.item()
        out = out.replace_path(key, value)
    return out

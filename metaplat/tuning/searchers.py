"""Search algorithms and trial schedulers by name, as the spec's ``search_alg`` / ``scheduler``.

Both are lazy registries of factories (``"module:function"``), so an optional backend that
is not installed (optuna, hyperopt) only fails when a spec names it, and another module can
add one line, e.g. ``SEARCHERS.register("name", "package.module:factory")``.

Factory contracts (keyword options come from the spec and are checked against the
signature before any trial starts):

* searcher: ``factory(metric: str, mode: str, seed: int, **options) -> Searcher``
* scheduler: ``factory(metric: str, mode: str, iterations: int, seed: int, **options)
  -> TrialScheduler``

``metric`` and ``mode`` are for factories that need them to build something; the returned
object must NOT be given them (Tune passes ``TuneConfig``'s metric and mode on, and refuses
objects that already have their own). The spec key ``search_alg.max_concurrent`` is handled
by the runner (a ``ConcurrencyLimiter``), not by the factory.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from metaplat._registry import LazyRegistry

SEARCHERS: LazyRegistry[Callable[..., Any]] = LazyRegistry(
    "search algorithm",
    {
        "random": "metaplat.tuning.searchers:random_search",
        "optuna": "metaplat.tuning.searchers:optuna_search",
        "hyperopt": "metaplat.tuning.searchers:hyperopt_search",
        # NAS-RL / NOS controller (a Tune Searcher); lives in its own module.
        "controller": "metaplat.tuning.controller_searcher:make_searcher",
    },
)

SCHEDULERS: LazyRegistry[Callable[..., Any]] = LazyRegistry(
    "scheduler",
    {
        "fifo": "metaplat.tuning.searchers:fifo",
        "asha": "metaplat.tuning.searchers:asha",
        "pbt": "metaplat.tuning.searchers:pbt",
    },
)

#: Arguments the runner passes itself; not spec options.
SEARCHER_FIXED = ("metric", "mode", "seed")
SCHEDULER_FIXED = ("metric", "mode", "iterations", "seed")
#: Spec-level option of every search algorithm, handled by the runner.
SEARCHER_RUNNER_OPTIONS = ("max_concurrent",)


def option_names(factory: Callable[..., Any], fixed: tuple[str, ...]) -> list[str] | None:
    """Keyword options ``factory`` accepts beyond ``fixed`` (``None`` if it takes ``**kwargs``)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name not in fixed]


# -- search algorithms -----------------------------------------------------------------
def random_search(metric: str, mode: str, seed: int) -> Any:
    """Tune's grid + random variant generator with a fixed random state."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed)


def optuna_search(metric: str, mode: str, seed: int, sampler: str = "tpe") -> Any:
    """Optuna (TPE by default); needs ``pip install optuna``. No grid domains."""
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as e:
        raise ImportError(
            f"search_alg 'optuna' needs optuna: pip install -e '.[optuna]' ({e})"
        ) from None
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    if sampler not in samplers:
        raise ValueError(f"optuna sampler must be one of {', '.join(samplers)}, got {sampler!r}")
    return OptunaSearch(sampler=samplers[sampler](seed=seed))


def hyperopt_search(metric: str, mode: str, seed: int, n_initial_points: int = 20) -> Any:
    """HyperOpt TPE; needs ``pip install hyperopt``. No grid domains."""
    try:
        from ray.tune.search.hyperopt import HyperOptSearch
    except ImportError as e:
        raise ImportError(
            f"search_alg 'hyperopt' needs hyperopt: pip install -e '.[hyperopt]' ({e})"
        ) from None
    return HyperOptSearch(random_state_seed=seed, n_initial_points=n_initial_points)


# -- schedulers --------------------------------------------------------------------------
def fifo(metric: str, mode: str, iterations: int, seed: int) -> Any:
    """Run every trial to the end."""
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def asha(
    metric: str,
    mode: str,
    iterations: int,
    seed: int,
    grace_period: int = 1,
    max_t: int | None = None,
    reduction_factor: float = 4,
    brackets: int = 1,
) -> Any:
    """Asynchronous successive halving over ``training_iteration``; ``max_t`` = iterations."""
    from ray.tune.schedulers import ASHAScheduler

    max_t = iterations if max_t is None else max_t
    if not 0 < grace_period <= max_t:
        raise ValueError(f"asha needs 0 < grace_period <= max_t, got {grace_period}, {max_t}")
    if reduction_factor <= 1:
        raise ValueError(f"asha reduction_factor must be > 1, got {reduction_factor}")
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        brackets=brackets,
    )


def pbt(
    metric: str,
    mode: str,
    iterations: int,
    seed: int,
    perturbation_interval: int = 5,
    hyperparam_mutations: dict[str, Any] | None = None,
    quantile_fraction: float = 0.25,
    resample_probability: float = 0.25,
    burn_in_period: int = 0,
) -> Any:
    """Population based training over ``training_iteration``.

    ``hyperparam_mutations`` maps search paths (``method.config.inner_lr``) to spec domains
    (``{loguniform: [1e-3, 1e-1]}``) or lists; the trainable restores the exploited trial's
    checkpoint under the new config. Checkpoint at least every ``perturbation_interval``.
    """
    from ray.tune.schedulers import PopulationBasedTraining

    from metaplat.specs.search_space import Domain
    from metaplat.tuning.space import to_tune

    mutations = {}
    for path, value in (hyperparam_mutations or {}).items():
        domain = Domain.from_yaml(value, f"hyperparam_mutations[{path!r}]")
        mutations[path] = (
            list(domain.args) if domain.kind in ("grid", "choice") else to_tune(domain)
        )
    return PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=perturbation_interval,
        burn_in_period=burn_in_period,
        hyperparam_mutations=mutations,
        quantile_fraction=quantile_fraction,
        resample_probability=resample_probability,
    )

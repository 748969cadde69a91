"""The experiment spec: one YAML file per experiment, parsed once into frozen dataclasses.

.. code-block:: yaml

    name: quickstart                 # experiment name = results folder under storage_path
    seed: 0                          # root of the seed tree (a trial's seed; searchable)
    task:
      family: sinusoid               # a name from `metaplat tasks list`
      config: {num_support: 10}      # the family's constructor arguments
    method:
      name: maml                     # a METHODS name, or "package.module:Class" (an OuterLoop)
      config: {inner_lr: 0.01}       # fields of METHODS[name].Config
    workers:                         # per trial; num_workers: 0 = in-process (LocalPool)
      num_workers: 2
      num_cpus: 1                    # per worker actor
      num_gpus: 0                    # per worker actor; fractional (< 1) or whole
      driver_cpus: 1                 # the trial's own process (first placement-group bundle)
    train:
      iterations: 100                # outer iterations per trial
      eval_every: 10                 # evaluate(state, "val", eval_tasks) every N iterations
      eval_tasks: 100                # null = the method's default
      checkpoint_every: 10           # also always at the last iteration
      keep_checkpoints: 2            # per trial; null = keep all
    tune:
      metric: val/post_mse
      mode: min
      num_samples: 1                 # repeats of the whole search space (x grid size)
      max_concurrent_trials: null
      max_failures: 0                # retries of a failed trial (from its last checkpoint)
      search_space:                  # dotted paths: seed, method.config.X, task.config.X
        method.config.inner_lr: {loguniform: [0.001, 0.1]}
        method.config.inner_steps: {grid: [1, 5]}
        seed: {grid: [0, 1, 2]}      # a bare list is shorthand for {grid: [...]}
      search_alg: null               # or {name: random|optuna|hyperopt|<registered>,
                                     #     max_concurrent: 4, <factory options>}
      scheduler: {name: asha, grace_period: 5}
                                     # or {name: pbt, perturbation_interval: 5,
                                     #     hyperparam_mutations: {method.config.inner_lr:
                                     #                            {loguniform: [0.001, 0.1]}}}
    storage_path: ~/metaplat_results # local dir, NFS path, s3://bucket/path or gs://bucket/path

A controller search (or any Tune function trainable) replaces ``task`` + ``method`` with
``trainable: package.module:function`` and constant ``param_space: {...}``; its search
algorithm proposes the rest of each trial's config (``tune_specs/nas_mlp_sinusoid.yaml``).

Parsing (:func:`metaplat.specs.loader.parse_spec`) checks keys and types of this file;
:func:`metaplat.specs.loader.validate_spec` goes further and builds the task family and the
method ``Config`` with the spec's values and with the ends of every searched range.
Extra keys of ``search_alg`` / ``scheduler`` are passed to the named factory
(``metaplat.tuning.searchers``) and checked against its signature.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Literal

from metaplat.specs.search_space import Domain
from metaplat.specs.typecheck import SpecError, check_value, join

#: Search-space paths start with one of these (``seed`` is a path by itself).
SEARCH_ROOTS = ("seed", "method.config.", "task.config.")


@dataclasses.dataclass(frozen=True)
class TaskSection:
    """Which task distribution to meta-learn over."""

    family: str
    """A registered family name (``metaplat tasks list``)."""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments of the family's constructor."""

    def __post_init__(self) -> None:
        if not self.family:
            raise ValueError("family must be a non-empty name, see `metaplat tasks list`")


@dataclasses.dataclass(frozen=True)
class MethodSection:
    """Which outer loop, and its typed config."""

    name: str
    """A ``METHODS`` name (maml, fomaml, ...) or an import path ``package.module:Class``."""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Fields of the method's ``Config`` dataclass; unset fields keep their defaults."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must be a non-empty method name")


@dataclasses.dataclass(frozen=True)
class WorkersSection:
    """The worker actors one trial owns (through its placement group)."""

    num_workers: int = 0
    """Worker actors per trial; 0 runs inner loops in the trial's own process (LocalPool)."""
    num_cpus: float = 1.0
    """CPUs per worker actor."""
    num_gpus: float = 0.0
    """GPUs per worker actor: a fraction below 1 (shared GPU) or a whole number."""
    driver_cpus: float = 1.0
    """CPUs for the trial's own process (runs the outer update)."""
    max_task_retries: int = 3
    """Times a pool call is retried when a worker actor dies."""

    def __post_init__(self) -> None:
        for name in ("num_workers", "num_cpus", "num_gpus", "driver_cpus", "max_task_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_gpus > 1 and not float(self.num_gpus).is_integer():
            raise ValueError(
                f"num_gpus must be a fraction below 1 or a whole number, got {self.num_gpus}"
            )
        if self.num_workers > 0 and self.num_cpus == 0 and self.num_gpus == 0:
            raise ValueError("workers need num_cpus > 0 or num_gpus > 0 when num_workers > 0")
        if self.num_workers == 0 and self.num_gpus > 0:
            raise ValueError(
                f"num_gpus={self.num_gpus} is per worker actor, but num_workers is 0 "
                "(in-process); set num_workers >= 1 to use GPUs"
            )


@dataclasses.dataclass(frozen=True)
class TrainSection:
    """How long each trial trains and how often it evaluates and checkpoints."""

    iterations: int = 100
    """Outer iterations per trial (the trial stops after this many)."""
    eval_every: int = 10
    """Evaluate on meta-val tasks every N iterations (and at the first and last)."""
    eval_tasks: int | None = 100
    """Meta-val tasks per evaluation; null = the method's default."""
    checkpoint_every: int = 10
    """Checkpoint every N iterations (and always at the last)."""
    keep_checkpoints: int | None = 2
    """Checkpoints kept per trial (the most recent); null = keep all."""

    def __post_init__(self) -> None:
        for name in ("iterations", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_tasks is not None and self.eval_tasks < 1:
            raise ValueError(f"eval_tasks must be >= 1 or null, got {self.eval_tasks}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1 or null, got {self.keep_checkpoints}")


@dataclasses.dataclass(frozen=True)
class NamedFactory:
    """A search algorithm or scheduler: a registered ``name`` plus its factory's options."""

    name: str
    """Registered name (see ``metaplat.tuning.searchers.SEARCHERS`` / ``SCHEDULERS``)."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments for the factory, written flat next to ``name`` in YAML."""

    @classmethod
    def from_yaml(cls, data: Any, path: str) -> NamedFactory:
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise SpecError(
                f"{path}: got {data!r}, expected a mapping with a 'name' (and that "
                "factory's options), e.g. {name: asha, grace_period: 5}"
            )
        options = {k: v for k, v in data.items() if k != "name"}
        bad = [k for k in options if not isinstance(k, str)]
        if bad:
            raise SpecError(f"{path}: option names must be strings, got {bad!r}")
        return cls(data["name"], options)

    def to_yaml(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclasses.dataclass(frozen=True)
class TuneSection:
    """What Tune optimises and how it searches and schedules trials."""

    metric: str
    """The reported metric trials are compared by, e.g. ``val/post_mse``."""
    mode: Literal["min", "max"] = "min"
    """Whether lower (min) or higher (max) ``metric`` is better."""
    num_samples: int = 1
    """How many times the search space is sampled (grids are repeated this often)."""
    max_concurrent_trials: int | None = None
    """Upper bound on trials running at once; null = as many as resources allow."""
    max_failures: int = 0
    """Times a failed trial is retried from its last checkpoint before it counts as errored."""
    search_space: dict[str, Domain] = dataclasses.field(default_factory=dict)
    """Dotted path (``seed``, ``method.config.X``, ``task.config.X``) -> domain."""
    search_alg: NamedFactory | None = None
    """null = Tune's default (grid + random sampling); else a ``SEARCHERS`` name and options."""
    scheduler: NamedFactory | None = None
    """null = FIFO; else a ``SCHEDULERS`` name (asha, pbt, fifo) and options."""

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("metric must be a reported metric name like 'val/loss'")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(
                f"max_concurrent_trials must be >= 1 or null, got {self.max_concurrent_trials}"
            )
        if self.max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {self.max_failures}")
        for path, domain in self.search_space.items():
            check_search_path(path)
            if path == "seed" and not domain.integer:
                raise ValueError(
                    f"search_space['seed']: seeds are integers, got {domain.to_yaml()}; "
                    "use {grid: [0, 1, 2]} or {randint: [0, 1000]}"
                )

    def num_trials(self) -> int | None:
        """Trials the search space expands to (``None`` if a search algorithm decides)."""
        grid = 1
        for d in self.search_space.values():
            grid *= d.size() or 1
        return grid * self.num_samples


def check_search_path(path: str) -> None:
    """Raise ``ValueError`` unless ``path`` is seed, method.config.X or task.config.X."""
    ok = path == "seed" or (
        path.startswith(SEARCH_ROOTS[1:]) and len(path.split(".")) >= 3 and all(path.split("."))
    )
    if not ok:
        raise ValueError(
            f"search path {path!r} must be 'seed', 'method.config.<field>' or 'task.config.<field>'"
        )


_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """A whole experiment: task distribution, method, resources, training and tuning."""

    name: str
    """Experiment name; results go to ``<storage_path>/<name>``."""
    tune: TuneSection
    """Metric, search space, search algorithm and scheduler."""
    task: TaskSection | None = None
    """The task family and its config (required unless ``trainable`` is set)."""
    method: MethodSection | None = None
    """The outer loop and its config (required unless ``trainable`` is set)."""
    trainable: str | None = None
    """Instead of task + method: a Tune function trainable ``package.module:function``
    (e.g. a controller search's child trainable), called with ``param_space`` + ``seed``."""
    param_space: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Constants passed to ``trainable`` in its config (only with ``trainable``)."""
    seed: int = 0
    """Root of the seed tree; each trial's seed (searchable under ``tune.search_space.seed``)."""
    workers: WorkersSection = dataclasses.field(default_factory=WorkersSection)
    """Worker actors per trial."""
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    """Iterations, evaluation and checkpoint cadence."""
    storage_path: str = "~/metaplat_results"
    """Where results and checkpoints go: local dir, NFS path, ``s3://...`` or ``gs://...``."""

    def __post_init__(self) -> None:
        if self.trainable is None:
            missing = [k for k in ("task", "method") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} required (or a 'trainable: module:function' "
                    "instead of task + method)"
                )
            if self.param_space:
                raise ValueError("param_space is only for specs with a 'trainable'")
        else:
            if self.task is not None or self.method is not None:
                raise ValueError("give either 'trainable' or task + method, not both")
            if ":" not in self.trainable:
                raise ValueError(
                    f"trainable must be an import path 'package.module:function', "
                    f"got {self.trainable!r}"
                )
            extra = sorted(set(self.tune.search_space) - {"seed"})
            if extra:
                raise ValueError(
                    f"tune.search_space[{extra[0]!r}]: specs with a 'trainable' can only "
                    "search 'seed' (their search algorithm proposes the rest)"
                )
        if not _NAME.match(self.name):
            raise ValueError(
                f"name must use letters, digits, '_', '-', '.' only, got {self.name!r}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not self.storage_path:
            raise ValueError("storage_path must be a directory or a URI")

    def to_dict(self) -> dict[str, Any]:
        """The YAML shape again: ``parse_spec(spec.to_dict()) == spec``."""
        d = dataclasses.asdict(self)
        d["tune"]["search_space"] = {p: v.to_yaml() for p, v in self.tune.search_space.items()}
        for key in ("search_alg", "scheduler"):
            factory = getattr(self.tune, key)
            d["tune"][key] = factory.to_yaml() if factory is not None else None
        return d

    def digest(self) -> str:
        """A short stable hash of everything that affects results (not ``storage_path``)."""
        d = self.to_dict()
        d.pop("storage_path")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def replace_path(self, path: str, value: Any) -> ExperimentSpec:
        """A copy with search path ``path`` (seed, method.config.X, ...) set to ``value``."""
        check_search_path(path)
        if path == "seed":
            return dataclasses.replace(self, seed=check_value(value, int, "seed"))
        section, _, key = path.split(".", 2)
        sec = getattr(self, section)
        if sec is None:
            raise ValueError(f"search path {path!r}: this spec has no {section!r} section")
        return dataclasses.replace(
            self, **{section: dataclasses.replace(sec, config={**sec.config, key: value})}
        )


def section_path(path: str) -> tuple[str, str]:
    """``"method.config.inner_lr" -> ("method", "inner_lr")``; ``"seed" -> ("seed", "")``."""
    if path == "seed":
        return "seed", ""
    section, _, key = path.split(".", 2)
    return section, key


__all__ = [
    "ExperimentSpec",
    "MethodSection",
    "NamedFactory",
    "TaskSection",
    "TrainSection",
    "TuneSection",
    "WorkersSection",
    "join",
]

"""The one YAML loader: file -> :class:`ExperimentSpec`, and the deep validation behind
``metaplat validate``.

* :func:`load_spec` reads a file, applies dotted overrides (``train.iterations=5``) and
  parses it (keys and types, see :mod:`metaplat.specs.schema`).
* :func:`validate_spec` also builds what a trial builds: the task family and the method's
  ``Config`` with the spec's values, and again with each representative value of every
  searched path, and checks the search algorithm's and scheduler's options.
* :func:`build_family` / :func:`build_method_config` / :func:`resolve_method` are what the
  Tune trainable uses to turn one trial's spec into objects.

Every problem is reported as one line naming the dotted field path.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from metaplat.specs.schema import ExperimentSpec, NamedFactory, section_path
from metaplat.specs.search_space import Domain
from metaplat.specs.typecheck import (
    SpecError,
    check_fields,
    check_value,
    construct,
    hints,
    join,
    parse_dataclass,
    unknown_key_message,
)

if TYPE_CHECKING:  # imported inside functions at run time: metaplat.outer.base imports torch
    from metaplat.outer.base import OuterLoop


# -- reading ------------------------------------------------------------------------------
def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentSpec:
    """Read and parse the YAML spec at ``path``; ``overrides`` set dotted keys first."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read spec ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return parse_spec(data)


def parse_spec(data: Mapping[str, Any]) -> ExperimentSpec:
    """Keys and types of a spec dict (as YAML gives it) -> :class:`ExperimentSpec`."""
    return parse_dataclass(ExperimentSpec, data, "")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "train.iterations", 5)``; search-space paths stay one key:
    ``tune.search_space.method.config.inner_lr`` sets ``d["tune"]["search_space"][...]``."""
    parts = key.split(".")
    if parts[:2] == ["tune", "search_space"] and len(parts) > 2:
        parts = parts[:2] + [".".join(parts[2:])]
    node = data
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise SpecError(f"override {key}: {p!r} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.iterations=5" -> ("train.iterations", 5)`` (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise SpecError(f"override {text!r}: expected key=value, e.g. train.iterations=5")
    return key.strip(), yaml.safe_load(raw)


# -- building what a trial builds ---------------------------------------------------------
def resolve_method(name: str) -> type[OuterLoop[Any, Any]]:
    """The ``OuterLoop`` class for a ``METHODS`` name or a ``module:Class`` import path."""
    from metaplat.outer.base import METHODS, OuterLoop

    if name in METHODS:
        try:
            cls = METHODS.get(name)
        except ImportError as e:
            raise SpecError(
                f"method.name: method {name!r} is registered but cannot be imported ({e})"
            ) from None
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise SpecError(f"method.name: cannot import {name!r} ({e})") from None
    else:
        try:
            METHODS.get(name)
        except KeyError as e:
            raise SpecError(f"method.name: {e.args[0]}") from None
        raise AssertionError("unreachable")
    if not (isinstance(cls, type) and issubclass(cls, OuterLoop)):
        raise SpecError(f"method.name: {name!r} is {cls!r}, not an OuterLoop subclass")
    return cls


def build_method_config(
    method_cls: type[OuterLoop[Any, Any]], config: Mapping[str, Any], path: str
) -> Any:
    """``method_cls.Config(**config)`` with unknown keys and types reported under ``path``."""
    cfg_cls = method_cls.Config
    if not dataclasses.is_dataclass(cfg_cls):
        raise SpecError(f"{path}: {method_cls.__name__}.Config is not a dataclass")
    return construct(cfg_cls, check_fields(cfg_cls, config, path), path)


def build_family(
    name: str, config: Mapping[str, Any], path: str = "task", config_path: str | None = None
) -> Any:
    """The task family ``name`` built with ``config`` (errors under ``path.family`` and
    ``config_path``, default ``path.config``)."""
    from metaplat.tasks.registry import FAMILIES, config_fields

    try:
        cls = FAMILIES.get(name)
    except KeyError as e:
        raise SpecError(f"{join(path, 'family')}: {e.args[0]}") from None
    except ImportError as e:
        raise SpecError(
            f"{join(path, 'family')}: family {name!r} is registered but cannot be imported ({e})"
        ) from None
    cpath = join(path, "config") if config_path is None else config_path
    if dataclasses.is_dataclass(cls):
        kwargs = check_fields(cls, config, cpath)
    else:
        allowed = config_fields(cls)
        unknown = [k for k in config if k not in allowed]
        if unknown:
            raise SpecError([unknown_key_message(cpath, k, allowed) for k in unknown])
        kwargs = dict(config)
    return construct(cls, kwargs, cpath)


def family_fields(name: str) -> dict[str, Any]:
    """Constructor fields of family ``name`` -> type hint (``Any`` where unknown)."""
    from metaplat.tasks.registry import FAMILIES, config_fields

    cls = FAMILIES.get(name)
    if dataclasses.is_dataclass(cls):
        return hints(cls)
    return dict.fromkeys(config_fields(cls), Any)


# -- deep validation ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Resolved:
    """What validation built: the family, the method class and its config."""

    family: Any
    """The task family instance (spec values)."""
    method_cls: type[OuterLoop[Any, Any]] | None
    """The ``OuterLoop`` subclass (``None`` for a ``trainable`` spec)."""
    method_config: Any
    """``method_cls.Config`` built from the spec's values."""
    trainable: Any = None
    """The function of a spec's ``trainable`` (then family and method are ``None``)."""


def validate_spec(spec: ExperimentSpec) -> Resolved:
    """Build the family and method config (spec values, then every searched value) and check
    search-algorithm and scheduler options. Raises :class:`SpecError` listing all problems."""
    errors: list[str] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except SpecError as e:
            errors.extend(e.errors)
            return None

    family = method_cls = config = function = None
    if spec.trainable is not None:
        function = attempt(resolve_trainable, spec.trainable)
    else:
        assert spec.task is not None and spec.method is not None
        family = attempt(build_family, spec.task.family, spec.task.config)
        method_cls = attempt(resolve_method, spec.method.name)
    if method_cls is not None:
        assert spec.task is not None and spec.method is not None
        config = attempt(build_method_config, method_cls, spec.method.config, "method.config")
        if family is not None and family.kind not in method_cls.task_kinds:
            errors.append(
                f"method.name: {spec.method.name!r} needs a task family of kind "
                f"{' or '.join(method_cls.task_kinds)}; task.family {spec.task.family!r} is "
                f"{family.kind!r}"
            )
        if not method_cls.uses_pool and spec.workers.num_workers > 0:
            own = ", ".join(f"method.config.{f}" for f in method_cls.resource_fields)
            errors.append(
                f"workers.num_workers: {spec.method.name!r} does not use the worker pool "
                f"(it starts its own actors{', sized by ' + own if own else ''}), so "
                f"{spec.workers.num_workers} pool worker(s) would sit idle on reserved "
                "CPUs; set workers.num_workers: 0"
            )
    if method_cls is not None:
        space = dict(spec.tune.search_space)
        if spec.tune.scheduler is not None and spec.tune.scheduler.name == "pbt":
            for p, v in (spec.tune.scheduler.options.get("hyperparam_mutations") or {}).items():
                d = attempt(Domain.from_yaml, v, f"tune.scheduler.hyperparam_mutations[{p!r}]")
                if d is not None:
                    space.setdefault(p, d)
        for path, domain in space.items():
            errors += check_search_values(
                spec, method_cls, path, domain, build=family is not None and config is not None
            )
    sched = spec.tune.scheduler
    if sched is not None and sched.name == "pbt":
        interval = sched.options.get("perturbation_interval", 5)
        if isinstance(interval, int) and spec.train.checkpoint_every > interval:
            errors.append(
                f"train.checkpoint_every: {spec.train.checkpoint_every} is longer than pbt's "
                f"perturbation_interval {interval}; PBT copies checkpoints between trials, so "
                "checkpoint at least every perturbation_interval iterations"
            )
    for key, fixed in (("search_alg", "searcher"), ("scheduler", "scheduler")):
        factory = getattr(spec.tune, key)
        if factory is not None:
            errors += check_factory(factory, fixed, f"tune.{key}")
    if errors:
        raise SpecError(errors)
    return Resolved(family, method_cls, config, function)


def resolve_trainable(path: str) -> Any:
    """The function at ``package.module:function`` (a spec's ``trainable``)."""
    module, _, name = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise SpecError(f"trainable: cannot import {path!r} ({e})") from None
    if not callable(fn):
        raise SpecError(f"trainable: {path!r} is not a function")
    return fn


def check_search_values(
    spec: ExperimentSpec,
    method_cls: type[OuterLoop[Any, Any]],
    path: str,
    domain: Domain,
    build: bool = True,
) -> list[str]:
    """Problems with searching ``path`` over ``domain`` (empty if none); with ``build``, the
    family / method config is built with each representative value."""
    where = f"tune.search_space[{path!r}]"
    section, key = section_path(path)
    if section == "method":
        fields = hints(method_cls.Config)
    elif section == "task":
        try:
            assert spec.task is not None
            fields = family_fields(spec.task.family)
        except Exception:  # the family's own error was reported already
            return []
    else:
        fields = {"": int}
    if key not in fields and section != "seed":
        return [unknown_key_message(f"{where}: {section}.config", key, list(fields))]
    if fields[key] is int and not domain.integer:
        return [
            f"{where}: field {path} is an int but {domain.to_yaml()} yields floats; "
            "use grid/choice of ints, randint, qrandint or lograndint"
        ]
    errors: list[str] = []
    for value in domain.representatives() if build else []:
        try:
            trial = spec.replace_path(path, value)
            if section == "method" and trial.method is not None:
                build_method_config(method_cls, trial.method.config, f"{where}={value!r}")
            elif section == "task" and trial.task is not None:
                build_family(trial.task.family, trial.task.config, "task", f"{where}={value!r}")
        except SpecError as e:
            errors += e.errors
    return errors


def check_factory(factory: NamedFactory, kind: str, path: str) -> list[str]:
    """Problems with a ``search_alg`` / ``scheduler`` entry (unknown name, unknown options)."""
    from metaplat.tuning.searchers import (
        SCHEDULER_FIXED,
        SCHEDULERS,
        SEARCHER_FIXED,
        SEARCHER_RUNNER_OPTIONS,
        SEARCHERS,
        option_names,
    )

    registry = SEARCHERS if kind == "searcher" else SCHEDULERS
    fixed = SEARCHER_FIXED if kind == "searcher" else SCHEDULER_FIXED
    extra = SEARCHER_RUNNER_OPTIONS if kind == "searcher" else ()
    try:
        fn = registry.get(factory.name)
    except KeyError as e:
        return [f"{path}.name: {e.args[0]}"]
    except ImportError as e:
        return [f"{path}.name: {factory.name!r} cannot be imported ({e})"]
    allowed = option_names(fn, fixed)
    if allowed is None:
        return []
    allowed += list(extra)
    errors = [unknown_key_message(path, k, allowed) for k in factory.options if k not in allowed]
    for k in extra:
        v = factory.options.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            errors.append(f"{path}.{k}: got {v!r}, expected an int >= 1 or null")
    try:
        declared = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: the factory validates its own options
        declared = {}
    for k, v in factory.options.items():
        if k in declared and k not in extra:
            try:
                check_value(v, declared[k], join(path, k))
            except SpecError as e:
                errors += e.errors
    return errors


# -- summaries -----------------------------------------------------------------------------
def own_actors(spec: ExperimentSpec) -> str | None:
    """For a method that starts its own actors instead of using the pool: how many and the
    CPUs a trial reserves in all (``None`` for pool methods or an unresolvable spec)."""
    if spec.method is None:
        return None
    try:
        method_cls: type[Any] = resolve_method(spec.method.name)
        if method_cls.uses_pool:
            return None
        from metaplat.tuning.trainable import bundle_totals, trial_bundles

        bundles = trial_bundles(spec, method_cls)
    except (SpecError, ValueError, TypeError):
        return None
    total = bundle_totals(bundles)
    return f"driver + {len(bundles) - 1} {spec.method.name} actors ({total['CPU']:g} CPU)"


def summary(spec: ExperimentSpec) -> str:
    """One line: what runs where, how many trials."""
    t, w = spec.tune, spec.workers
    n = t.num_trials()
    trials = (
        f"{n} trial{'s' * (n != 1)}"
        if spec.tune.search_alg is None
        else (f"{t.num_samples} samples of {spec.tune.search_alg.name}")
    )
    workers = (
        "in-process"
        if w.num_workers == 0
        else f"{w.num_workers} workers x ({w.num_cpus:g} CPU, {w.num_gpus:g} GPU)"
    )
    own = own_actors(spec)
    if own is not None:
        workers = own
    sched = spec.tune.scheduler.name if spec.tune.scheduler else "fifo"
    what = (
        f"trainable {spec.trainable}"
        if spec.method is None or spec.task is None
        else f"{spec.method.name} on {spec.task.family}"
    )
    return (
        f"{spec.name}: {what}, {trials}, "
        f"{spec.train.iterations} iterations, {workers} per trial, {t.mode} {t.metric}, "
        f"scheduler {sched}, storage {spec.storage_path} [spec {spec.digest()}]"
    )

"""Spec -> ``Tuner`` -> results; Ray started in-process or joined; resume.

* :func:`ray_session` starts an embedded local Ray (dashboard on 127.0.0.1 only) unless an
  address is given or ``RAY_ADDRESS`` is set (as under ``ray job submit``), in which case it
  connects to that cluster. It shuts down only a Ray it started. Token authentication is
  Ray's default and is left alone here.
* :func:`build_tuner` maps the spec onto ``TuneConfig`` / ``RunConfig``.
* :func:`run_experiment` validates, builds and fits; with ``resume=True`` it restores the
  experiment at ``<storage_path>/<name>`` (finished trials kept, unfinished and errored ones
  continued from their last checkpoints) or starts it if there is nothing to restore.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from metaplat.specs.loader import validate_spec
from metaplat.specs.schema import ExperimentSpec
from metaplat.specs.typecheck import SpecError
from metaplat.tuning.space import param_space

log = logging.getLogger(__name__)

#: Written next to Tune's own files in the experiment folder.
SPEC_FILE = "metaplat_spec.yaml"


@contextlib.contextmanager
def ray_session(address: str | None = None, dashboard: bool = True) -> Iterator[bool]:
    """Ray for the duration of the block: the running one, a cluster, or an embedded one.

    Yields whether this call started an embedded local Ray (whose resources are final:
    no autoscaler will add nodes).
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Embedded local Ray; the dashboard listens on loopback only, never 0.0.0.0.
        # address="local": a new instance even when a `ray start` cluster runs on this
        # machine (a bare ray.init() joins the latest one, whose owner may stop it under us)
        ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1")
    try:
        yield not address
    finally:
        ray.shutdown()


def is_uri(path: str) -> bool:
    return "://" in path


def storage_root(spec: ExperimentSpec) -> str:
    """``storage_path`` as Tune wants it: an absolute local path or a URI."""
    if is_uri(spec.storage_path):
        return spec.storage_path
    return str(Path(spec.storage_path).expanduser().resolve())


def experiment_path(spec: ExperimentSpec) -> str:
    root = storage_root(spec)
    return f"{root.rstrip('/')}/{spec.name}" if is_uri(root) else str(Path(root) / spec.name)


def write_spec(spec: ExperimentSpec, path: str) -> None:
    """Save the spec that ran into the experiment folder (local path or URI)."""
    import pyarrow.fs

    fs, fs_path = pyarrow.fs.FileSystem.from_uri(path if is_uri(path) else os.path.abspath(path))
    fs.create_dir(fs_path, recursive=True)
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    with fs.open_output_stream(f"{fs_path}/{SPEC_FILE}") as f:
        f.write(text.encode())


def make_search_alg(spec: ExperimentSpec) -> tuple[Any, int | None]:
    """``(search algorithm or None, extra concurrency cap)`` from ``tune.search_alg``."""
    factory = spec.tune.search_alg
    if factory is None:
        return None, None
    from ray.tune.search import ConcurrencyLimiter, Searcher

    from metaplat.tuning.searchers import SEARCHERS

    options = dict(factory.options)
    max_concurrent = options.pop("max_concurrent", None)
    alg = SEARCHERS.get(factory.name)(spec.tune.metric, spec.tune.mode, spec.seed, **options)
    if max_concurrent is not None and isinstance(alg, Searcher):
        return ConcurrencyLimiter(alg, max_concurrent=max_concurrent), None
    return alg, max_concurrent  # a SearchAlgorithm (the variant generator): cap trials instead


def make_scheduler(spec: ExperimentSpec) -> Any:
    factory = spec.tune.scheduler
    if factory is None:
        return None
    from metaplat.tuning.searchers import SCHEDULERS

    return SCHEDULERS.get(factory.name)(
        spec.tune.metric, spec.tune.mode, spec.train.iterations, spec.seed, **factory.options
    )


def run_config(spec: ExperimentSpec, verbose: int | None = None) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from metaplat.tuning.callbacks import FirstResultLogger

    keep = spec.train.keep_checkpoints
    if keep is not None and spec.tune.scheduler is not None and spec.tune.scheduler.name == "pbt":
        # PBT clones other trials' checkpoints; deleting them too early breaks exploitation.
        keep = max(keep, 4)
    return tune.RunConfig(
        name=spec.name,
        storage_path=storage_root(spec),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
        failure_config=tune.FailureConfig(max_failures=spec.tune.max_failures),
        # CSV + JSON always (``metaplat report`` reads them); Tune adds TensorBoard itself.
        callbacks=[CSVLoggerCallback(), JsonLoggerCallback(), FirstResultLogger()],
        verbose=verbose,
    )


def build_tuner(spec: ExperimentSpec, trainable: Any, verbose: int | None = None) -> Any:
    """A fresh ``Tuner`` for ``spec`` (metric/mode, samples, search, scheduler, storage)."""
    from ray import tune

    search_alg, cap = make_search_alg(spec)
    caps = [c for c in (spec.tune.max_concurrent_trials, cap) if c is not None]
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.tune.metric,
            mode=spec.tune.mode,
            num_samples=spec.tune.num_samples,
            search_alg=search_alg,
            scheduler=make_scheduler(spec),
            max_concurrent_trials=min(caps) if caps else None,
        ),
        run_config=run_config(spec, verbose),
    )


def run_experiment(
    spec: ExperimentSpec,
    *,
    resume: bool = False,
    address: str | None = None,
    dashboard: bool = True,
    verbose: int | None = None,
) -> Any:
    """Validate ``spec``, run (or resume) its sweep, return Tune's ``ResultGrid``.

    Raises :class:`SpecError` for an invalid spec, or when the experiment folder already
    holds an experiment and ``resume`` is false (nothing is overwritten or mixed).
    """
    from ray import tune

    from metaplat.tuning.trainable import make_trainable, trial_resources

    resolved = validate_spec(spec)
    if resolved.trainable is not None:
        trainable = tune.with_resources(resolved.trainable, trial_resources(spec))
    else:
        assert resolved.method_cls is not None
        trainable = make_trainable(spec, resolved.method_cls)
    path = experiment_path(spec)
    restorable = tune.Tuner.can_restore(path)
    if restorable and not resume:  # checked before Ray starts: fail fast, mix nothing
        raise SpecError(
            f"{path} already holds experiment {spec.name!r}; pass --resume to continue "
            "it, or choose another name (--name) or storage_path"
        )
    with ray_session(address, dashboard=dashboard) as embedded:
        if embedded:
            check_fits_locally(spec, resolved.method_cls)
        if restorable:
            log.info("resuming %s", path)
            check_same_spec(spec, path)
            tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
        else:
            if resume:
                log.warning("nothing to resume at %s; starting the experiment", path)
            tuner = build_tuner(spec, trainable, verbose)
        write_spec(spec, path)
        return tuner.fit()


def check_fits_locally(spec: ExperimentSpec, method_cls: type[Any] | None = None) -> None:
    """On a fixed-size local Ray, a trial that can never be placed is an error, not a hang."""
    import ray

    check_fits(spec, method_cls, ray.cluster_resources())


def check_fits(
    spec: ExperimentSpec, method_cls: type[Any] | None, have: Mapping[str, float]
) -> None:
    """Raise :class:`SpecError` if one trial of ``spec`` reserves more CPUs or GPUs than
    ``have`` (one machine's resources) holds. Counts exactly the placement group the trial
    reserves (:func:`metaplat.tuning.trainable.trial_bundles`), for each searched value of
    the method's resource fields; the message names the spec fields that size it."""
    from metaplat.tuning.trainable import bundle_totals, resource_variants, trial_bundles

    for searched, variant in resource_variants(spec, method_cls):
        bundles = trial_bundles(variant, method_cls)
        need = bundle_totals(bundles)
        short = {k: need[k] for k in ("CPU", "GPU") if need[k] > have.get(k, 0.0) + 1e-9}
        if short:
            raise SpecError(too_big(method_cls, short, have, bundles, searched))


def too_big(
    method_cls: type[Any] | None,
    short: Mapping[str, float],
    have: Mapping[str, float],
    bundles: list[dict[str, float]],
    searched: Mapping[str, Any],
) -> str:
    """The error for a trial that does not fit: what it needs, what there is, the fields."""
    uses_pool = getattr(method_cls, "uses_pool", True)
    fields = []
    if method_cls is not None and method_cls.resource_fields:
        fields.append("method.config." + " / ".join(method_cls.resource_fields))
    if uses_pool:
        fields.append("workers.num_workers / num_cpus / num_gpus / driver_cpus")
    else:
        fields.append("workers.driver_cpus")
    return (
        ("workers" if uses_pool else "method.config")
        + ": one trial needs "
        + ", ".join(f"{v:g} {k}" for k, v in short.items())
        + " but this local Ray has "
        + ", ".join(f"{float(have.get(k, 0.0)):g} {k}" for k in short)
        + f" (placement group {bundles}"
        + (f" with searched {dict(searched)}" if searched else "")
        + "); lower "
        + " or ".join(fields)
        + ", or run on a cluster (--address)"
    )


def check_same_spec(spec: ExperimentSpec, path: str) -> None:
    """Warn when resuming an experiment under a spec different from the one it started with."""
    if is_uri(path):
        return
    saved = Path(path) / SPEC_FILE
    if saved.exists():
        from metaplat.specs.loader import parse_spec

        old = parse_spec(yaml.safe_load(saved.read_text()))
        if old.digest() != spec.digest():
            log.warning(
                "resuming %s with a changed spec (hash %s, was %s); trials keep the search "
                "space they started with",
                path,
                spec.digest(),
                old.digest(),
            )

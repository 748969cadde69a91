"""The function trainable: one Tune trial = one outer loop trained for ``train.iterations``.

Contract with :class:`metaplat.outer.base.OuterLoop` (what a method can rely on):

1. The trial's spec is the experiment spec with the trial's sampled values filled in
   (:func:`metaplat.tuning.space.trial_spec`). The trainable builds, in this order: the task
   family (``task.family`` + ``task.config``), ``Method.Config(**method.config)``, the pool
   (``LocalPool(1)`` for ``workers.num_workers == 0`` or a method with ``uses_pool = False``,
   else ``RayPool(num_workers, num_cpus, num_gpus, max_task_retries)`` whose actors land in
   the trial's placement group), then ``Method(config, family, pool, seed=trial seed)``.
   The placement group (:func:`trial_bundles`) is the driver's bundle, then
   ``Method.actor_bundles(config)`` (actors the method starts itself, at indices 1..n), then
   one bundle per pool worker.
2. ``state = algo.init()``, or ``algo.load_state_dict(...)`` of the trial's latest checkpoint
   (``torch.load(..., weights_only=True)``: the state dict must hold tensors, numbers,
   strings and nested dicts/lists only).
3. Each iteration calls ``algo.step(state) -> (state, metrics)`` once. On the first
   iteration of a process, every ``eval_every`` iterations and on the last, it also calls
   ``algo.evaluate(state, "val", eval_tasks)``; the latest evaluation's metrics are repeated
   in every report (so schedulers always see ``tune.metric``), with ``val/at_iteration``.
4. Every iteration is reported with ``tune.report``: the step's metrics, the latest
   evaluation, ``train/iteration`` (outer iterations done, 1-based) and provenance
   (``meta/seed``, ``meta/spec_hash``, ``meta/version/<package>``). Every
   ``checkpoint_every`` iterations and at the last, the report carries a checkpoint:
   ``state.pt`` = ``{"state": algo.state_dict(state), "iteration": n, "spec_hash": ...}``.
5. A non-finite loss (any metric whose name contains ``loss``) or a non-finite
   ``tune.metric`` fails the trial with :class:`FloatingPointError` before it is reported;
   Tune records the error and the sweep goes on. ``pool.close()`` always runs.
"""

from __future__ import annotations

import itertools
import logging
import math
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metaplat.specs.loader import build_family, build_method_config
from metaplat.specs.schema import ExperimentSpec, WorkersSection
from metaplat.tuning.space import SPEC_HASH_KEY, trial_spec

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"


def make_pool(workers: WorkersSection, uses_pool: bool = True) -> Any:
    """``LocalPool`` for 0 workers (in-process) or a method that does not use the pool
    (``uses_pool=False``: no actor is started), else the Ray actor pool."""
    if workers.num_workers == 0 or not uses_pool:
        from metaplat.workers.base import LocalPool

        return LocalPool(1)
    from metaplat.workers.ray_pool import RayPool  # imported late: only this branch needs Ray

    return RayPool(
        workers.num_workers,
        num_cpus=workers.num_cpus,
        num_gpus=workers.num_gpus,
        max_task_retries=workers.max_task_retries,
    )


def trial_bundles(
    spec: ExperimentSpec, method_cls: type[Any] | None = None
) -> list[dict[str, float]]:
    """The placement-group bundles one trial of ``spec`` reserves (no Ray needed).

    In order: the trial's own process (``{"CPU": workers.driver_cpus}``, ``{}`` for 0),
    then the method's own actors (:meth:`~metaplat.outer.base.OuterLoop.actor_bundles`,
    built from ``method.config``; RLlib puts env runner ``i`` in bundle ``i``), then one
    bundle per pool worker if the method uses the pool (``uses_pool``) and
    ``workers.num_workers > 0``. ``method_cls=None`` (a ``trainable`` spec): driver + pool.
    """
    w = spec.workers
    bundles: list[dict[str, float]] = [{"CPU": float(w.driver_cpus)} if w.driver_cpus > 0 else {}]
    if method_cls is not None:
        assert spec.method is not None
        config = build_method_config(method_cls, spec.method.config, "method.config")
        for b in method_cls.actor_bundles(config):
            bundle = {k: float(v) for k, v in b.items() if v > 0}
            if not bundle:
                raise ValueError(f"{method_cls.__name__}.actor_bundles gave an empty bundle {b}")
            bundles.append(bundle)
    if getattr(method_cls, "uses_pool", True) and w.num_workers > 0:
        from metaplat.workers.resources import worker_bundles

        bundles += worker_bundles(w.num_workers, w.num_cpus, w.num_gpus, w.driver_cpus)[1:]
    return bundles


def trial_resources(spec: ExperimentSpec, method_cls: type[Any] | None = None) -> Any:
    """What one trial reserves (:func:`trial_bundles`): a ``PlacementGroupFactory``, or a
    plain CPU request when the trial's process is all there is."""
    from ray import tune

    bundles = trial_bundles(spec, method_cls)
    if len(bundles) == 1:
        return {"cpu": spec.workers.driver_cpus}
    return tune.PlacementGroupFactory(bundles)


def resource_variants(
    spec: ExperimentSpec, method_cls: type[Any] | None
) -> list[tuple[dict[str, Any], ExperimentSpec]]:
    """``(searched values, spec with them filled in)`` for every combination of the
    representative values (ends of ranges, every grid / choice value) of the searched
    ``method.config`` fields that size the method's actors (``resource_fields``); just
    ``[({}, spec)]`` when none is searched."""
    fields = set(getattr(method_cls, "resource_fields", ()))
    paths = [
        p
        for p in spec.tune.search_space
        if p.startswith("method.config.") and p.split(".", 2)[2] in fields
    ]
    out = []
    for values in itertools.product(*(spec.tune.search_space[p].representatives() for p in paths)):
        variant = spec
        for path, value in zip(paths, values, strict=True):
            variant = variant.replace_path(path, value)
        out.append((dict(zip(paths, values, strict=True)), variant))
    return out


def bundle_totals(bundles: list[dict[str, float]]) -> dict[str, float]:
    """CPUs and GPUs (and any other resource) summed over ``bundles``."""
    total = {"CPU": 0.0, "GPU": 0.0}
    for bundle in bundles:
        for k, v in bundle.items():
            total[k] = total.get(k, 0.0) + float(v)
    return total


def provenance(spec: ExperimentSpec) -> dict[str, Any]:
    """Seed, spec hash and package versions, reported with every result."""
    return {
        "meta/seed": spec.seed,
        "meta/spec_hash": spec.digest(),
        "meta/method": spec.method.name if spec.method else spec.trainable,
        "meta/family": spec.task.family if spec.task else None,
        **versions(),
    }


def config_provenance(config: dict[str, Any]) -> dict[str, Any]:
    """What a ``trainable`` spec's function reports with its results: the trial config's
    seed and spec hash (put there by the runner) and package versions."""
    return {
        "meta/seed": config.get("seed"),
        "meta/spec_hash": config.get(SPEC_HASH_KEY),
        **versions(),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that decide results."""
    import numpy
    import ray

    import metaplat

    return {
        "meta/version/metaplat": metaplat.__version__,
        "meta/version/ray": ray.__version__,
        "meta/version/torch": torch.__version__,
        "meta/version/numpy": numpy.__version__,
        "meta/version/python": platform.python_version(),
    }


def check_finite(metrics: dict[str, Any], watched: str, iteration: int, seed: int) -> None:
    """Raise ``FloatingPointError`` if a loss metric or ``watched`` is NaN or infinite."""
    for key, value in metrics.items():
        if ("loss" in key.rsplit("/", 1)[-1] or key == watched) and isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"metric {key!r} is {value} at iteration {iteration} (trial seed {seed}); "
                    "the trial stops here. Lower the learning rates or check the task config."
                )


def save_checkpoint(algo: Any, state: Any, iteration: int, spec_hash: str, directory: Path) -> None:
    torch.save(
        {"state": algo.state_dict(state), "iteration": iteration, "spec_hash": spec_hash},
        directory / CHECKPOINT_FILE,
    )


def load_checkpoint(algo: Any, directory: Path) -> tuple[Any, int]:
    """``(state, iterations done)`` from a checkpoint directory written by this module."""
    payload = torch.load(directory / CHECKPOINT_FILE, weights_only=True)
    return algo.load_state_dict(payload["state"]), int(payload["iteration"])


def run_trial(config: dict[str, Any], spec: ExperimentSpec, method_cls: type[Any]) -> None:
    """Train one trial (see the module docstring for the contract)."""
    from ray import tune

    spec = trial_spec(spec, config)
    torch.set_num_threads(max(1, int(spec.workers.driver_cpus)))
    assert spec.task is not None and spec.method is not None
    family = build_family(spec.task.family, spec.task.config)
    method_config = build_method_config(method_cls, spec.method.config, "method.config")
    meta = provenance(spec)
    meta["meta/spec_hash"] = config.get(SPEC_HASH_KEY, meta["meta/spec_hash"])
    train = spec.train
    pool = make_pool(spec.workers, method_cls.uses_pool)
    try:
        algo = method_cls(method_config, family, pool, spec.seed)
        state, start = algo.init(), 0
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                state, start = load_checkpoint(algo, Path(d))
            log.info("resumed at iteration %d", start)
        last_eval: dict[str, Any] = {}
        for it in range(start, train.iterations):
            state, metrics = algo.step(state)
            n = it + 1
            check_finite(metrics, spec.tune.metric, n, spec.seed)
            if not last_eval or n % train.eval_every == 0 or n == train.iterations:
                last_eval = dict(algo.evaluate(state, "val", train.eval_tasks))
                check_finite(last_eval, spec.tune.metric, n, spec.seed)
                last_eval["val/at_iteration"] = n
            result = {**metrics, **last_eval, "train/iteration": n, **meta}
            if n % train.checkpoint_every == 0 or n == train.iterations:
                with tempfile.TemporaryDirectory() as d:
                    save_checkpoint(algo, state, n, meta["meta/spec_hash"], Path(d))
                    tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
            else:
                tune.report(result)
    finally:
        pool.close()


def make_trainable(spec: ExperimentSpec, method_cls: type) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable for ``spec``, with its resources attached.

    ``method_cls`` is resolved by the caller (the driver), so a method registered only in
    the driver process (or given as ``module:Class``) travels with the trainable.
    """
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        run_trial(config, spec, method_cls)

    # Tune names trials and their folders after the function.
    trainable.__name__ = trainable.__qualname__ = "".join(
        c if c.isalnum() else "_" for c in method_cls.__name__.lower()
    )

    def resources(config: dict[str, Any]) -> Any:
        # Per trial: a searched resource field (method.config.num_env_runners) sizes it.
        return trial_resources(trial_spec(spec, config), method_cls)

    return tune.with_resources(trainable, resources)  # type: ignore[no-any-return]

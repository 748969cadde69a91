"""Few-shot evaluation harness: N meta-test episodes through the pool, mean and 95% CI.

Design (method-agnostic). The unit of evaluation is a *per-task* metric list: an eval job
(``job(payload, specs, device)``, see :mod:`metaplat.workers.base`) returns, for its shard,
``dict[name, list[float]]`` with one value per spec in shard order (e.g.
``{"post_acc": [...], "post_loss": [...]}``). The harness

1. draws the evaluation specs deterministically from ``(seed, "eval", split)`` -- the same
   tasks at every evaluation of a run, so curves are comparable (:func:`eval_specs`);
2. sends them through the pool in chunks of ``batch_size`` tasks (:func:`run_per_task`);
3. turns each per-task list into ``{split}/{name}`` (the mean) and ``{split}/{name}_ci95``
   (half-width of the normal 95% interval, :func:`metaplat.stats.mean_ci95`), plus
   ``{split}/num_tasks`` (:func:`summarize`).

An :class:`~metaplat.outer.base.OuterLoop` uses it inside its own ``evaluate`` so that
``evaluate(state, split, num_tasks)`` returns the ``_ci95`` keys directly; callers (the
few-shot table, Tune) then need nothing but ``evaluate``. A plain function of an episode batch
can be evaluated with :func:`evaluate_fn`.

Conventions: classification accuracies are fractions in [0, 1] (``post_acc``); regression
errors are mean squared errors (``post_mse``); ``pre_*`` are before adaptation where a method
has such a notion.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from metaplat.seeding import rng
from metaplat.stats import mean_ci95
from metaplat.tasks.base import Episode, Split, SupervisedFamily, TaskFamily, TaskSpec
from metaplat.workers.base import Job, Pool

DEFAULT_NUM_TASKS = 600
"""Meta-test episodes per evaluation unless told otherwise (the few-shot literature's 600)."""

PerTask = dict[str, list[float]]


def eval_specs(family: TaskFamily, split: Split, num_tasks: int, seed: int) -> list[TaskSpec]:
    """The ``num_tasks`` evaluation specs of ``split`` for a run seeded ``seed`` (fixed per run)."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    return family.sample(rng(seed, "eval", split), split, num_tasks)


def run_per_task(
    pool: Pool, job: Job[Any], payload: Any, specs: Sequence[TaskSpec], batch_size: int = 50
) -> PerTask:
    """Run an eval ``job`` over ``specs`` in chunks of ``batch_size``; per-task lists in spec order.

    Raises ``ValueError`` if a shard returns lists whose lengths differ from its shard size
    (each value must belong to exactly one task).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: PerTask = {}
    for start in range(0, len(specs), batch_size):
        chunk = list(specs[start : start + batch_size])
        shards: list[Mapping[str, Sequence[float]]] = pool.map(job, payload, chunk)
        got = 0
        for res in shards:
            sizes = {len(v) for v in res.values()}
            if len(sizes) != 1:
                raise ValueError(f"eval job returned per-task lists of different lengths: {sizes}")
            for name, values in res.items():
                out.setdefault(name, []).extend(float(v) for v in values)
            got += sizes.pop()
        if got != len(chunk):
            raise ValueError(f"eval job returned {got} per-task values for {len(chunk)} tasks")
    return out


def summarize(split: str, per_task: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``{split}/{name}`` means, ``{split}/{name}_ci95`` half-widths, ``{split}/num_tasks``."""
    metrics: dict[str, float] = {}
    n = 0
    for name, values in per_task.items():
        mean, half = mean_ci95(values)
        metrics[f"{split}/{name}"] = mean
        metrics[f"{split}/{name}_ci95"] = half
        n = len(values)
    metrics[f"{split}/num_tasks"] = float(n)
    return metrics


@functools.lru_cache(maxsize=32)
def _family(name: str, config_json: str) -> TaskFamily:
    from metaplat.tasks.registry import make_family

    return make_family(name, json.loads(config_json))


def family_for(spec: TaskSpec) -> TaskFamily:
    """The (per-process cached) family instance that produced ``spec``; jobs build from it."""
    return _family(spec.family, json.dumps(dict(spec.config), sort_keys=True))


def build_batch(specs: Sequence[TaskSpec], device: torch.device) -> Episode:
    """Stacked episodes ``[T, ...]`` of a shard of specs (all from one family config)."""
    family = family_for(specs[0])
    if not isinstance(family, SupervisedFamily):
        raise TypeError(f"family {family.name!r} is not supervised; cannot build episodes")
    return family.build_batch(specs, device)


EpisodeMetricFn = Callable[[Any, Episode], Mapping[str, torch.Tensor]]
"""``fn(payload, batch) -> {name: Tensor[T]}``: per-task metrics of a stacked episode batch."""


@dataclasses.dataclass(frozen=True)
class CallableEvalJob:
    """An eval job around a function of an episode batch (``fn`` must be picklable for Ray)."""

    fn: EpisodeMetricFn

    def __call__(self, payload: Any, specs: Sequence[TaskSpec], device: torch.device) -> PerTask:
        batch = build_batch(specs, device)
        with torch.no_grad():
            res = self.fn(payload, batch)
        return {k: v.detach().cpu().reshape(-1).tolist() for k, v in res.items()}


def evaluate_fn(
    fn: EpisodeMetricFn,
    family: TaskFamily,
    pool: Pool,
    split: Split = "test",
    num_tasks: int = DEFAULT_NUM_TASKS,
    seed: int = 0,
    payload: Any = None,
    batch_size: int = 50,
) -> dict[str, float]:
    """Score ``fn(payload, batch) -> {name: Tensor[T]}`` on ``num_tasks`` episodes of ``split``."""
    specs = eval_specs(family, split, num_tasks, seed)
    return summarize(split, run_per_task(pool, CallableEvalJob(fn), payload, specs, batch_size))


def evaluate_method(
    method: Any, state: Any, split: Split = "test", num_tasks: int = DEFAULT_NUM_TASKS
) -> dict[str, float]:
    """``method.evaluate(state, split, num_tasks)``, checked to carry a CI for every mean.

    Methods that do not use this harness (no ``_ci95`` keys) still work; their missing
    intervals come back as NaN so tables can show them as unknown.
    """
    metrics = dict(method.evaluate(state, split, num_tasks))
    for key in list(metrics):
        if key.endswith(("_ci95", "/num_tasks")) or not key.startswith(f"{split}/"):
            continue
        metrics.setdefault(f"{key}_ci95", float("nan"))
    return metrics

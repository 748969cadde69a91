"""Batched-children mode: many tiny children trained per pool call, the controller updated
per batch.

When to use which mode:

- **Trial per child** (``metaplat.tuning.controller_searcher``): children that take tens of
  seconds or more, need their own resources, checkpoints, early stopping (ASHA) or fault
  tolerance. Tune's per-trial overhead is seconds, so it only pays off for real children.
- **Batched** (this module): children that train in well under a second (the tiny MLPs,
  convnets and NOS rules of the tests and benchmarks). One process (or one Tune trial, see
  ``batched_search_trainable``) runs the search; each batch of programs goes through a
  :class:`~metaplat.workers.base.Pool` in one ``map`` call, so ``LocalPool`` (tests) and the
  Ray pool (cluster) are interchangeable.

Each child travels as a :class:`TaskSpec` of pseudo-family ``"search_child"`` whose
``params`` hold the program, so the generic pool protocol carries it unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from metaplat.search.children import ChildConfig, ChildResult, run_child
from metaplat.search.policy import SearchPolicy
from metaplat.seeding import derive_seed
from metaplat.tasks.base import TaskSpec
from metaplat.workers.base import Pool

log = logging.getLogger(__name__)


class ChildJob:
    """Pool job: train every child program in ``specs``; payload = ``ChildConfig.to_dict()``."""

    def __call__(
        self, payload: dict[str, Any], specs: Sequence[TaskSpec], device: torch.device
    ) -> list[dict[str, Any]]:
        config = ChildConfig.from_dict(payload)
        return [
            dataclasses.asdict(run_child(dict(s.params["program"]), config, s.seed)) for s in specs
        ]


def child_specs(programs: Sequence[dict[str, Any]], seed: int, start: int) -> list[TaskSpec]:
    """Specs for children ``start, start+1, ...`` of a search with root ``seed``."""
    return [
        TaskSpec(
            "search_child",
            {},
            {"program": p},
            derive_seed(seed, "child", start + i) % 2**52,
            "train",
        )
        for i, p in enumerate(programs)
    ]


def run_batch(policy: SearchPolicy, child: ChildConfig, pool: Pool, seed: int) -> dict[str, float]:
    """Propose one batch, train it through ``pool``, report rewards; returns batch metrics."""
    proposals = []
    for _ in range(policy.config.batch_size):
        p = policy.propose()
        if p is None:  # cannot happen when every batch is reported in full
            break
        proposals.append(p)
    specs = child_specs([prog for _, prog in proposals], seed, policy.num_proposed - len(proposals))
    results = [
        ChildResult(**r) for shard in pool.map(ChildJob(), child.to_dict(), specs) for r in shard
    ]
    for (tokens, _), r in zip(proposals, results, strict=True):
        policy.report(tokens, r.reward, r.reason)
    rewards = [r.reward for r in results]
    best = policy.best()
    metrics = {
        "search/batch_reward_mean": sum(rewards) / len(rewards),
        "search/batch_reward_max": max(rewards),
        "search/best_reward": best[1] if best else float("nan"),
        "search/children": float(len(policy.history)),
        "search/failed": float(sum(r.status != "ok" for r in results)),
        "search/child_seconds": sum(r.metrics.get("child/seconds", 0.0) for r in results),
    }
    return metrics | policy.last_metrics


def run_search(
    policy: SearchPolicy, child: ChildConfig, pool: Pool, num_children: int, seed: int
) -> list[dict[str, float]]:
    """Batches until ``num_children`` children are trained; per-batch metrics in order."""
    out = []
    while len(policy.history) < num_children:
        out.append(run_batch(policy, child, pool, seed))
        log.info("batch %d: %s", len(out), out[-1])
    return out

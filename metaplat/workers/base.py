"""The worker-pool contract, and an in-process pool. No Ray here (see ``workers/ray_pool.py``).

A *job* is a picklable callable that runs inner-loop work for a contiguous shard of task
specs on one worker and returns one compact result for the whole shard (a summed
meta-gradient, a list of fitness values, trajectories). A pool shards the specs, sends
the payload (meta-parameters) once, runs the job on every shard and returns the shard
results in task order, so an outer loop that combines them in order reproduces its seed
whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from metaplat.tasks.base import TaskSpec

R = TypeVar("R", covariant=True)


@runtime_checkable
class Job(Protocol[R]):
    """Inner-loop work for one shard: ``job(payload, specs, device) -> result``.

    ``payload`` is what the outer loop broadcasts (e.g. ``dict[str, Tensor]`` of
    meta-parameters, on CPU); the job moves it to ``device`` itself. Jobs must be pure
    functions of their arguments: all randomness comes from the specs' seeds and the payload.
    """

    def __call__(self, payload: Any, specs: Sequence[TaskSpec], device: torch.device) -> R: ...


def shard(specs: Sequence[TaskSpec], num_shards: int) -> list[list[TaskSpec]]:
    """Split ``specs`` into at most ``num_shards`` contiguous, near-equal, non-empty shards."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    n = len(specs)
    k = min(num_shards, n) or 1
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        out.append(list(specs[start : start + size]))
        start += size
    return [s for s in out if s] or [[]]


@runtime_checkable
class Pool(Protocol):
    """Runs jobs over shards of task specs; results come back in task (shard) order."""

    num_workers: int

    def map(self, job: Job[Any], payload: Any, specs: Sequence[TaskSpec]) -> list[Any]:
        """One result per shard, shards in task order (``len <= num_workers``)."""
        ...

    def close(self) -> None: ...


class LocalPool:
    """Runs every shard in this process, one after another.

    ``num_workers`` only changes the sharding, which lets tests check that results do not
    depend on how tasks are split across workers.
    """

    def __init__(self, num_workers: int = 1, device: str | torch.device = "cpu"):
        self.num_workers = num_workers
        self.device = torch.device(device)

    def map(self, job: Job[Any], payload: Any, specs: Sequence[TaskSpec]) -> list[Any]:
        return [job(payload, s, self.device) for s in shard(specs, self.num_workers)]

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

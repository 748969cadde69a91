"""Ray Core lives here only: actors that run inner loops for batches of task specs.

``RayPool`` and its errors are imported lazily, so ``LocalPool`` users never import Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metaplat.workers.base import Job, LocalPool, Pool, shard
from metaplat.workers.resources import worker_bundles

if TYPE_CHECKING:
    from metaplat.workers.ray_pool import JobError, RayPool, WorkerInfo, WorkerLostError

__all__ = [
    "Job",
    "JobError",
    "LocalPool",
    "Pool",
    "RayPool",
    "WorkerInfo",
    "WorkerLostError",
    "shard",
    "worker_bundles",
]

_LAZY = {"RayPool", "JobError", "WorkerInfo", "WorkerLostError"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from metaplat.workers import ray_pool

        return getattr(ray_pool, name)
    raise AttributeError(f"module 'metaplat.workers' has no attribute {name!r}")

"""Ray Core lives here only: actors that run inner loops for batches of task specs."""

from metaplat.workers.base import Job, LocalPool, Pool, shard

__all__ = ["Job", "LocalPool", "Pool", "shard"]

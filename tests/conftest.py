"""Shared fixtures: one small Ray instance per test session, torch kept to one thread."""

from __future__ import annotations

import os

# Tests only: a local throwaway cluster on loopback. Outside tests token auth stays on.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """The session's one Ray instance: 2 CPUs, a 256 MB object store, no dashboard."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            num_gpus=0,
            object_store_memory=256 * 1024**2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield
    ray.shutdown()

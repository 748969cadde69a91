"""What a pool of workers asks of a cluster: argument checks, bundles, fail-fast checks.

Pure functions over plain numbers and dicts (no Ray import), so the tuning layer can size a
trial's placement group with :func:`worker_bundles` and tests can check the fail-fast
messages without a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def validate_worker_resources(num_workers: int, num_cpus: float, num_gpus: float) -> None:
    """Raise ``ValueError`` naming the field if a per-worker request cannot be valid anywhere.

    ``num_workers >= 1``; ``num_cpus >= 0``; ``num_gpus >= 0`` and either a fraction of one
    GPU (``<= 1``, e.g. ``0.25`` puts four workers on one GPU) or a whole number of GPUs.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    if not math.isfinite(num_cpus) or num_cpus < 0:
        raise ValueError(f"num_cpus must be a finite number >= 0 per worker, got {num_cpus!r}")
    if not math.isfinite(num_gpus) or num_gpus < 0:
        raise ValueError(f"num_gpus must be a finite number >= 0 per worker, got {num_gpus!r}")
    if num_gpus > 1 and num_gpus != int(num_gpus):
        raise ValueError(
            f"num_gpus must be a fraction <= 1 (several workers share one GPU) or a whole "
            f"number of GPUs, got {num_gpus!r}"
        )
    if num_cpus == 0 and num_gpus == 0:
        raise ValueError("a worker needs num_cpus > 0 or num_gpus > 0, got both 0")


def worker_bundles(
    num_workers: int, num_cpus: float = 1.0, num_gpus: float = 0.0, driver_cpus: float = 1.0
) -> list[dict[str, float]]:
    """Placement-group bundles for a Tune trial that drives a pool of ``num_workers`` workers.

    The first bundle is the trial driver's (``{"CPU": driver_cpus}``, or ``{}`` when
    ``driver_cpus == 0``); then one bundle per worker with ``num_cpus`` CPUs and ``num_gpus``
    GPUs. Zero entries are left out (Ray rejects them). The tuning layer wraps the list in a
    ``tune.PlacementGroupFactory``; a ``RayPool(num_workers, num_cpus, num_gpus)`` created
    inside the trial then lands in these bundles.
    """
    validate_worker_resources(num_workers, num_cpus, num_gpus)
    if not math.isfinite(driver_cpus) or driver_cpus < 0:
        raise ValueError(f"driver_cpus must be a finite number >= 0, got {driver_cpus!r}")
    driver = {"CPU": float(driver_cpus)} if driver_cpus > 0 else {}
    worker = {k: float(v) for k, v in (("CPU", num_cpus), ("GPU", num_gpus)) if v > 0}
    return [driver] + [dict(worker) for _ in range(num_workers)]


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_cluster_fits(
    num_workers: int,
    num_cpus: float,
    num_gpus: float,
    total: Mapping[str, float],
    nodes: Sequence[Mapping[str, float]],
) -> None:
    """Raise ``ValueError`` if the workers can never be placed on this cluster.

    ``total`` is ``ray.cluster_resources()``; ``nodes`` holds each alive node's resources.
    Checks that one node can hold one worker and that the cluster can hold all of them at
    once (actors asking for more would wait forever instead of failing).
    """
    need = {"CPU": num_cpus, "GPU": num_gpus}
    field = {"CPU": "num_cpus", "GPU": "num_gpus"}
    for key, per_worker in need.items():
        if per_worker <= 0:
            continue
        have = float(total.get(key, 0.0))
        if have == 0:
            raise ValueError(
                f"{field[key]}={_fmt(per_worker)} per worker, but the Ray cluster has no "
                f"{key}s (cluster resources: {_describe(total)}); set {field[key]}=0"
                + (" to run the workers on CPU" if key == "GPU" else "")
            )
        if num_workers * per_worker > have + 1e-9:
            raise ValueError(
                f"{num_workers} workers x {field[key]}={_fmt(per_worker)} need "
                f"{_fmt(num_workers * per_worker)} {key}s, but the Ray cluster has "
                f"{_fmt(have)}; use fewer workers or a smaller {field[key]}"
            )
    if nodes and not any(
        all(float(n.get(k, 0.0)) + 1e-9 >= v for k, v in need.items() if v > 0) for n in nodes
    ):
        biggest = ", ".join("{" + _describe(n) + "}" for n in nodes)
        raise ValueError(
            f"no single node can hold one worker (num_cpus={_fmt(num_cpus)}, "
            f"num_gpus={_fmt(num_gpus)}); nodes have: {biggest}"
        )


def check_bundles_fit(
    num_workers: int,
    num_cpus: float,
    num_gpus: float,
    bundles: Sequence[Mapping[str, float]],
    held: Mapping[str, float] | None = None,
) -> None:
    """Raise ``ValueError`` if the workers cannot fit in the current placement group.

    Inside a Tune trial the pool's actors are captured by the trial's placement group, so
    they must fit in its bundles (size them with :func:`worker_bundles`). ``held`` is what
    the calling process (the trial driver) holds itself; Tune places it in bundle 0, so it
    is taken off that bundle. A worker must fit inside one bundle.
    """
    free = [{k: float(v) for k, v in b.items()} for b in bundles]
    if held and free:
        for k, v in held.items():
            free[0][k] = max(0.0, free[0].get(k, 0.0) - float(v))
    need = {k: v for k, v in (("CPU", num_cpus), ("GPU", num_gpus)) if v > 0}
    fits = sum(min(int(b.get(k, 0.0) / v + 1e-9) for k, v in need.items()) for b in free)
    if fits < num_workers:
        raise ValueError(
            f"{num_workers} workers (num_cpus={_fmt(num_cpus)}, num_gpus={_fmt(num_gpus)} "
            f"each) do not fit in this trial's placement group: it holds {fits} "
            f"(bundles: {[dict(b) for b in bundles]}, the trial itself holds "
            f"{dict(held or {})}); size the trial with worker_bundles({num_workers}, "
            f"{_fmt(num_cpus)}, {_fmt(num_gpus)}, driver_cpus)"
        )


def _describe(resources: Mapping[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU") if k in resources] or sorted(
        k for k in resources if not k.startswith("node:")
    )[:4]
    return ", ".join(f"{k}: {_fmt(float(resources[k]))}" for k in keys) or "none"

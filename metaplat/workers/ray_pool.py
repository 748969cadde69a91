"""A pool of Ray worker actors: the only Ray Core code in metaplat.

One outer iteration is one :meth:`RayPool.map` call: the specs are cut into contiguous
shards (one per worker, :func:`~metaplat.workers.base.shard`), the payload goes into the
object store once, each actor gets *one* call carrying its whole shard (Ray's per-call
overhead is about a millisecond, so never one call per task), and the shard results come
back in task order, so an outer loop reproduces its seed whatever the number of workers.

Faults. An actor that dies mid-call (node lost, OOM-killed, ``ray.kill``) is restarted by Ray
(``max_restarts``) and its call retried (``max_task_retries``); ``map`` still returns every
shard. A job that *raises* is a bug, not a fault: it is never retried, and :class:`JobError`
re-raises it on the driver with the worker's traceback and the shard's task seeds.

Placement. Each worker asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions share a
GPU); a worker runs on CUDA iff Ray assigned it a GPU. Inside a Tune trial, the actors land
in the trial's placement group (Tune sets ``placement_group_capture_child_tasks``); size the
trial with :func:`metaplat.workers.resources.worker_bundles`. Requests that can never be
placed fail at construction with an error naming the field and what the cluster has.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import traceback
from collections.abc import Sequence
from typing import Any

import ray
import torch
from ray.actor import ActorHandle
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from metaplat.tasks.base import TaskSpec
from metaplat.workers.base import Job, shard
from metaplat.workers.resources import (
    check_bundles_fit,
    check_cluster_fits,
    validate_worker_resources,
)

log = logging.getLogger(__name__)

_MAX_SEEDS_SHOWN = 32


class JobError(RuntimeError):
    """A job raised on a worker. Carries the shard's position, task seeds and the traceback.

    ``__cause__`` is the worker's original exception when it could be pickled.
    """

    def __init__(self, message: str, shard_index: int, seeds: list[int], worker_traceback: str):
        super().__init__(message)
        self.shard_index = shard_index
        self.seeds = seeds
        self.worker_traceback = worker_traceback


class WorkerLostError(RuntimeError):
    """A worker died and its call failed every retry (or the actor is dead for good)."""


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """Where one worker actor runs and what it was given."""

    index: int
    """Position of the worker in the pool (worker ``i`` runs shard ``i``)."""
    node_id: str
    """Ray node id (hex) of the node hosting the actor."""
    device: str
    """The torch device its jobs get: ``"cuda:0"`` when Ray assigned it a GPU, else ``"cpu"``."""
    gpu_ids: tuple[str, ...]
    """GPU ids Ray assigned to the actor (empty on CPU workers)."""
    num_threads: int
    """``torch.get_num_threads()`` in the actor (its CPU count, at least 1)."""
    placement_group_id: str | None
    """Hex id of the placement group the actor runs in, or ``None``."""
    pid: int
    """Process id of the actor (changes when Ray restarts it)."""


@dataclasses.dataclass(frozen=True)
class _Failure:
    """What a worker returns instead of a result when the job raised."""

    type_name: str
    message: str
    traceback: str
    exception: BaseException | None  # the original, when it pickles


@dataclasses.dataclass(frozen=True)
class _Array:
    """A CPU tensor in transit as a numpy array (Ray ships arrays about 2x cheaper)."""

    array: Any


def _pack(obj: Any) -> Any:
    """Tensors inside dicts, lists and tuples -> CPU, then :class:`_Array` where numpy can.

    Tensors that require grad or have no numpy dtype (bfloat16) stay tensors (on CPU);
    anything else passes as is.
    """
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            return obj
        obj = obj.cpu()  # results of GPU workers arrive on CPU: the driver may have no GPU
        if obj.dtype in _NUMPY_DTYPES:
            return _Array(obj.resolve_conj().resolve_neg().numpy())
        return obj
    if type(obj) is dict:
        return {k: _pack(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_pack(v) for v in obj)
    return obj


def _unpack(obj: Any) -> Any:
    """Inverse of :func:`_pack`; tensors come back as fresh, writable copies."""
    if isinstance(obj, _Array):
        # Copy: arrays read from the object store may be read-only shared memory.
        return torch.from_numpy(obj.array.copy())
    if type(obj) is dict:
        return {k: _unpack(v) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_unpack(v) for v in obj)
    return obj


_NUMPY_DTYPES = {
    torch.float64, torch.float32, torch.float16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
}  # fmt: skip


class _Worker:
    """Actor body: runs jobs on shards with the device Ray's resources entitle it to."""

    def __init__(self, index: int, num_cpus: float):
        self._index = index
        # Ray sets OMP_NUM_THREADS from num_cpus too, but torch may have read it already.
        torch.set_num_threads(max(1, int(num_cpus)))
        gpu_ids = ray.get_gpu_ids()
        # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPUs, so it is always cuda:0 here.
        use_cuda = bool(gpu_ids) and torch.cuda.is_available()
        self._device = torch.device("cuda", 0) if use_cuda else torch.device("cpu")
        self._gpu_ids = tuple(str(g) for g in gpu_ids)

    def info(self) -> WorkerInfo:
        import os

        from ray.util.placement_group import get_current_placement_group

        pg = get_current_placement_group()
        return WorkerInfo(
            index=self._index,
            node_id=ray.get_runtime_context().get_node_id(),
            device=str(self._device),
            gpu_ids=self._gpu_ids,
            num_threads=torch.get_num_threads(),
            placement_group_id=None if pg is None else pg.id.hex(),
            pid=os.getpid(),
        )

    def run(self, job: Job[Any], payload: Any, specs: list[TaskSpec]) -> Any:
        try:
            return _pack(job(_unpack(payload), specs, self._device))
        except Exception as e:  # returned, not raised: Ray must not retry a bug
            try:
                pickle.dumps(e)
                exc: BaseException | None = e
            except Exception:
                exc = None
            return _Failure(type(e).__name__, str(e), traceback.format_exc(), exc)


class RayPool:
    """``num_workers`` Ray actors running jobs on contiguous shards of task specs.

    Implements the :class:`~metaplat.workers.base.Pool` protocol. Needs a running Ray
    (``ray.init()`` or a Tune trial). Use as a context manager, or call :meth:`close`.

    Args:
        num_workers: worker actors (= maximum shards per ``map``), ``>= 1``.
        num_cpus: CPUs per worker (fractions allowed); also the worker's torch thread count.
        num_gpus: GPUs per worker: a fraction ``<= 1`` shares one GPU (``0.25``: four
            workers per GPU), or a whole number.
        max_task_retries: how often one call is retried after its actor died (then
            :class:`WorkerLostError`).
        max_restarts: how often Ray restarts each dead actor over the pool's life; ``-1``
            (default) is unlimited, so a long run survives any number of lost nodes while
            each call stays bounded by ``max_task_retries``.
        placement_timeout_s: how long construction waits for every actor to be placed
            and started before raising ``TimeoutError``.
        check_resources: fail fast if the request can never fit the cluster (or the current
            placement group). Turn off on autoscaling clusters, where nodes appear later.

    Raises:
        ValueError: bad arguments, or a request the cluster can never satisfy.
        RuntimeError: Ray is not initialised.
        TimeoutError: the actors were not all running after ``placement_timeout_s``.
    """

    def __init__(
        self,
        num_workers: int,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_task_retries: int = 3,
        max_restarts: int = -1,
        placement_timeout_s: float = 120.0,
        check_resources: bool = True,
    ):
        validate_worker_resources(num_workers, num_cpus, num_gpus)
        if max_task_retries < 0:
            raise ValueError(f"max_task_retries must be >= 0, got {max_task_retries}")
        if max_restarts < -1:
            raise ValueError(f"max_restarts must be >= 0 or -1 (unlimited), got {max_restarts}")
        if placement_timeout_s <= 0:
            raise ValueError(f"placement_timeout_s must be > 0, got {placement_timeout_s}")
        if not ray.is_initialized():
            raise RuntimeError(
                "RayPool needs a running Ray: call ray.init() first (or run inside a Tune "
                "trial); use LocalPool to run without Ray"
            )
        self.num_workers = num_workers
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.max_task_retries = max_task_retries
        if check_resources:
            self._check_fits()

        actor_cls = ray.remote(_Worker)
        # Ray's stub types ActorClass.remote() as ActorHandle[T] | type[T]; it returns a handle.
        self._actors: list[ActorHandle[_Worker]] = [
            actor_cls.options(  # type: ignore[misc]
                num_cpus=self.num_cpus,
                num_gpus=self.num_gpus,
                max_restarts=max_restarts,
                max_task_retries=max_task_retries,
            ).remote(i, self.num_cpus)
            for i in range(num_workers)
        ]
        self._closed = False
        self._wait_ready(placement_timeout_s)

    # -- construction helpers ----------------------------------------------------------
    def _check_fits(self) -> None:
        from ray.util.placement_group import get_current_placement_group

        pg = get_current_placement_group()
        if (
            pg is not None
            and ray.get_runtime_context().should_capture_child_tasks_in_placement_group
        ):
            held = ray.get_runtime_context().get_assigned_resources()
            check_bundles_fit(self.num_workers, self.num_cpus, self.num_gpus, pg.bundle_specs, held)
        else:
            nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive", False)]
            check_cluster_fits(
                self.num_workers, self.num_cpus, self.num_gpus, ray.cluster_resources(), nodes
            )

    def _wait_ready(self, timeout_s: float) -> None:
        refs: list[ray.ObjectRef[WorkerInfo]] = [a.info.remote() for a in self._actors]
        try:
            infos = ray.get(refs, timeout=timeout_s)
        except RayActorError as e:  # __init__ raised, or the worker could not import it
            self.close()
            raise RuntimeError(
                f"RayPool workers failed to start: {e}\n(is metaplat importable on every node? "
                f"install it there or pass it in ray.init's runtime_env)"
            ) from e
        except GetTimeoutError:
            available = ray.available_resources()
            self.close()
            raise TimeoutError(
                f"{self.num_workers} workers (num_cpus={self.num_cpus:g}, "
                f"num_gpus={self.num_gpus:g} each) were not all placed after {timeout_s:g}s; "
                f"available now: CPU={available.get('CPU', 0):g}, "
                f"GPU={available.get('GPU', 0):g} (other actors or trials may hold the rest)"
            ) from None
        log.info("RayPool ready: %s", [(i.node_id[:8], i.device) for i in infos])

    # -- the Pool protocol -------------------------------------------------------------
    def map(self, job: Job[Any], payload: Any, specs: Sequence[TaskSpec]) -> list[Any]:
        """Run ``job`` on each shard of ``specs``; one result per shard, in task order.

        Worker ``i`` gets shard ``i`` in one call. Tensors inside dicts, lists and tuples of
        the payload and of the results travel as numpy arrays and arrive as fresh, writable
        CPU tensors (so GPU workers' results land on CPU). Define jobs in importable
        modules: classes of ``__main__`` are re-sent by value on every call.

        Raises:
            JobError: the job raised on a worker (not retried).
            WorkerLostError: a worker died and its call failed every retry.
        """
        if self._closed:
            raise RuntimeError("RayPool.map called after close()")
        shards = shard(specs, self.num_workers)
        payload_ref = ray.put(_pack(payload))  # once per call; every actor reads this object
        # zip stops at the shards: fewer shards than actors when there are few specs
        refs: list[ray.ObjectRef[Any]] = [
            a.run.remote(job, payload_ref, s) for a, s in zip(self._actors, shards, strict=False)
        ]
        results = []
        for i, (ref, s) in enumerate(zip(refs, shards, strict=True)):
            try:
                out = ray.get(ref)
            except RayTaskError as e:  # the job could not even start (e.g. unpicklable)
                raise self._job_error(job, i, len(shards), s, type(e).__name__, str(e)) from e
            except RayActorError as e:
                raise WorkerLostError(
                    f"worker {i} died running shard {i} of {len(shards)} (task seeds "
                    f"{_seeds_text(s)}) and every retry (max_task_retries="
                    f"{self.max_task_retries}) failed or it is dead for good: {e}"
                ) from e
            if isinstance(out, _Failure):
                err = self._job_error(job, i, len(shards), s, out.type_name, out.traceback)
                raise err from out.exception
            results.append(_unpack(out))
        return results

    def _job_error(
        self, job: Job[Any], i: int, n: int, specs: list[TaskSpec], what: str, tb: str
    ) -> JobError:
        seeds = [s.seed for s in specs]
        return JobError(
            f"job {job!r} raised {what} on shard {i} of {n} (worker {i}, task seeds "
            f"{_seeds_text(specs)}); worker traceback:\n{tb}",
            shard_index=i,
            seeds=seeds,
            worker_traceback=tb,
        )

    # -- introspection -----------------------------------------------------------------
    @property
    def actors(self) -> list[ActorHandle]:
        """The worker actors, worker ``i`` running shard ``i``."""
        return list(self._actors)

    def worker_info(self) -> list[WorkerInfo]:
        """Where each worker runs now (asks the actors; a restarted actor may have moved)."""
        return list(ray.get([a.info.remote() for a in self._actors]))

    def devices(self) -> list[torch.device]:
        """The torch device each worker hands its jobs (``cuda:0`` iff Ray gave it a GPU)."""
        return [torch.device(i.device) for i in self.worker_info()]

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Kill the worker actors (idempotent). The pool cannot be used afterwards."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already dead or Ray shut down: nothing left to free
                log.debug("actor already gone", exc_info=True)

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"RayPool(num_workers={self.num_workers}, num_cpus={self.num_cpus:g}, "
            f"num_gpus={self.num_gpus:g})"
        )


def _seeds_text(specs: Sequence[TaskSpec]) -> str:
    seeds = [s.seed for s in specs]
    if len(seeds) <= _MAX_SEEDS_SHOWN:
        return str(seeds)
    return f"{seeds[:_MAX_SEEDS_SHOWN]}... ({len(seeds)} in all)"

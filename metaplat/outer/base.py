"""The outer-loop contract: ``Config`` + ``init`` + ``step`` (+ ``evaluate``). No Tune here.

An outer loop reads top to bottom like the paper's algorithm box. It gets its typed config,
the task family it meta-learns over, a worker pool and a seed; its state is a dataclass of
tensors and plain numbers, so it checkpoints with ``torch.save`` and reloads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from metaplat._registry import LazyRegistry
from metaplat.tasks.base import Split, TaskFamily
from metaplat.workers.base import Pool

C = TypeVar("C")
S = TypeVar("S")

Metrics = dict[str, float]


class OuterLoop(ABC, Generic[C, S]):
    """One meta-learning method.

    Subclasses set ``name``, ``Config`` (a frozen dataclass whose fields carry one-line
    docstrings and validate in ``__post_init__``), ``State`` (a dataclass), and the task
    kinds they accept.

    Metric keys are ``area/name``: ``train/...`` from :meth:`step`, ``val/...`` or
    ``test/...`` from :meth:`evaluate`.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    State: ClassVar[type]
    task_kinds: ClassVar[tuple[str, ...]] = ("supervised",)
    uses_pool: ClassVar[bool] = True
    """Whether inner loops run on the ``workers`` pool. A method that starts its own actors
    instead (RLlib's env runners) sets ``False``: its trials get ``LocalPool(1)``, start no
    pool actor and reserve no pool bundles, and its specs must keep ``workers.num_workers``
    at 0."""
    resource_fields: ClassVar[tuple[str, ...]] = ()
    """``Config`` fields that size :meth:`actor_bundles` (named in resource errors; their
    searched values are checked against a local Ray before a sweep starts)."""

    @classmethod
    def actor_bundles(cls, config: Any) -> list[dict[str, float]]:
        """Placement-group bundles for the actors this method starts itself, one per actor.

        A Tune trial reserves ``[driver bundle] + actor_bundles(config) + [one bundle per
        pool worker]``, so these sit at bundle indices ``1..n`` (where RLlib places env
        runner ``i``). Zero entries are left out (Ray rejects them). Default: none.
        """
        return []

    def __init__(self, config: C, family: TaskFamily, pool: Pool, seed: int):
        if family.kind not in self.task_kinds:
            raise ValueError(
                f"method {self.name!r} needs a task family of kind "
                f"{' or '.join(self.task_kinds)}; {family.name!r} is {family.kind!r}"
            )
        self.config = config
        self.family = family
        self.pool = pool
        self.seed = seed

    @abstractmethod
    def init(self) -> S:
        """Fresh meta-parameters and optimizer state, from ``self.seed`` only."""

    @abstractmethod
    def step(self, state: S) -> tuple[S, Metrics]:
        """One outer iteration: sample meta-train tasks, run inner loops on the pool, update."""

    @abstractmethod
    def evaluate(self, state: S, split: Split, num_tasks: int | None = None) -> Metrics:
        """Score the meta-learned object on fresh tasks of ``split``."""

    def state_dict(self, state: S) -> dict[str, Any]:
        """A ``torch.save``-able dict (tensors, numbers, nested dicts/lists only)."""
        return dataclasses.asdict(state)  # type: ignore[call-overload, no-any-return]

    def load_state_dict(self, d: dict[str, Any]) -> S:
        return self.State(**d)  # type: ignore[no-any-return]


METHODS: LazyRegistry[type[OuterLoop[Any, Any]]] = LazyRegistry(
    "method",
    {
        "maml": "metaplat.outer.maml:MAML",
        "fomaml": "metaplat.outer.maml:FOMAML",
        "reptile": "metaplat.outer.reptile:Reptile",
        "metasgd": "metaplat.outer.metasgd:MetaSGD",
        "anil": "metaplat.outer.anil:ANIL",
        "protonet": "metaplat.outer.protonet:ProtoNet",
        "matchingnet": "metaplat.outer.matchingnet:MatchingNet",
        "rl2": "metaplat.outer.rl2:RL2",
        "rl2_rllib": "metaplat.outer.rl2_rllib:RL2RLlib",
    },
)

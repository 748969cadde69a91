"""The task-distribution contract shared by every outer loop.

A *family* is a distribution over tasks. Sampling from it returns small frozen
:class:`TaskSpec` records (plain JSON data); building a spec gives the task itself,
late, on whichever process needs it (usually a worker actor). This split mirrors
``learned_optimization``'s ``TaskFamily.sample`` / ``task_fn`` and keeps Ray messages tiny.

Splits. Every spec carries an integer ``seed`` from which *all* of its parameters are
derived (``family.sample_params(np.random.default_rng(seed), split)``). Seeds of the three
splits are disjoint residue classes (``seed % 3 == split index``), so meta-train,
meta-val and meta-test never share a task, and the same seed gives the same spec in any
process. Families with a finite pool of classes (glyphs) additionally partition the
pool itself by split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
TaskKind = Literal["supervised", "rl", "optimization"]

# Seeds are drawn below this bound so that they survive a JSON round trip exactly.
_SEED_BOUND = 2**52


def split_index(split: str) -> int:
    """Index of ``split`` in :data:`SPLITS`; raises ``ValueError`` naming the allowed values."""
    try:
        return SPLITS.index(split)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}") from None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task, as plain data: enough to rebuild it anywhere.

    Attributes:
        family: registered family name (see ``metaplat tasks list``).
        config: the family's constructor arguments (e.g. ``{"num_arms": 5}``).
        params: the task's sampled parameters (e.g. ``{"probs": [...]}``), JSON types only.
        seed: the task seed; all of ``params`` and the task's data derive from it.
        split: which meta-split the seed belongs to.
    """

    family: str
    config: Mapping[str, Any]
    params: Mapping[str, Any]
    seed: int
    split: Split

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TaskSpec:
        d = json.loads(text)
        return cls(
            family=d["family"],
            config=d["config"],
            params=d["params"],
            seed=int(d["seed"]),
            split=d["split"],
        )

    def digest(self) -> str:
        """A short stable hash of the spec, for logs and caches."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


class TaskFamily(ABC):
    """A distribution over tasks.

    Subclasses set ``name`` and ``kind``, take their family-level settings as keyword
    arguments in ``__init__`` (validated there; ``config()`` returns them as a dict),
    implement :meth:`sample_params` and :meth:`build`, and, where they can, the batched
    builders. A family never holds per-task state.
    """

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    description: ClassVar[str] = ""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The family's constructor arguments, JSON types only: ``type(self)(**config())``."""

    @abstractmethod
    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        """Draw one task's parameters from ``rng`` (seeded by the task seed)."""

    @abstractmethod
    def build(self, spec: TaskSpec) -> Any:
        """Build the task a spec describes (an episode, a gymnasium env or a problem)."""

    def describe(self) -> dict[str, Any]:
        """Human-readable facts for ``metaplat tasks show``: kind, config, distributions, splits."""
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "config": self.config(),
            "splits": "disjoint task seeds per split (seed % 3)",
        }

    # -- sampling (shared) -------------------------------------------------------------
    def spec(self, seed: int, split: Split) -> TaskSpec:
        """The spec with task seed ``seed``; ``seed`` must belong to ``split``."""
        idx = split_index(split)
        if seed % len(SPLITS) != idx:
            raise ValueError(
                f"seed {seed} belongs to split {SPLITS[seed % len(SPLITS)]!r}, not {split!r}"
            )
        params = self.sample_params(np.random.default_rng(seed), split)
        return TaskSpec(self.name, self.config(), params, int(seed), split)

    def sample(self, rng: np.random.Generator, split: Split, n: int) -> list[TaskSpec]:
        """Draw ``n`` specs of ``split``; ``rng`` decides only which task seeds are used."""
        idx = split_index(split)
        raw = rng.integers(0, _SEED_BOUND // len(SPLITS), size=n)
        return [self.spec(int(r) * len(SPLITS) + idx, split) for r in raw]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class SupervisedFamily(TaskFamily):
    """A family of supervised few-shot episodes.

    ``build(spec)`` returns an :class:`Episode`; :meth:`build_batch` stacks many with a
    leading task dimension so inner loops can ``vmap`` over it. Data derive from the spec's
    seed, so a spec always rebuilds to the same episode.
    """

    kind: ClassVar[TaskKind] = "supervised"

    @abstractmethod
    def build(self, spec: TaskSpec) -> Episode: ...

    def build_batch(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> Episode:
        """Stack episodes: every tensor gets a leading ``[num_tasks]`` dimension."""
        return Episode.stack([self.build(s) for s in specs]).to(device)


class RLFamily(TaskFamily):
    """A family of RL tasks.

    ``build(spec)`` returns a ``gymnasium.Env``. Families whose dynamics can be batched
    also implement :meth:`build_batched`, a torch environment stepping all tasks at once.
    """

    kind: ClassVar[TaskKind] = "rl"
    batchable: ClassVar[bool] = False

    def build_batched(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> Any:
        """A batched torch env over ``specs`` (see ``environments.batched.BatchedEnv``)."""
        raise NotImplementedError(f"family {self.name!r} has no batched environment")


class OptimizationFamily(TaskFamily):
    """A family of optimization problems (the tasks of learned optimizers and optimizer search).

    ``build(spec)`` returns a problem object with ``dim``, ``init_params(generator) -> [dim]``
    and ``loss(theta) -> scalar`` (see ``metaplat.tasks.quadratic.QuadraticProblem``);
    :meth:`build_batch` stacks many problems with a leading ``[T]`` dimension whose
    ``loss(theta [T, dim]) -> [T]``.
    """

    kind: ClassVar[TaskKind] = "optimization"

    def build_batch(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> Any:
        """The problems of ``specs`` stacked with a leading ``[T]`` dimension."""
        raise NotImplementedError(f"family {self.name!r} has no batched problems")


@dataclasses.dataclass
class Episode:
    """A few-shot supervised episode (or a stack of them).

    Shapes for one task: ``support_x [Ns, *x]``, ``support_y [Ns, *y]``, ``query_x [Nq, *x]``,
    ``query_y [Nq, *y]``; a stacked batch adds a leading ``[T]``. Classification targets
    are int64 class indices in ``[0, num_ways)``; regression targets are float.
    """

    support_x: Any
    support_y: Any
    query_x: Any
    query_y: Any

    @staticmethod
    def stack(episodes: Sequence[Episode]) -> Episode:
        import torch

        return Episode(
            *(
                torch.stack([getattr(e, f.name) for e in episodes])
                for f in dataclasses.fields(Episode)
            )
        )

    def to(self, device: Any) -> Episode:
        return Episode(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    def __getitem__(self, i: int | slice) -> Episode:
        return Episode(*(getattr(self, f.name)[i] for f in dataclasses.fields(self)))

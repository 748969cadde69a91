"""A search space as a token grammar: an ordered list of decisions, each with its choices.

The controller (``metaplat.nn.controller``) emits one token per decision, in order; a token is
an index into that decision's ``choices``. A space decodes a token sequence into a *program*
(plain JSON data: an architecture or an update rule) that a child builder turns into
something runnable. Spaces are frozen data, so they travel to workers and into checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from metaplat._registry import LazyRegistry, unknown_name_message


@dataclasses.dataclass(frozen=True)
class Decision:
    """One controller step: pick one of ``choices`` (JSON scalars) for ``name``."""

    name: str
    """Key of this decision in the decoded program (e.g. ``"layer2/filters"``)."""
    choices: tuple[Any, ...]
    """The decision's vocabulary; the token is an index into it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 1:
            raise ValueError(f"decision {self.name!r}: choices must be non-empty, got ()")


class SearchSpace(Protocol):
    """What the controller and the searcher need to know about a space."""

    name: str

    @property
    def decisions(self) -> tuple[Decision, ...]: ...

    def decode(self, tokens: Sequence[int]) -> dict[str, Any]:
        """The program (JSON data) that ``tokens`` (one per decision) describe."""
        ...

    def describe(self, program: dict[str, Any]) -> str:
        """A one-line human-readable form of ``program`` (an architecture, a formula)."""
        ...


def vocab_sizes(space: SearchSpace) -> list[int]:
    """Number of choices of each decision, in order."""
    return [len(d.choices) for d in space.decisions]


def check_tokens(space: SearchSpace, tokens: Sequence[int]) -> list[int]:
    """``tokens`` as ints, validated: one per decision, each in range. Raises ``ValueError``."""
    decisions = space.decisions
    if len(tokens) != len(decisions):
        raise ValueError(
            f"space {space.name!r} has {len(decisions)} decisions, got {len(tokens)} tokens"
        )
    out = []
    for d, t in zip(decisions, tokens, strict=True):
        t = int(t)
        if not 0 <= t < len(d.choices):
            raise ValueError(
                f"token {t} for decision {d.name!r} out of range [0, {len(d.choices)})"
            )
        out.append(t)
    return out


def choices_of(space: SearchSpace, tokens: Sequence[int]) -> dict[str, Any]:
    """``{decision name: chosen value}`` for ``tokens``."""
    tokens = check_tokens(space, tokens)
    return {d.name: d.choices[t] for d, t in zip(space.decisions, tokens, strict=True)}


def random_tokens(space: SearchSpace, rng: np.random.Generator) -> list[int]:
    """Uniformly random tokens (the random-search baseline draws programs this way)."""
    return [int(rng.integers(len(d.choices))) for d in space.decisions]


def space_size(space: SearchSpace) -> int:
    """Number of distinct token sequences (an upper bound on distinct programs)."""
    return int(np.prod([len(d.choices) for d in space.decisions], dtype=object))


SPACES: LazyRegistry[type[SearchSpace]] = LazyRegistry(
    "search space",
    {
        "nas_conv": "metaplat.search.nas_space:ConvSpace",
        "nas_mlp": "metaplat.search.nas_space:MLPSpace",
        "nos": "metaplat.search.nos_space:NOSSpace",
    },
)


def make_space(config: Mapping[str, Any]) -> SearchSpace:
    """A space from plain data: ``{"kind": "nas_conv", "num_layers": 3, ...}``.

    Raises ``ValueError`` naming unknown kinds or fields (with the allowed ones).
    """
    config = dict(config)
    kind = config.pop("kind", None)
    if kind is None:
        raise ValueError(f"space config needs a 'kind'; allowed: {', '.join(SPACES.names())}")
    try:
        cls = SPACES.get(kind)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    if not dataclasses.is_dataclass(cls):  # a space config lists its dataclass fields
        raise TypeError(f"search space {kind!r} is {cls!r}, not a dataclass")
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in config:
        if key not in allowed:
            raise ValueError(unknown_name_message(f"field of space {kind!r}", key, allowed))
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})

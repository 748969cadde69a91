"""The search policy shared by both modes: propose programs, take rewards, update the controller.

Tune-free, so the Tune :class:`~metaplat.tuning.controller_searcher.ControllerSearcher`
(children as trials) and the batched loop (``metaplat.search.batched``: children trained in
batches inside one process) drive the same object.

Update schedules:

- ``sync``: sample ``batch_size`` programs from the current policy in one call, hand them
  out one by one, and update once all of them have a reward (Zoph & Le's synchronous
  replicas). While the batch is out and not all rewards are in, :meth:`propose` returns
  ``None`` (Tune then asks again later).
- ``async``: sample one program per proposal and update on every reward (the policy may
  have moved since the program was sampled, as with the paper's asynchronous workers).

``random=True`` proposes uniform random programs and never updates: the random-search
baseline through the same space and bookkeeping.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import torch

from metaplat.nn.controller import Controller, ControllerConfig, ControllerState
from metaplat.search.space import SearchSpace, check_tokens, random_tokens, vocab_sizes
from metaplat.seeding import derive_seed

log = logging.getLogger(__name__)

UPDATES = ("sync", "async")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """How the controller is driven."""

    batch_size: int = 8
    """Programs per controller update (``sync``); ``async`` updates on every reward."""
    update: str = "sync"
    """``sync`` or ``async`` (see module docstring)."""
    worst_reward: float = 0.0
    """Reward given to children that failed or reported a non-finite metric."""
    random: bool = False
    """Uniform random proposals, no learning (the baseline)."""
    seed: int = 0
    """Root seed of the controller's initialisation and sampling."""
    controller: ControllerConfig = dataclasses.field(default_factory=ControllerConfig)
    """Controller architecture and update rule (REINFORCE or PPO)."""

    def __post_init__(self) -> None:
        if isinstance(self.controller, dict):
            object.__setattr__(self, "controller", ControllerConfig(**self.controller))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.update not in UPDATES:
            raise ValueError(f"update {self.update!r} not allowed; allowed: {', '.join(UPDATES)}")
        if not math.isfinite(self.worst_reward):
            raise ValueError(f"worst_reward must be finite, got {self.worst_reward}")


class SearchPolicy:
    """Proposes ``(tokens, program)`` pairs and learns from their rewards."""

    def __init__(self, space: SearchSpace, config: PolicyConfig):
        self.space = space
        self.config = config
        self.controller = Controller(vocab_sizes(space), config.controller)
        self.state: ControllerState = self.controller.init(config.seed)
        self._queue: list[list[int]] = []  # sampled, not yet proposed (sync)
        self._out = 0  # proposed in the current batch, reward not in yet
        self._done: list[tuple[list[int], float]] = []  # rewards of the current batch
        self.history: list[tuple[list[int], float]] = []  # every (tokens, reward), in order
        self.num_proposed = 0
        self.last_metrics: dict[str, float] = {}

    # -- proposing -----------------------------------------------------------------------
    def propose(self) -> tuple[list[int], dict[str, Any]] | None:
        """The next program to train, or ``None`` while a sync batch waits for rewards."""
        if self.config.random:
            tokens = random_tokens(self.space, np.random.default_rng(
                derive_seed(self.config.seed, "random", self.num_proposed)))  # fmt: skip
        elif self.config.update == "async":
            self.state, s = self.controller.sample(self.state, 1)
            tokens = s.tokens[0].tolist()
        else:
            if not self._queue:
                if self._out or self._done:
                    return None  # the batch is out; wait for its rewards
                self.state, s = self.controller.sample(self.state, self.config.batch_size)
                self._queue = s.tokens.tolist()
            tokens = self._queue.pop(0)
            self._out += 1
        self.num_proposed += 1
        return tokens, self.space.decode(tokens)

    # -- learning ------------------------------------------------------------------------
    def report(self, tokens: list[int], reward: float | None, reason: str = "") -> None:
        """Feed back the reward of a proposed program (``None``/NaN -> ``worst_reward``)."""
        tokens = check_tokens(self.space, tokens)
        if reward is None or not math.isfinite(float(reward)):
            log.info("child %s got worst reward %s: %s", tokens, self.config.worst_reward,
                     reason or f"reward {reward!r} is not a finite number")  # fmt: skip
            reward = self.config.worst_reward
        reward = float(reward)
        self.history.append((tokens, reward))
        if self.config.random:
            return
        if self.config.update == "async":
            self._update([(tokens, reward)])
            return
        self._out = max(self._out - 1, 0)
        self._done.append((tokens, reward))
        if len(self._done) >= self.config.batch_size and not self._out and not self._queue:
            self._update(self._done)
            self._done = []

    def _update(self, batch: list[tuple[list[int], float]]) -> None:
        tokens = torch.tensor([t for t, _ in batch], dtype=torch.int64)
        rewards = torch.tensor([r for _, r in batch], dtype=torch.float32)
        self.state, self.last_metrics = self.controller.update(self.state, tokens, rewards)

    # -- summaries -----------------------------------------------------------------------
    def best(self) -> tuple[list[int], float] | None:
        """The best (tokens, reward) so far (first one on ties)."""
        return max(self.history, key=lambda tr: tr[1]) if self.history else None

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data and tensors: loads with ``torch.load(weights_only=True)``."""
        return {
            "controller": self.state.state_dict(),
            "queue": [list(t) for t in self._queue],
            "out": self._out,
            "done": [[list(t), r] for t, r in self._done],
            "history": [[list(t), r] for t, r in self.history],
            "num_proposed": self.num_proposed,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.state = ControllerState.from_state_dict(d["controller"])
        self._queue = [list(t) for t in d["queue"]]
        self._out = int(d["out"])
        self._done = [(list(t), float(r)) for t, r in d["done"]]
        self.history = [(list(t), float(r)) for t, r in d["history"]]
        self.num_proposed = int(d["num_proposed"])

"""A toy outer loop for the tuning tests and the cold-start benchmark.

It meta-learns one scalar ``w`` (a constant predictor) over sinusoid tasks by gradient
descent on the query MSE, through the pool protocol, so spec -> Tuner -> trials -> reports
-> checkpoints -> resume runs end to end in a second. Knobs make it fail on purpose:
``nan_at`` returns a NaN loss at that iteration; ``crash_at`` raises while ``crash_file``
exists (deleting the file lets a resumed trial pass).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import torch

from metaplat.outer.base import Metrics, OuterLoop
from metaplat.seeding import rng
from metaplat.tasks.base import Split, TaskSpec
from metaplat.tasks.registry import family_of


def mse_grad_job(payload: torch.Tensor, specs: Sequence[TaskSpec], device: torch.device) -> Any:
    """Sum over ``specs`` of (query MSE of predicting ``payload``, its gradient), and count."""
    w = payload.to(device)
    loss_sum, grad_sum = torch.zeros(()), torch.zeros(())
    for s in specs:
        ep = family_of(s).build(s)
        err = w - ep.query_y
        loss_sum += (err**2).mean()
        grad_sum += 2 * err.mean()
    return loss_sum, grad_sum, len(specs)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Settings of the toy loop."""

    lr: float = 0.1
    """Step size on w."""
    meta_batch: int = 4
    """Tasks per iteration."""
    init: float = 1.0
    """Initial w."""
    nan_at: int = -1
    """Iteration (0-based) whose loss is NaN; -1 = never."""
    crash_at: int = -1
    """Iteration (0-based) that raises while crash_file exists; -1 = never."""
    crash_file: str = ""
    """Marker file for crash_at."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.meta_batch < 1:
            raise ValueError(f"meta_batch must be >= 1, got {self.meta_batch}")


@dataclasses.dataclass
class ToyState:
    w: torch.Tensor
    iteration: int


class ToyLoop(OuterLoop[ToyConfig, ToyState]):
    name = "toy"
    Config = ToyConfig
    State = ToyState

    def init(self) -> ToyState:
        return ToyState(torch.tensor(self.config.init), 0)

    def _run(self, w: torch.Tensor, split: Split, n: int, it: int) -> tuple[float, float]:
        specs = self.family.sample(rng(self.seed, split, it), split, n)
        parts = self.pool.map(mse_grad_job, w, specs)
        count = sum(p[2] for p in parts)
        return float(sum(p[0] for p in parts)) / count, float(sum(p[1] for p in parts)) / count

    def step(self, state: ToyState) -> tuple[ToyState, Metrics]:
        c, it = self.config, state.iteration
        if it == c.crash_at and c.crash_file and os.path.exists(c.crash_file):
            raise RuntimeError(f"toy crash at iteration {it}")
        loss, grad = self._run(state.w, "train", c.meta_batch, it)
        if it == c.nan_at:
            loss = float("nan")
        w = state.w - c.lr * grad
        return ToyState(w, it + 1), {"train/loss": loss, "train/w": float(w)}

    def evaluate(self, state: ToyState, split: Split, num_tasks: int | None = None) -> Metrics:
        loss, _ = self._run(state.w, split, num_tasks or 8, -1)
        return {f"{split}/loss": loss}

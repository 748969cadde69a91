"""Bandit baselines of RL²'s Table 1, vectorised over tasks (torch, any device).

Every arm's estimate is its Beta(1, 1) posterior mean ``(s + 1) / (n + 2)`` (an untried arm
counts as 0.5) and no policy forces a first pull of every arm: with these conventions the
paper's greedy and UCB1 figures come back (REFERENCES.md; forcing one pull per arm drops
n=10, k=5 greedy to about 5.9). Ties are broken uniformly at random.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from environments.batched import BatchedEnv
from metaplat.baselines.gittins import gittins_table
from metaplat.baselines.sampling import beta_sample
from metaplat.inner.trials import StepInput


@dataclasses.dataclass
class ArmCounts:
    """Per-task statistics: ``successes``/``pulls`` ``[B, k]``, a torch generator."""

    successes: torch.Tensor
    pulls: torch.Tensor
    gen: torch.Generator

    def update(self, inp: StepInput) -> None:
        tried = inp.prev_action >= 0
        if bool(tried.any()):
            a = inp.prev_action.clamp(min=0)
            rows = torch.arange(a.shape[0], device=a.device)
            w = tried.to(self.pulls.dtype)
            self.pulls[rows, a] += w
            self.successes[rows, a] += w * inp.prev_reward.to(self.pulls.dtype)

    @property
    def means(self) -> torch.Tensor:
        return (self.successes + 1.0) / (self.pulls + 2.0)

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen, device=self.pulls.device)


def _argmax_random_ties(scores: torch.Tensor, counts: ArmCounts) -> torch.Tensor:
    top = scores.max(dim=1, keepdim=True).values
    ties = (scores >= top - 1e-12).float() * (1.0 + counts.uniform(*scores.shape))
    return ties.argmax(dim=1)


class BanditPolicy:
    """Base: keeps :class:`ArmCounts`; subclasses define ``scores`` (argmax = action)."""

    name = "bandit-policy"

    def initial_state(self, env: BatchedEnv, keys: torch.Tensor) -> ArmCounts:
        k = env.num_actions
        assert k is not None, "bandit baselines need a discrete action space"
        gen = torch.Generator(device=env.device)
        gen.manual_seed(int(keys[0].item()) & 0x7FFFFFFFFFFFFFFF)
        z = torch.zeros(env.num_envs, k, dtype=torch.float64, device=env.device)
        return ArmCounts(z, z.clone(), gen)

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, state: ArmCounts, inp: StepInput) -> tuple[torch.Tensor, Any, dict]:
        state.update(inp)
        return _argmax_random_ties(self.scores(state, inp.episode), state), state, {}


class RandomArm(BanditPolicy):
    name = "random"

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        return torch.zeros_like(counts.pulls)


class Greedy(BanditPolicy):
    name = "greedy"

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        return counts.means


@dataclasses.dataclass
class EpsilonGreedy(BanditPolicy):
    """With probability ``epsilon`` a uniformly random arm, else the greedy one."""

    epsilon: float = 0.1
    name = "eps-greedy"

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        b, k = counts.pulls.shape
        explore = counts.uniform(b, 1) < self.epsilon
        return torch.where(explore, counts.uniform(b, k).double(), counts.means)


@dataclasses.dataclass
class UCB1(BanditPolicy):
    """``mean + c * sqrt(2 ln(t + 1) / (n_i + 1))`` with ``t`` pulls so far; ``c`` tuned
    per setting as in the paper (the ``+1`` avoids forcing a first pull of every arm)."""

    c: float = 1.0
    name = "ucb1"

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        return counts.means + self.c * torch.sqrt(2.0 * math.log(t + 1) / (counts.pulls + 1.0))


class Thompson(BanditPolicy):
    """Thompson sampling: argmax of one Beta(s + 1, f + 1) sample per arm."""

    name = "ts"

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        return beta_sample(
            counts.successes + 1.0, counts.pulls - counts.successes + 1.0, counts.gen
        )


class OptimisticThompson(BanditPolicy):
    """Optimistic Thompson sampling (May et al. 2012): ``max(sample, posterior mean)``."""

    name = "ots"

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        s = beta_sample(counts.successes + 1.0, counts.pulls - counts.successes + 1.0, counts.gen)
        return torch.maximum(s, counts.means)


class Gittins(BanditPolicy):
    """Gittins index policy for Beta(1, 1) priors and discount ``gamma`` (see
    :func:`metaplat.baselines.gittins.gittins_table`; the paper's finite horizon ``n`` is
    approximated by a discount tuned per horizon)."""

    name = "gittins"

    def __init__(self, gamma: float = 0.99, max_pulls: int = 500):
        self.gamma = gamma
        self.table = gittins_table(gamma, max_pulls)

    def scores(self, counts: ArmCounts, t: int) -> torch.Tensor:
        table = self.table.to(counts.pulls.device)
        s = counts.successes.long()
        f = (counts.pulls - counts.successes).long()
        m = table.shape[0] - 1
        return table[s.clamp(max=m), f.clamp(max=m)]

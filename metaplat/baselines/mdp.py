"""Tabular-MDP baselines of RL²'s Table 2, vectorised over tasks (torch, any device).

All learners keep counts of the observed transitions and rewards, plan once per episode
(at its first step) by finite-horizon value iteration over the remaining ``H`` steps, and
act greedily on the plan (ties are measure-zero with continuous rewards). Priors match the
task distribution: reward means N(1, 1) with known noise N(0, 1), so the posterior of
``mu(s, a)`` after ``n`` rewards summing to ``R`` is ``N((1 + R) / (1 + n), 1 / (1 + n))``;
transitions Dirichlet(1) so the posterior is ``Dirichlet(1 + counts)``. The transition
after an episode's last step is never observed (the next episode restarts in state 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from environments.batched import BatchedEnv
from metaplat.baselines.sampling import gamma_sample
from metaplat.inner.trials import StepInput


def plan(mu: torch.Tensor, p: torch.Tensor, horizon: int) -> torch.Tensor:
    """Finite-horizon optimal Q-values ``[..., H, S, A]`` of ``mu [..., S, A]``,
    ``p [..., S, A, S]``: ``Q[h]`` is for step ``h`` of ``H`` (``H - h`` steps to go)."""
    v = torch.zeros(mu.shape[:-1], dtype=mu.dtype, device=mu.device)
    qs = []
    for _ in range(horizon):
        q = mu + (p @ v.unsqueeze(-1).unsqueeze(-3)).squeeze(-1)
        qs.append(q)
        v = q.max(dim=-1).values
    return torch.stack(qs[::-1], dim=-3)


@dataclasses.dataclass
class MDPStats:
    """Per-task statistics (float64): visit ``counts [B, S, A]``, ``reward_sums [B, S, A]``,
    ``trans [B, S, A, S]`` transition counts; the previous state; the current plan."""

    counts: torch.Tensor
    reward_sums: torch.Tensor
    trans: torch.Tensor
    prev_state: torch.Tensor
    q: torch.Tensor | None
    gen: torch.Generator
    env: BatchedEnv

    def update(self, inp: StepInput, state: torch.Tensor) -> None:
        tried = inp.prev_action >= 0
        if not bool(tried.any()):
            return
        rows = torch.arange(state.shape[0], device=state.device)
        a, s = inp.prev_action.clamp(min=0), self.prev_state
        w = tried.double()
        self.counts[rows, s, a] += w
        self.reward_sums[rows, s, a] += w * inp.prev_reward.double()
        self.trans[rows, s, a, state] += w * (~inp.done).double()

    @property
    def mu_mean(self) -> torch.Tensor:
        return (1.0 + self.reward_sums) / (1.0 + self.counts)

    @property
    def p_mean(self) -> torch.Tensor:
        return (1.0 + self.trans) / (1.0 + self.trans).sum(-1, keepdim=True)

    def sample_mdp(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One posterior sample ``(mu, P)``."""
        z = torch.randn(
            self.counts.shape, generator=self.gen, dtype=torch.float64, device=self.counts.device
        )
        mu = self.mu_mean + z / torch.sqrt(1.0 + self.counts)
        g = gamma_sample(1.0 + self.trans, self.gen)
        return mu, g / g.sum(-1, keepdim=True)


class MDPPolicy:
    """Base: counts, replans at each episode's first step via :meth:`make_plan`."""

    name = "mdp-policy"

    def initial_state(self, env: BatchedEnv, keys: torch.Tensor) -> MDPStats:
        b, s = env.num_envs, env.obs_dim
        a = env.num_actions
        assert a is not None, "MDP baselines need a discrete action space"
        gen = torch.Generator(device=env.device)
        gen.manual_seed(int(keys[0].item()) & 0x7FFFFFFFFFFFFFFF)
        z = torch.zeros(b, s, a, dtype=torch.float64, device=env.device)
        zs = torch.zeros(b, dtype=torch.int64, device=env.device)
        return MDPStats(
            z,
            z.clone(),
            torch.zeros(b, s, a, s, dtype=torch.float64, device=env.device),
            zs,
            None,
            gen,
            env,
        )

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        raise NotImplementedError

    def choose(self, st: MDPStats, q: torch.Tensor) -> torch.Tensor:
        return q.argmax(dim=-1)

    def __call__(self, st: MDPStats, inp: StepInput) -> tuple[torch.Tensor, Any, dict]:
        state = inp.obs.argmax(dim=-1)
        st.update(inp, state)
        if inp.t == 0 or st.q is None:
            st.q = self.make_plan(st)
        rows = torch.arange(state.shape[0], device=state.device)
        action = self.choose(st, st.q[rows, inp.t, state])
        st.prev_state = state
        return action, st, {}


def _horizon(st: MDPStats) -> int:
    return int(st.env.max_episode_steps)


class RandomAction(MDPPolicy):
    name = "random"

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        b, s, a = st.counts.shape
        return torch.zeros(b, _horizon(st), s, a, dtype=torch.float64, device=st.counts.device)

    def choose(self, st: MDPStats, q: torch.Tensor) -> torch.Tensor:
        return torch.randint(q.shape[-1], q.shape[:-1], generator=st.gen, device=q.device)


class Greedy(MDPPolicy):
    """Plans in the posterior-mean MDP."""

    name = "greedy"

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        return plan(st.mu_mean, st.p_mean, _horizon(st))


@dataclasses.dataclass
class EpsilonGreedy(Greedy):
    """Greedy, but a uniformly random action with probability ``epsilon`` at each step."""

    epsilon: float = 0.1
    name = "eps-greedy"

    def choose(self, st: MDPStats, q: torch.Tensor) -> torch.Tensor:
        greedy = q.argmax(dim=-1)
        rand = torch.randint(q.shape[-1], greedy.shape, generator=st.gen, device=q.device)
        u = torch.rand(greedy.shape, generator=st.gen, device=q.device)
        return torch.where(u < self.epsilon, rand, greedy)


class PSRL(MDPPolicy):
    """Posterior sampling (Osband et al. 2013): one posterior MDP per episode."""

    name = "psrl"

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        return plan(*st.sample_mdp(), _horizon(st))


@dataclasses.dataclass
class OptimisticPSRL(MDPPolicy):
    """Optimistic PSRL: ``samples`` posterior MDPs per episode, acting on the elementwise
    maximum of their Q-values (an optimistic combination; the count is tuned)."""

    samples: int = 5
    name = "opsrl"

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        qs = [plan(*st.sample_mdp(), _horizon(st)) for _ in range(self.samples)]
        return torch.stack(qs).max(dim=0).values


@dataclasses.dataclass
class BEB(MDPPolicy):
    """Bayesian exploration bonus (Kolter & Ng 2009): posterior-mean MDP with reward
    ``mu + beta / (1 + n(s, a))``."""

    beta: float = 1.0
    name = "beb"

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        return plan(st.mu_mean + self.beta / (1.0 + st.counts), st.p_mean, _horizon(st))


@dataclasses.dataclass
class UCRL2(MDPPolicy):
    """UCRL2 (Jaksch et al. 2010) as finite-horizon extended value iteration per episode:
    rewards ``mu_hat + c * sqrt(1 / max(n, 1))``, transitions anywhere within L1 distance
    ``c * sqrt(S / max(n, 1))`` of the empirical ones (most optimistic by the usual
    mass-shifting rule); the confidence scale ``c`` replaces the log terms and is tuned."""

    c: float = 1.0
    name = "ucrl2"

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        n = st.counts.clamp(min=1.0)
        s = st.trans.shape[-1]
        seen = st.trans.sum(-1, keepdim=True)
        p_hat = torch.where(seen > 0, st.trans / seen.clamp(min=1.0), 1.0 / s)
        mu_hat = torch.where(st.counts > 0, st.reward_sums / n, torch.ones_like(n))
        r = mu_hat + self.c * torch.sqrt(1.0 / n)
        radius = (self.c * torch.sqrt(s / n)).clamp(max=2.0)
        v = torch.zeros(r.shape[:-1], dtype=r.dtype, device=r.device)
        qs = []
        for _ in range(_horizon(st)):
            p = _optimistic_transitions(p_hat, radius, v)
            q = r + (p @ v.unsqueeze(-1).unsqueeze(-3)).squeeze(-1)
            qs.append(q)
            v = q.max(dim=-1).values
        return torch.stack(qs[::-1], dim=-3)


def _optimistic_transitions(p: torch.Tensor, radius: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The distribution within L1 ``radius`` of ``p [B, S, A, S]`` maximising ``p . v``:
    add ``radius / 2`` to the best next state, remove it from the worst ones in turn."""
    order = v.argsort(dim=-1)  # ascending value, [B, S]
    idx = order[:, None, None, :].expand_as(p)
    ps = p.gather(-1, idx)  # sorted by next-state value
    best = ps[..., -1] + radius / 2
    ps = torch.cat([ps[..., :-1], best.clamp(max=1.0)[..., None]], dim=-1)
    excess = ps.sum(-1, keepdim=True) - 1.0
    before = torch.cumsum(ps, dim=-1) - ps
    removed = (excess - before).clamp(min=0.0)
    removed = torch.minimum(removed, ps)
    removed[..., -1] = 0.0
    ps = ps - removed
    return torch.empty_like(p).scatter_(-1, idx, ps)


class Oracle(MDPPolicy):
    """Knows the task: plans in the true MDP (an upper bound, not a learner)."""

    name = "oracle"

    def make_plan(self, st: MDPStats) -> torch.Tensor:
        env: Any = st.env
        return plan(env.mu.double(), env.P.double(), _horizon(st))

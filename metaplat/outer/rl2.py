"""RL² (Duan et al. 2016): a GRU policy that learns to explore a task within one trial,
meta-trained with PPO over many tasks.

One outer iteration (``step``):

1. sample ``tasks_per_iteration`` meta-train tasks;
2. the pool's workers roll out one trial (``episodes_per_trial`` episodes, hidden state
   kept across them, reset only between trials) per task in the family's *batched*
   environment on their own device, and send back compact trajectories;
3. the learner computes GAE over each whole trial (a trial is one sequence: episode ends
   are inputs to the policy, not value cut-offs), then runs PPO epochs, backpropagating
   through the whole trial (<= 1000 steps here, no truncation);
4. metrics: ``train/trial_return`` and PPO diagnostics.

The policy head follows the env: categorical for discrete actions (bandit, tabular_mdp),
a diagonal Gaussian with learned log-std for continuous ones (point_nav; see
:mod:`metaplat.nn.recurrent` for its units and clipping).

Deviations from the paper: PPO instead of TRPO (as in public reproductions); the GRU
reads the raw concatenated input instead of an embedding layer; optionally
(``time_inputs``) the input also carries the step within the episode and the trial.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from metaplat.inner.kernels import compiled
from metaplat.inner.rl import clipped_ppo_loss, gae
from metaplat.inner.trials import (
    StepInput,
    evaluate_policy,
    reset_seed_for,
    run_trials,
)
from metaplat.nn.recurrent import CELLS, GRUPolicy
from metaplat.optim.functional import AdamState, adam_update
from metaplat.outer.base import Metrics, OuterLoop
from metaplat.seeding import derive_seed, rng
from metaplat.stats import mean_ci95
from metaplat.tasks.base import RLFamily, Split, TaskFamily, TaskSpec
from metaplat.workers.base import Pool

Params = dict[str, torch.Tensor]
LEARNER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""Allowed ``RL2Config.learner_dtype`` values and the autocast dtype each one means."""


@dataclasses.dataclass(frozen=True)
class RL2Config:
    """RL² with PPO; defaults follow the public PPO reproduction (REFERENCES.md)."""

    episodes_per_trial: int = 10
    """n: episodes per trial (bandits: pulls, since each pull is an episode)."""
    tasks_per_iteration: int = 256
    """Trials (one task each) rolled out per PPO update."""
    hidden_size: int = 256
    """GRU units."""
    learning_rate: float = 1e-3
    """Adam step size."""
    lr_anneal_iterations: int = 0
    """When > 0, the step size falls linearly from ``learning_rate`` at iteration 0 to 0 at
    this iteration (and stays 0), counted over the whole run, resumed phases included (the
    PPO reproductions' ``anneal_lr``); 0 keeps it constant."""
    gamma: float = 0.99
    """Discount across the whole trial."""
    gae_lambda: float = 0.3
    """GAE lambda (the paper: 0.3)."""
    clip: float = 0.1
    """PPO ratio clip epsilon."""
    epochs: int = 8
    """PPO epochs per batch of trials."""
    minibatches: int = 4
    """Minibatches per epoch (split over trials; each keeps its whole sequence)."""
    entropy_coef: float = 0.01
    """Entropy bonus weight."""
    value_coef: float = 0.5
    """Value-loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    eval_tasks: int = 1000
    """Meta-val/test tasks per evaluation when ``num_tasks`` is not given."""
    device: str = "cpu"
    """Learner device (workers use their own)."""
    time_inputs: bool = False
    """Also feed the policy the step within the episode and the trial, as fractions (not
    in the paper; see :class:`GRUPolicy`)."""
    rnn_cell: str = "gru"
    """The policy's recurrent cell: ``"gru"`` (the paper's) or ``"lngru"`` (layer-normalised
    gates and a ReLU candidate that can add up evidence; see
    :class:`metaplat.nn.recurrent.LNGRU`)."""
    learner_dtype: str = "float32"
    """``"bfloat16"``: the learner's GRU runs under ``torch.autocast`` in bfloat16 (mixed
    precision: parameters, Adam moments, policy/value heads and the loss stay float32, and
    rollouts and evaluation stay float32). On CPU only the GRU's matmuls are bfloat16 and
    its hidden state stays float32; on CUDA, autocast runs cuDNN's GRU in bfloat16 as a
    whole (not measured yet). ``benchmarks/rl2_throughput.py`` times both learners and
    checks that they learn alike."""
    compile_learner: bool = False
    """``torch.compile`` the learner's loss and gradient per minibatch (the GRU as a loop of
    steps, whose element-wise work Inductor fuses; see :meth:`GRUPolicy.unroll`). Same
    function, same numbers up to float rounding; a one-off compile per minibatch shape that
    grows with the trial length (20-40 s at 10 steps, 5-8 min at 100 on one CPU core), and
    a gain that grows with the update's share of element-wise work (small minibatches, the
    LN-GRU); needs a C++ compiler (without one it warns and runs eagerly).
    ``benchmarks/rl2_compile.py`` times it beside the eager learner on a table cell,
    ``benchmarks/rl2_throughput.py --compile`` against RLlib."""

    def __post_init__(self) -> None:
        positive = (
            "episodes_per_trial",
            "tasks_per_iteration",
            "hidden_size",
            "epochs",
            "minibatches",
            "eval_tasks",
        )
        for f in positive:
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)!r}")
        if self.minibatches > self.tasks_per_iteration:
            raise ValueError(
                f"minibatches ({self.minibatches}) must be <= tasks_per_iteration "
                f"({self.tasks_per_iteration})"
            )
        if self.rnn_cell not in CELLS:
            raise ValueError(f"rnn_cell must be one of {list(CELLS)}, got {self.rnn_cell!r}")
        if self.learner_dtype not in LEARNER_DTYPES:
            raise ValueError(
                f"learner_dtype must be one of {sorted(LEARNER_DTYPES)}, got {self.learner_dtype!r}"
            )
        for f in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, f) <= 1.0:
                raise ValueError(f"{f} must be in [0, 1], got {getattr(self, f)!r}")
        for f in ("learning_rate", "clip", "max_grad_norm"):
            if not getattr(self, f) > 0:
                raise ValueError(f"{f} must be > 0, got {getattr(self, f)!r}")
        for f in ("entropy_coef", "value_coef", "lr_anneal_iterations"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f} must be >= 0, got {getattr(self, f)!r}")


@dataclasses.dataclass
class RL2State:
    """Policy parameters, Adam moments and counters."""

    params: Params
    adam_m: Params
    adam_v: Params
    adam_step: int = 0
    iteration: int = 0
    env_steps: int = 0
    value_scale: float = 1.0
    """The value head predicts returns divided by this running scale of trial returns."""


# -- the policy as a TrialPolicy ---------------------------------------------------------
@dataclasses.dataclass
class RL2Hidden:
    """Per-trial state: GRU hidden ``h [B, H]``, sampling keys ``[B]``, step counter and
    the env's episode length."""

    h: torch.Tensor
    keys: torch.Tensor
    step: int = 0
    horizon: int = 1


@dataclasses.dataclass
class RL2Policy:
    """The GRU policy with fixed ``params``. Actions are sampled from counter-based noise
    on the task keys (:meth:`GRUPolicy.sample`), so a trial does not depend on batch
    layout; ``greedy`` takes the mode (argmax, or the Gaussian mean) instead. Continuous
    samples are clipped to the env's box to step it. Extras: ``x`` (inputs), ``sample``
    (the unclipped draw that ``logp`` scores; the action itself when discrete), ``logp``,
    ``value``. ``episodes`` (the trial length in episodes) scales the trial-progress input
    of a policy with ``time_inputs``."""

    net: GRUPolicy
    params: Params
    greedy: bool = False
    value_scale: float = 1.0
    episodes: int = 1

    def to(self, device: torch.device | str) -> RL2Policy:
        params = {k: v.to(device) for k, v in self.params.items()}
        return dataclasses.replace(self, params=params)

    def initial_state(self, env: Any, keys: torch.Tensor) -> RL2Hidden:
        expected = GRUPolicy.for_env(env, self.net.hidden_size, self.net.time_inputs, self.net.cell)
        if expected != self.net:
            raise ValueError(f"policy {self.net} does not fit the env, which needs {expected}")
        return RL2Hidden(
            self.net.initial_hidden(env.num_envs, env.device),
            keys,
            horizon=int(env.max_episode_steps),
        )

    def __call__(self, state: RL2Hidden, inp: StepInput) -> tuple[torch.Tensor, Any, dict]:
        time = None
        if self.net.time_inputs:
            time = (inp.t / state.horizon, state.step / (state.horizon * max(1, self.episodes)))
        x = self.net.inputs(inp.obs, inp.prev_action, inp.prev_reward, inp.done, time)
        with torch.no_grad():
            heads, value, h = self.net.unroll(self.params, x.unsqueeze(0), state.h)
        head = heads[0]
        if self.greedy:
            sample = self.net.mode(head)
        else:
            sample = self.net.sample(self.params, head, state.keys, state.step)
        logp, _ = self.net.log_prob_entropy(self.params, head, sample)
        extras = {"x": x, "sample": sample, "logp": logp, "value": value[0] * self.value_scale}
        new = RL2Hidden(h, state.keys, state.step + 1, state.horizon)
        return self.net.env_action(sample), new, extras


@dataclasses.dataclass(frozen=True)
class RL2RolloutJob:
    """Pool job: one trial per task in the batched env on ``device``; returns CPU tensors
    ``x [T, B, in]``, ``logp``, ``value``, ``reward`` ``[T, B]``, ``returns [B]`` and
    ``action``: what the log-probabilities score (int64 ``[T, B]`` actions, or the
    unclipped Gaussian samples ``[T, B, action_dim]``).
    Payload: ``{"policy": RL2Policy, "seed": int, "index": {task seed: position}}``."""

    episodes: int

    def __call__(self, payload: Any, specs: Any, device: torch.device) -> dict[str, Any]:
        from metaplat.tasks.registry import family_of

        policy = payload["policy"].to(device)
        family = family_of(specs[0])
        assert isinstance(family, RLFamily), f"RL² needs an RL family, got {family.name!r}"
        env = family.build_batched(specs, device)
        seed = reset_seed_for(payload["seed"], payload["index"][specs[0].seed])
        ro = run_trials(policy, env, self.episodes, seed, record=True)
        keep = ("x", "logp", "value", "reward")
        out = {k: ro.steps[k].float().cpu() for k in keep}
        out["action"] = ro.steps["sample"].cpu()
        out["returns"] = ro.returns.float().cpu()
        return out


# -- the learner's gradient ----------------------------------------------------------------
GradFn = Callable[..., tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]]


def minibatch_loss(
    net: GRUPolicy, cfg: RL2Config, params: Params, *batch: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's loss on a minibatch of whole trials ``(x [T, B, in], action, old logp,
    advantages, value targets)``, unrolled from the zero state, and its diagnostics."""
    x, action, old_logp, adv, ret = batch
    dtype = LEARNER_DTYPES[cfg.learner_dtype]
    h0 = net.initial_hidden(x.shape[1], x.device)
    with torch.autocast(x.device.type, dtype, enabled=dtype != torch.float32):
        head, values, _ = net.unroll(params, x, h0, loop=cfg.compile_learner)
    logp, entropy = net.log_prob_entropy(params, head, action)
    return clipped_ppo_loss(
        logp, entropy, values, old_logp, adv, ret, cfg.clip, cfg.value_coef, cfg.entropy_coef
    )


_COMPILED: dict[tuple[Any, ...], GradFn] = {}


def minibatch_grad(net: GRUPolicy, cfg: RL2Config) -> GradFn:
    """``(params, *batch) -> (gradients in params' order, diagnostics)`` of
    :func:`minibatch_loss`: autograd on the eager loss, or with ``cfg.compile_learner`` one
    ``torch.compile``-d ``torch.func.grad`` per network and loss setting (cached across
    phases and instances: compiling is the slow part)."""
    if not cfg.compile_learner:

        def eager(params: Params, *batch: torch.Tensor) -> Any:
            loss, info = minibatch_loss(net, cfg, params, *batch)
            return torch.autograd.grad(loss, list(params.values())), info

        return eager
    key = (net, cfg.learner_dtype, cfg.clip, cfg.value_coef, cfg.entropy_coef)
    if key not in _COMPILED:
        grad = torch.func.grad(partial(minibatch_loss, net, cfg), has_aux=True)

        def compiled_grad(params: Params, *batch: torch.Tensor) -> Any:
            grads, info = grad({k: p.detach() for k, p in params.items()}, *batch)
            return tuple(grads[k] for k in params), info

        _COMPILED[key] = compiled(compiled_grad, "the RL² learner's gradient")
    return _COMPILED[key]


# -- the outer loop ------------------------------------------------------------------------
class RL2(OuterLoop[RL2Config, RL2State]):
    """RL² meta-training on a batchable RL family (bandit, tabular_mdp, point_nav, ...)
    whose episodes end together within a batch (point_nav: ``goal_tolerance: 0``)."""

    name = "rl2"
    Config = RL2Config
    State = RL2State
    task_kinds = ("rl",)

    def __init__(self, config: RL2Config, family: TaskFamily, pool: Pool, seed: int):
        super().__init__(config, family, pool, seed)
        if not isinstance(family, RLFamily) or not family.batchable:
            raise ValueError(
                f"the native RL² path needs a batchable RL family; {family.name!r} is not "
                "(use metaplat.outer.rl2_rllib)"
            )
        probe = family.build_batched(family.sample(task_rng(seed), "train", 1))
        self.net = GRUPolicy.for_env(probe, config.hidden_size, config.time_inputs, config.rnn_cell)
        self.device = torch.device(config.device)

    def init(self) -> RL2State:
        params = {k: v.to(self.device) for k, v in self.net.init_params(self.seed).items()}
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return RL2State(params, zeros, {k: v.clone() for k, v in zeros.items()})

    def policy(self, state: RL2State, greedy: bool = False) -> RL2Policy:
        params = {k: v.detach().cpu() for k, v in state.params.items()}
        return RL2Policy(
            self.net, params, greedy, state.value_scale, self.config.episodes_per_trial
        )

    def step(self, state: RL2State) -> tuple[RL2State, Metrics]:
        cfg, it = self.config, state.iteration
        specs = self.family.sample(
            task_rng(self.seed, "train", it), "train", cfg.tasks_per_iteration
        )
        t0 = time.perf_counter()
        payload = {
            "policy": self.policy(state),
            "seed": derive_seed(self.seed, "rollout", it),
            "index": {s.seed: i for i, s in enumerate(specs)},
        }
        parts = self.pool.map(RL2RolloutJob(cfg.episodes_per_trial), payload, specs)
        batch = {
            k: torch.cat([p[k] for p in parts], dim=1 if k != "returns" else 0).to(self.device)
            for k in parts[0]
        }
        t1 = time.perf_counter()
        state, info = self.update(state, batch, it)
        t2 = time.perf_counter()
        steps = int(batch["reward"].numel())
        mean, half = mean_ci95(batch["returns"].cpu().numpy())
        metrics = {
            "train/trial_return": mean,
            "train/trial_return_ci95": half,
            "train/env_steps": float(state.env_steps + steps),
            "train/rollout_s": t1 - t0,
            "train/update_s": t2 - t1,
            "train/iteration": float(it + 1),
        } | {f"train/{k}": v for k, v in info.items()}
        state = dataclasses.replace(state, iteration=it + 1, env_steps=state.env_steps + steps)
        return state, metrics

    def update(
        self, state: RL2State, batch: dict[str, torch.Tensor], it: int
    ) -> tuple[RL2State, dict[str, float]]:
        """PPO epochs over the trials of ``batch`` (minibatches of whole trials)."""
        cfg = self.config
        t_len, b = batch["reward"].shape
        terminals = torch.zeros(t_len, b, dtype=torch.bool, device=self.device)
        terminals[-1] = True  # only the trial's end cuts the return
        adv, ret = gae(batch["reward"], batch["value"], terminals, cfg.gamma, cfg.gae_lambda)
        # Value targets are normalised by a running scale of the returns: long trials have
        # returns of tens to hundreds, and unscaled value gradients would swamp the policy
        # gradient under the global norm clip (the MDP setting did not learn without this).
        batch_scale = float(ret.std().clamp(min=1e-3))
        v_scale = (
            batch_scale if state.iteration == 0 else (0.9 * state.value_scale + 0.1 * batch_scale)
        )
        ret_n = ret / v_scale
        lr = self.learning_rate_at(state.iteration)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "minibatch", it))
        params = {k: v.detach().requires_grad_(True) for k, v in state.params.items()}
        m, v, step = state.adam_m, state.adam_v, state.adam_step
        sums: dict[str, float] = {}
        grad_fn = minibatch_grad(self.net, cfg)
        for _ in range(cfg.epochs):
            perm = torch.randperm(b, generator=gen).to(self.device)
            for idx in perm.chunk(cfg.minibatches):
                a = adv[:, idx]
                if a.numel() > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                x, action, old_logp = (batch[k][:, idx] for k in ("x", "action", "logp"))
                grads, info = grad_fn(params, x, action, old_logp, a, ret_n[:, idx])
                sq = [g.pow(2).sum() for g in grads]  # params is never empty
                norm = torch.sqrt(sum(sq[1:], sq[0]))
                clip_scale = torch.clamp(cfg.max_grad_norm / (norm + 1e-6), max=1.0)
                new, adam = adam_update(
                    {k: p.detach() for k, p in params.items()},
                    {k: g * clip_scale for k, g in zip(params, grads, strict=True)},
                    AdamState(step, m, v),
                    lr,
                )
                m, v, step = adam.m, adam.v, adam.step
                params = {k: p.requires_grad_(True) for k, p in new.items()}
                for k, val in (info | {"grad_norm": norm}).items():
                    sums[k] = sums.get(k, 0.0) + float(val)
        n = cfg.epochs * cfg.minibatches
        out = RL2State(
            {k: p.detach() for k, p in params.items()},
            m,
            v,
            step,
            state.iteration,
            state.env_steps,
            v_scale,
        )
        return out, {k: s / n for k, s in sums.items()} | {"value_scale": v_scale, "lr": lr}

    def learning_rate_at(self, iteration: int) -> float:
        """The Adam step size of the update at ``iteration`` (see ``lr_anneal_iterations``)."""
        cfg = self.config
        if cfg.lr_anneal_iterations == 0:
            return cfg.learning_rate
        return cfg.learning_rate * max(0.0, 1.0 - iteration / cfg.lr_anneal_iterations)

    def evaluate(self, state: RL2State, split: Split, num_tasks: int | None = None) -> Metrics:
        specs = evaluation_specs(self.family, split, num_tasks or self.config.eval_tasks, self.seed)
        ret = evaluate_policy(
            self.policy(state),
            specs,
            self.config.episodes_per_trial,
            derive_seed(self.seed, "eval", split),
            self.pool,
        )
        mean, half = mean_ci95(ret.numpy())
        return {f"{split}/trial_return": mean, f"{split}/trial_return_ci95": half}

    def state_dict(self, state: RL2State) -> dict[str, Any]:
        return dataclasses.asdict(state)

    def load_state_dict(self, d: dict[str, Any]) -> RL2State:
        return RL2State(**d)


def task_rng(seed: int, *path: int | str) -> np.random.Generator:
    """The numpy generator that picks task seeds (see ``metaplat.seeding.rng``)."""
    return rng(seed, *path)


def evaluation_specs(family: TaskFamily, split: Split, n: int, seed: int) -> list[TaskSpec]:
    """The fixed evaluation tasks of a split for an experiment seed; both RL² paths and the
    baselines are scored on these."""
    return family.sample(task_rng(seed, "eval-tasks", split), split, n)

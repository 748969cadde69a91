"""RL² through RLlib: a trial of ``K`` inner episodes as ONE RLlib episode, recurrent PPO.

For gymnasium envs that cannot be batched (or end episodes at different steps), this path
trains the same meta-policy as :mod:`metaplat.outer.rl2` with RLlib's PPO and an LSTM
module on Ray's new API stack. :class:`TrialEnv` samples a task from the registry at every
reset, runs ``episodes_per_trial`` inner episodes of its gymnasium env back to back, and
appends the previous action (one-hot), reward and done flag to each observation, so the
LSTM state (kept by RLlib for the whole RLlib episode) carries over inner episodes and is
reset only between trials.

Scoring uses :func:`metaplat.inner.trials.evaluate_policy` (the native path's code) on
the same meta-test tasks, via :class:`RLlibTrialPolicy`, for families with a batched env.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from metaplat.inner.trials import StepInput, evaluate_policy
from metaplat.outer.base import Metrics, OuterLoop
from metaplat.seeding import derive_seed, rng
from metaplat.stats import mean_ci95
from metaplat.tasks.base import RLFamily, Split, TaskFamily, TaskSpec
from metaplat.workers.base import Pool


def trial_observation(
    obs: np.ndarray,
    prev_action: Any,
    prev_reward: float,
    done: bool,
    action_space: spaces.Space[Any],
) -> np.ndarray:
    """``obs ⊕ prev action (one-hot if discrete; zeros at trial start) ⊕ reward ⊕ done``,
    the same layout as :meth:`metaplat.nn.recurrent.GRUPolicy.inputs`."""
    if isinstance(action_space, spaces.Discrete):
        a = np.zeros(int(action_space.n), np.float32)
        if prev_action is not None:
            a[int(prev_action)] = 1.0
    else:
        a = np.zeros(spaces.flatdim(action_space), np.float32)
        if prev_action is not None:
            a = np.asarray(prev_action, np.float32).reshape(-1)
    flat = np.asarray(obs, np.float32).reshape(-1)
    return np.concatenate([flat, a, [np.float32(prev_reward), np.float32(done)]]).astype(np.float32)


class TrialEnv(gym.Env[np.ndarray, Any]):
    """One RL² trial per episode. ``env_config`` keys: ``family`` (registry name),
    ``family_config`` (dict), ``episodes_per_trial`` (K), ``split`` (default "train"),
    ``seed`` (task-sampling seed; RLlib's worker index is mixed in), and optionally
    ``specs`` (JSON strings of fixed tasks, cycled in order, for evaluation)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        from metaplat.tasks.registry import make_family

        cfg = dict(env_config or {})
        self.family: TaskFamily = make_family(
            cfg.get("family", "bandit"), cfg.get("family_config", {})
        )
        self.episodes = int(cfg.get("episodes_per_trial", 10))
        if self.episodes < 1:
            raise ValueError(f"episodes_per_trial must be >= 1, got {self.episodes}")
        self.split: Split = cfg.get("split", "train")
        worker = int(getattr(env_config, "worker_index", 0) or 0)
        vector = int(getattr(env_config, "vector_index", 0) or 0)
        self._rng = rng(int(cfg.get("seed", 0)), "trial-env", worker, vector)
        self._fixed = [TaskSpec.from_json(s) for s in cfg.get("specs", [])]
        self._count = 0
        probe = self.family.build(self._next_spec())
        self._count = 0
        self.inner_obs_space = probe.observation_space
        self.action_space = probe.action_space
        dim = spaces.flatdim(probe.observation_space) + spaces.flatdim(probe.action_space) + 2
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        self._inner: gym.Env[Any, Any] | None = None
        self._episode = 0

    def _next_spec(self) -> TaskSpec:
        if self._fixed:
            spec = self._fixed[self._count % len(self._fixed)]
        else:
            spec = self.family.sample(self._rng, self.split, 1)[0]
        self._count += 1
        return spec

    def _flat(self, obs: Any) -> np.ndarray:
        # Box and Discrete observation spaces flatten to arrays (gymnasium's return type also
        # covers Graph/Sequence spaces, which the wrapper does not accept)
        return np.asarray(spaces.flatten(self.inner_obs_space, obs), dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.task = self._next_spec()
        self._inner = self.family.build(self.task)
        inner_seed = int(self._rng.integers(0, 2**31))
        obs, info = self._inner.reset(seed=inner_seed)
        self._episode = 0
        return trial_observation(self._flat(obs), None, 0.0, False, self.action_space), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self._inner is not None, "call reset() first"
        obs, reward, term, trunc, info = self._inner.step(action)
        ended = bool(term or trunc)
        terminated = truncated = False
        if ended:
            self._episode += 1
            if self._episode >= self.episodes:
                terminated = True  # the trial is over: nothing follows it
            else:
                obs, info = self._inner.reset()  # next inner episode, same task
        out = trial_observation(self._flat(obs), action, float(reward), ended, self.action_space)
        return out, float(reward), terminated, truncated, info


@dataclasses.dataclass(frozen=True)
class RL2RLlibConfig:
    """RLlib PPO with an LSTM over RL² trials."""

    episodes_per_trial: int = 10
    """K inner episodes per trial (one RLlib episode)."""
    num_env_runners: int = 0
    """RLlib env-runner actors (0: sample in the algorithm's own process). Each is one bundle
    of the trial's placement group, after the driver's (which also holds RLlib's learner)."""
    num_cpus_per_env_runner: float = 1.0
    """CPUs per env-runner actor (and per env-runner bundle)."""
    num_envs_per_env_runner: int = 8
    """Trial envs per runner (gymnasium vector env)."""
    train_batch_size: int = 4000
    """Env steps per PPO update."""
    minibatch_size: int = 1000
    """PPO minibatch size (env steps)."""
    num_epochs: int = 4
    """PPO epochs per update."""
    learning_rate: float = 1e-3
    """Adam step size."""
    gamma: float = 0.99
    """Discount over the trial."""
    gae_lambda: float = 0.3
    """GAE lambda."""
    clip: float = 0.1
    """PPO clip."""
    entropy_coef: float = 0.01
    """Entropy bonus."""
    lstm_cell_size: int = 64
    """LSTM units."""
    max_seq_len: int = 100
    """BPTT chunk length RLlib trains on (its truncated backprop window)."""
    eval_tasks: int = 200
    """Meta-val/test tasks per evaluation."""

    def __post_init__(self) -> None:
        for f in (
            "episodes_per_trial",
            "train_batch_size",
            "minibatch_size",
            "num_epochs",
            "lstm_cell_size",
            "max_seq_len",
            "eval_tasks",
            "num_envs_per_env_runner",
        ):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)!r}")
        if self.num_env_runners < 0:
            raise ValueError(f"num_env_runners must be >= 0, got {self.num_env_runners}")
        if not self.num_cpus_per_env_runner > 0:  # also rejects NaN
            raise ValueError(
                f"num_cpus_per_env_runner must be > 0, got {self.num_cpus_per_env_runner!r}"
            )


@dataclasses.dataclass
class RL2RLlibState:
    """The RL module's weights (a flat tensor dict) and counters."""

    weights: dict[str, torch.Tensor]
    iteration: int = 0
    env_steps: int = 0


def ppo_config(cfg: RL2RLlibConfig, family: TaskFamily, seed: int) -> Any:
    """The RLlib ``PPOConfig`` (new API stack) for RL² trials of ``family``."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    env_config = {
        "family": family.name,
        "family_config": family.config(),
        "episodes_per_trial": cfg.episodes_per_trial,
        "split": "train",
        "seed": seed,
    }
    return (
        PPOConfig()
        .environment(TrialEnv, env_config=env_config)
        .env_runners(
            num_env_runners=cfg.num_env_runners,
            # typed int by RLlib; Ray schedules fractional CPUs (0.5: two runners per core)
            num_cpus_per_env_runner=cfg.num_cpus_per_env_runner,  # type: ignore[arg-type]
            num_envs_per_env_runner=cfg.num_envs_per_env_runner,
            rollout_fragment_length="auto",
        )
        .training(
            train_batch_size_per_learner=cfg.train_batch_size,
            minibatch_size=cfg.minibatch_size,
            num_epochs=cfg.num_epochs,
            lr=cfg.learning_rate,
            gamma=cfg.gamma,
            lambda_=cfg.gae_lambda,
            clip_param=cfg.clip,
            entropy_coeff=cfg.entropy_coef,
            vf_loss_coeff=0.5,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                use_lstm=True,
                lstm_cell_size=cfg.lstm_cell_size,
                max_seq_len=cfg.max_seq_len,
                fcnet_hiddens=[cfg.lstm_cell_size],
                vf_share_layers=True,
            )
        )
        .debugging(seed=seed)
        .reporting(metrics_num_episodes_for_smoothing=20)
    )


class RLlibTrialPolicy:
    """An RLlib RL module as a :class:`metaplat.inner.trials.TrialPolicy`: builds the
    wrapper's observation from the step input and keeps the LSTM state for the trial.
    Samples from the action distribution (``greedy=False``) with a seeded generator."""

    def __init__(self, module: Any, action_space: spaces.Space[Any], greedy: bool = False):
        self.module, self.action_space, self.greedy = module, action_space, greedy

    def initial_state(self, env: Any, keys: torch.Tensor) -> dict[str, Any]:
        import tree  # dm-tree, an RLlib dependency

        state = tree.map_structure(
            lambda v: (
                torch.as_tensor(v)
                .float()
                .unsqueeze(0)
                .expand(env.num_envs, *np.shape(v))
                .contiguous()
            ),
            self.module.get_initial_state(),
        )
        gen = torch.Generator().manual_seed(int(keys[0]) & 0x7FFFFFFFFFFFFFFF)
        return {"lstm": state, "gen": gen}

    def __call__(self, state: dict[str, Any], inp: StepInput) -> tuple[torch.Tensor, Any, dict]:
        from ray.rllib.core.columns import Columns

        n = int(self.action_space.n)  # type: ignore[attr-defined]
        a = torch.nn.functional.one_hot(inp.prev_action.clamp(min=0), n).float()
        a = a * (inp.prev_action >= 0).float().unsqueeze(-1)
        obs = torch.cat(
            [
                inp.obs.float().cpu(),
                a.cpu(),
                inp.prev_reward.float().cpu()[:, None],
                inp.done.float().cpu()[:, None],
            ],
            -1,
        )
        with torch.no_grad():
            out = self.module.forward_inference(
                {Columns.OBS: obs.unsqueeze(1), Columns.STATE_IN: state["lstm"]}
            )
        logits = out[Columns.ACTION_DIST_INPUTS][:, 0]
        if self.greedy:
            action = logits.argmax(-1)
        else:
            action = torch.multinomial(torch.softmax(logits, -1), 1, generator=state["gen"])[:, 0]
        return action.to(inp.obs.device), {"lstm": out[Columns.STATE_OUT], "gen": state["gen"]}, {}


class RL2RLlib(OuterLoop[RL2RLlibConfig, RL2RLlibState]):
    """RL² meta-training with RLlib's recurrent PPO (needs a running Ray, or starts one).

    RLlib brings its own actors, so the metaplat pool is not used (``uses_pool = False``):
    in a Tune trial the learner runs in the trial's process (bundle 0, ``driver_cpus``) and
    env runner ``i`` in bundle ``i``, as RLlib's ``Algorithm.default_resource_request``
    lays them out (``num_learners=0``, no evaluation runners).
    """

    name = "rl2_rllib"
    Config = RL2RLlibConfig
    State = RL2RLlibState
    task_kinds = ("rl",)
    uses_pool = False
    resource_fields = ("num_env_runners", "num_cpus_per_env_runner")

    @classmethod
    def actor_bundles(cls, config: RL2RLlibConfig) -> list[dict[str, float]]:
        """One ``{"CPU": num_cpus_per_env_runner}`` bundle per RLlib env runner."""
        return [
            {"CPU": float(config.num_cpus_per_env_runner)} for _ in range(config.num_env_runners)
        ]

    def __init__(self, config: RL2RLlibConfig, family: TaskFamily, pool: Pool, seed: int):
        super().__init__(config, family, pool, seed)
        self.algo = ppo_config(config, family, seed).build_algo()

    def _module(self) -> Any:
        return self.algo.get_module()

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v).clone() for k, v in self._module().state_dict().items()}

    def init(self) -> RL2RLlibState:
        return RL2RLlibState(self._weights())

    def step(self, state: RL2RLlibState) -> tuple[RL2RLlibState, Metrics]:
        self._module().load_state_dict(state.weights)
        self.algo.learner_group.set_weights({"default_policy": state.weights})
        self.algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=self.algo.learner_group
        )
        result = self.algo.train()
        runners = result.get("env_runners", {})
        steps = int(runners.get("num_env_steps_sampled", 0))
        metrics = {
            "train/trial_return": float(runners.get("episode_return_mean", float("nan"))),
            "train/env_steps": float(state.env_steps + steps),
            "train/iteration": float(state.iteration + 1),
        }
        new = RL2RLlibState(self._weights(), state.iteration + 1, state.env_steps + steps)
        return new, metrics

    def policy(self, state: RL2RLlibState, greedy: bool = False) -> RLlibTrialPolicy:
        module = self._module()
        module.load_state_dict(state.weights)
        probe = TrialEnv({"family": self.family.name, "family_config": self.family.config()})
        return RLlibTrialPolicy(module, probe.action_space, greedy)

    def evaluate(self, state: RL2RLlibState, split: Split, num_tasks: int | None = None) -> Metrics:
        """Trial returns on the fixed evaluation tasks of ``split``: with the native path's
        batched evaluation (:func:`evaluate_policy`) for batchable discrete families, else
        one trial per task through :class:`TrialEnv` (CartPole: episodes end at different
        steps, so no batched env can hold them)."""
        from metaplat.outer.rl2 import evaluation_specs

        specs = evaluation_specs(self.family, split, num_tasks or self.config.eval_tasks, self.seed)
        seed = derive_seed(self.seed, "eval", split)
        probe = TrialEnv({"family": self.family.name, "family_config": self.family.config()})
        batched = (
            isinstance(self.family, RLFamily)
            and self.family.batchable
            and isinstance(probe.action_space, spaces.Discrete)
        )
        if batched:
            try:
                ret = evaluate_policy(
                    self.policy(state), specs, self.config.episodes_per_trial, seed
                )
            except ValueError:  # episodes of the batch end at different steps
                batched = False
        if not batched:
            ret = self._evaluate_sequential(state, specs, seed)
        mean, half = mean_ci95(ret.numpy())
        return {f"{split}/trial_return": mean, f"{split}/trial_return_ci95": half}

    def _evaluate_sequential(
        self, state: RL2RLlibState, specs: list[TaskSpec], seed: int
    ) -> torch.Tensor:
        import tree
        from ray.rllib.core.columns import Columns

        module = self._module()
        module.load_state_dict(state.weights)
        dist_cls = module.get_inference_action_dist_cls()
        torch.manual_seed(seed)  # RLlib's distributions sample from the global generator
        env = TrialEnv(
            {
                "family": self.family.name,
                "family_config": self.family.config(),
                "episodes_per_trial": self.config.episodes_per_trial,
                "specs": [s.to_json() for s in specs],
            }
        )
        out = []
        for i in range(len(specs)):
            obs, _ = env.reset(seed=seed + i)
            h = tree.map_structure(
                lambda v: torch.as_tensor(v).float()[None], module.get_initial_state()
            )
            total, done = 0.0, False
            while not done:
                with torch.no_grad():
                    res = module.forward_inference(
                        {Columns.OBS: torch.as_tensor(obs)[None, None], Columns.STATE_IN: h}
                    )
                h = res[Columns.STATE_OUT]
                dist = dist_cls.from_logits(res[Columns.ACTION_DIST_INPUTS][:, 0])
                action = dist.sample()[0].numpy()
                obs, r, term, trunc, _ = env.step(action)
                total, done = total + r, term or trunc
            out.append(total)
        return torch.tensor(out)

    def close(self) -> None:
        self.algo.stop()

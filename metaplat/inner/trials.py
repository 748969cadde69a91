"""RL² trials on batched environments: the one rollout loop every policy is scored by.

A *trial* is ``episodes`` consecutive episodes on the same task. A :class:`TrialPolicy`
sees, at every step, the observation plus the previous action, reward and a flag saying
the previous step ended an episode (RL²'s input, Duan et al. 2016), and keeps whatever it
learns about the task in its own ``state`` across the episodes of the trial. RL²'s GRU
policy, the bandit/MDP baselines and the RLlib policy all implement it, so
:func:`run_trials` scores them all the same way.

Episodes of a batch must end together (every env of the batch terminates or truncates at
the same step), which holds for the bandit and tabular-MDP families and for point
navigation with ``goal_tolerance: 0`` (fixed horizon). Families whose episodes end at
different steps (CartPole) go through the RLlib path.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import torch

from environments.batched import BatchedEnv
from environments.noise import episode_keys


@dataclasses.dataclass
class StepInput:
    """What a policy sees at one step of a trial (all ``[B, ...]`` on the env's device).

    Attributes:
        obs: ``[B, obs_dim]`` current observation.
        prev_action: previous action: ``int64 [B]``, ``-1`` at the first step of a trial
            (discrete envs), or ``float [B, action_dim]``, zeros at the first step
            (continuous envs).
        prev_reward: ``[B]`` previous reward; 0 at the first step of a trial.
        done: ``bool [B]`` the previous step ended an episode (False at the trial's start).
        t: step index within the current episode.
        episode: index of the current episode within the trial.
    """

    obs: torch.Tensor
    prev_action: torch.Tensor
    prev_reward: torch.Tensor
    done: torch.Tensor
    t: int
    episode: int


class TrialPolicy(Protocol):
    """A policy that adapts within a trial. ``keys [B]`` (int64) seed its own sampling
    with counter-based noise or any other deterministic scheme."""

    def initial_state(self, env: BatchedEnv, keys: torch.Tensor) -> Any:
        """Fresh per-trial state (hidden state, counts, ...) for ``env``'s tasks."""
        ...

    def __call__(self, state: Any, inp: StepInput, /) -> tuple[torch.Tensor, Any, dict[str, Any]]:
        """``(action [B], new state, extras)``; ``extras`` (tensors ``[B, ...]``) are
        recorded by :func:`run_trials` when asked (e.g. log-probabilities, values).
        Called positionally, so implementations may name the arguments as they like."""
        ...


@dataclasses.dataclass
class TrialRollout:
    """Result of :func:`run_trials`.

    Attributes:
        returns: ``[B]`` total reward of each trial.
        episode_returns: ``[B, episodes]`` reward of each episode of each trial (where in
            the trial a policy gains or loses against another: exploration costs early,
            exploitation pays late).
        steps: when recorded, ``[T, B, ...]`` tensors: ``obs``, ``prev_action``,
            ``prev_reward``, ``done`` (the inputs), ``action``, ``reward`` and every
            extra the policy returned. ``T = episodes * max_episode_steps``.
    """

    returns: torch.Tensor
    steps: dict[str, torch.Tensor]
    episode_returns: torch.Tensor


def policy_keys(env: BatchedEnv, seed: int) -> torch.Tensor:
    """Per-task sampling keys for a policy: from the env's task seeds when it has them."""
    task_seeds = getattr(env, "task_seeds", None)
    if task_seeds is None:
        task_seeds = torch.arange(env.num_envs, device=env.device)
    # A separate stream from the env's own noise, which uses the same (task, seed) pairs.
    return episode_keys(task_seeds.to(torch.int64) ^ 0x5DEECE66D, seed)


def run_trials(
    policy: TrialPolicy,
    env: BatchedEnv,
    episodes: int,
    seed: int,
    record: bool = False,
) -> TrialRollout:
    """Run one trial of ``episodes`` episodes in every env of ``env``.

    The env is reset with ``seed`` at the trial's start and with ``None`` (continuing the
    seeded noise) between episodes, so a seed reproduces the trial on any device and any
    sharding of tasks. Raises ``ValueError`` if the envs of the batch end episodes at
    different steps.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    device, b = env.device, env.num_envs
    state = policy.initial_state(env, policy_keys(env, seed))
    prev_action = initial_prev_action(env)
    prev_reward = torch.zeros(b, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    per_episode = torch.zeros(b, episodes, device=device)  # the trial's return is their sum
    rec: dict[str, list[torch.Tensor]] = {}
    for ep in range(episodes):
        obs = env.reset(seed if ep == 0 else None)
        for t in range(env.max_episode_steps):
            inp = StepInput(obs, prev_action, prev_reward, done, t, ep)
            action, state, extras = policy(state, inp)
            obs_next, reward, term, trunc = env.step(action)
            ended = term | trunc
            if bool(ended.any()) and not bool(ended.all()):
                raise ValueError(
                    "episodes of the batch ended at different steps; run_trials needs "
                    "synchronous episodes (use the RLlib path for this family)"
                )
            if record:
                items = {
                    "obs": obs,
                    "prev_action": prev_action,
                    "prev_reward": prev_reward,
                    "done": done,
                    "action": action,
                    "reward": reward,
                } | extras
                for k, v in items.items():
                    rec.setdefault(k, []).append(v)
            per_episode[:, ep] += reward
            prev_action, prev_reward, done, obs = action, reward.float(), ended, obs_next
            if bool(ended.all()):
                break
    steps = {k: torch.stack(v) for k, v in rec.items()}
    return TrialRollout(per_episode.sum(1), steps, per_episode)


def initial_prev_action(env: BatchedEnv) -> torch.Tensor:
    """The "previous action" at a trial's start: ``-1`` per env (discrete) or a zero
    vector per env (continuous), i.e. no action yet."""
    if env.num_actions is not None:
        return torch.full((env.num_envs,), -1, dtype=torch.int64, device=env.device)
    return torch.zeros(env.num_envs, int(env.action_dim or 0), device=env.device)


def reset_seed_for(seed: int, first_index: int) -> int:
    """The reset seed a shard starting at global task ``first_index`` passes to its batched
    env, so that task ``j`` always gets episode seed ``seed + j`` (the env adds the row
    index), whatever the sharding: results do not depend on the number of workers."""
    return seed + first_index


@dataclasses.dataclass(frozen=True)
class TrialReturnsJob:
    """Pool job: total reward of one trial per task, for a picklable policy.

    Payload: ``{"policy": TrialPolicy (moved with .to(device) if it has it),
    "index": {task seed: global position}}``. Returns a ``[num_specs]`` float CPU tensor,
    or ``[num_specs, episodes]`` (each episode's reward) with ``per_episode``.
    """

    episodes: int
    seed: int
    per_episode: bool = False

    def __call__(self, payload: Any, specs: Any, device: torch.device) -> torch.Tensor:
        from metaplat.tasks.base import RLFamily
        from metaplat.tasks.registry import family_of

        if not specs:
            return torch.zeros((0, self.episodes) if self.per_episode else (0,))
        policy = payload["policy"]
        if hasattr(policy, "to"):
            policy = policy.to(device)
        family = family_of(specs[0])
        assert isinstance(family, RLFamily), f"trials need an RL family, got {family.name!r}"
        env = family.build_batched(specs, device)
        seed = reset_seed_for(self.seed, payload["index"][specs[0].seed])
        rollout = run_trials(policy, env, self.episodes, seed)
        out = rollout.episode_returns if self.per_episode else rollout.returns
        return out.float().cpu()


def evaluate_policy(
    policy: TrialPolicy,
    specs: Any,
    episodes: int,
    seed: int,
    pool: Any = None,
    per_episode: bool = False,
) -> torch.Tensor:
    """Trial returns ``[len(specs)]`` of ``policy`` on ``specs`` -- the evaluation every
    method (RL² native, RL² via RLlib, baselines) is scored by -- or, with
    ``per_episode``, each trial's episode returns ``[len(specs), episodes]`` (which sum
    to the trial returns). Runs in this process on CPU, or on ``pool`` (shards in task
    order) when given."""
    from metaplat.workers.base import LocalPool

    pool = pool or LocalPool(1)
    index = {s.seed: i for i, s in enumerate(specs)}
    job = TrialReturnsJob(episodes, seed, per_episode)
    parts = pool.map(job, {"policy": policy, "index": index}, specs)
    return torch.cat(list(parts))

"""NAS-RL / NOS as a Ray Tune ``Searcher``: every child program is an ordinary Tune trial.

The searcher wraps a Tune-free :class:`~metaplat.search.policy.SearchPolicy`: ``suggest``
proposes a program, ``on_trial_complete`` feeds its reward back (the trial's ``metric``,
negated for ``mode: min``; errored trials and missing/NaN metrics get ``worst_reward`` and a
logged reason). ``save``/``restore`` (used by Tune's experiment checkpoints, hence by
``Tuner.restore``) keep the controller's params, Adam moments, baseline and counters.
Works under ``ConcurrencyLimiter``; in ``sync`` mode ``suggest`` returns ``None`` while a
batch waits for its rewards.

YAML shape (``metaplat run``; the runner resolves ``name: controller`` to
:func:`make_searcher`, seeded by the spec's ``seed``)::

    seed: 0
    trainable: metaplat.tuning.controller_searcher:child_trainable
    tune:
      metric: reward          # child_trainable reports "reward" (worst for failed children)
      mode: max
      num_samples: 64         # number of children
      max_concurrent_trials: 2
      search_alg:
        name: controller
        space: {kind: nas_mlp, max_layers: 3}       # nas_conv | nas_mlp | nos (+ fields)
        child: {steps: 100, data: {source: spirals}} # ChildConfig, sent to each trial
        batch_size: 8         # PolicyConfig fields: batch_size, update, worst_reward,
        update: sync          #   random, controller
        controller: {hidden: 35, layers: 2, lr: 0.0006, entropy_coef: 0.0001,
                     algorithm: reinforce}  # or ppo (+ ppo_epochs, ppo_clip)

For children too small for a trial each, run ``batched_search_trainable`` as a single trial
(``config: {space, child, policy, num_children}``); see ``metaplat.search.batched``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from typing import Any

import torch
from ray import tune
from ray.tune.search import Searcher

from metaplat.search.batched import run_batch
from metaplat.search.children import ChildConfig, run_child
from metaplat.search.policy import PolicyConfig, SearchPolicy
from metaplat.search.space import SearchSpace, make_space
from metaplat.seeding import derive_seed
from metaplat.tuning.trainable import config_provenance
from metaplat.workers.base import LocalPool

log = logging.getLogger(__name__)

_POLICY_FIELDS = ("batch_size", "update", "worst_reward", "random", "seed", "controller")


class ControllerSearcher(Searcher):
    """Suggests child programs from an RL controller; learns from the trials' metric.

    ``metric``/``mode`` default to ``child_trainable``'s ``reward``/``max`` (Tune only
    passes its own metric to a searcher when ``param_space`` is non-empty).

    Each suggestion is ``{"tokens": [...], "program": {...}, "program_str": "...",
    "child": {...}}`` (``child`` only if a child config was given); Tune merges it over the
    ``param_space`` constants.
    """

    def __init__(
        self,
        space: SearchSpace | dict[str, Any],
        policy: PolicyConfig | dict[str, Any] | None = None,
        child: ChildConfig | dict[str, Any] | None = None,
        metric: str = "reward",
        mode: str = "max",
    ):
        super().__init__(metric=metric, mode=mode)
        self.space = make_space(space) if isinstance(space, dict) else space
        if not isinstance(policy, PolicyConfig):
            policy = PolicyConfig(**(policy or {}))
        self.policy = SearchPolicy(self.space, policy)
        if isinstance(child, dict):
            child = ChildConfig.from_dict(child)
        self.child = child
        self._live: dict[str, list[int]] = {}
        self._last: dict[str, float] = {}  # latest metric of each live trial

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        proposal = self.policy.propose()
        if proposal is None:
            return None
        tokens, program = proposal
        self._live[trial_id] = tokens
        config = {"tokens": tokens, "program": program, "program_str": self.space.describe(program)}
        if self.child is not None:
            config["child"] = self.child.to_dict()
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._live and self.metric in result:
            self._last[trial_id] = float(result[self.metric])

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        self._last.pop(trial_id, None)
        tokens = self._live.pop(trial_id, None)
        if tokens is None:
            return
        reward, reason = None, ""
        if error:
            reason = f"trial {trial_id} errored"
        elif not result or self.metric not in result:
            reason = f"trial {trial_id} reported no {self.metric!r}"
        else:
            value = float(result[self.metric])
            reward = -value if self.mode == "min" else value
            if not math.isfinite(reward):
                reason = f"trial {trial_id} reported {self.metric}={value}"
        self.policy.report(tokens, reward, reason)

    # -- checkpointing: plain data + tensors, loadable with weights_only=True ------------
    def get_state(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "live": dict(self._live),
            "last": dict(self._last),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self._live = {k: list(v) for k, v in state["live"].items()}
        self._last = {k: float(v) for k, v in state.get("last", {}).items()}
        # A trial that reported but whose completion the checkpoint missed (e.g. the sweep was
        # stopped between the two) is finished on restore from its last result; otherwise Tune
        # may never complete it again and a sync batch would wait forever.
        for trial_id, value in list(self._last.items()):
            self.on_trial_complete(trial_id, {self.metric: value})

    def save(self, checkpoint_path: str) -> None:
        torch.save(self.get_state(), checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(torch.load(checkpoint_path, weights_only=True))


def make_controller_searcher(spec_section: dict[str, Any], metric: str, mode: str) -> Searcher:
    """The searcher of a spec's ``tune.search_alg`` section (see the module docstring).

    ``spec_section`` keys: ``space`` (required), ``child``, ``name`` (ignored) and the
    ``PolicyConfig`` fields. Unknown keys raise ``ValueError`` naming the allowed ones.
    """
    section = dict(spec_section)
    section.pop("name", None)
    if "space" not in section:
        raise ValueError("search_alg 'controller' needs a 'space' (e.g. {kind: nas_mlp})")
    allowed = {"space", "child", *_POLICY_FIELDS}
    bad = sorted(set(section) - allowed)
    if bad:
        raise ValueError(
            f"unknown search_alg.controller key {bad[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    policy = PolicyConfig(**{k: section[k] for k in _POLICY_FIELDS if k in section})
    return ControllerSearcher(section["space"], policy, section.get("child"), metric, mode)


def make_searcher(
    metric: str,
    mode: str,
    seed: int,
    space: dict[str, Any],
    child: dict[str, Any] | None = None,
    batch_size: int = 8,
    update: str = "sync",
    worst_reward: float = 0.0,
    random: bool = False,
    controller: dict[str, Any] | None = None,
) -> Searcher:
    """``SEARCHERS["controller"]``: a spec's ``tune.search_alg`` options (the spec's ``seed``
    seeds the controller). ``random: true`` gives random search through the same space."""
    policy = PolicyConfig(
        batch_size=batch_size,
        update=update,
        worst_reward=worst_reward,
        random=random,
        seed=seed,
        controller=controller or {},  # type: ignore[arg-type]
    )
    return ControllerSearcher(space, policy, child, metric, mode)


def child_trainable(config: dict[str, Any]) -> None:
    """One child as a Tune trial: trains ``config["program"]``, reports ``reward`` once."""
    torch.set_num_threads(1)
    child = ChildConfig.from_dict(config.get("child"))
    seed = derive_seed(int(config.get("seed", 0)), "child", *config["tokens"])
    result = run_child(config["program"], child, seed)
    tune.report(
        {
            "reward": result.reward,
            "child/ok": float(result.status == "ok"),
            **result.metrics,
            **config_provenance(config),
        }
    )


def batched_search_trainable(config: dict[str, Any]) -> None:
    """A whole batched search as one trial; reports per batch and checkpoints the policy.

    ``config``: ``space`` (dict), ``child`` (dict), ``policy`` (dict), ``num_children``.
    """
    torch.set_num_threads(1)
    policy_cfg = PolicyConfig(**config.get("policy", {}))
    policy = SearchPolicy(make_space(config["space"]), policy_cfg)
    child = ChildConfig.from_dict(config.get("child"))
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            policy.load_state_dict(torch.load(os.path.join(d, "policy.pt"), weights_only=True))
    with LocalPool() as pool:
        while len(policy.history) < int(config["num_children"]):
            metrics = run_batch(policy, child, pool, policy_cfg.seed) | config_provenance(config)
            with tempfile.TemporaryDirectory() as d:
                torch.save(policy.state_dict(), os.path.join(d, "policy.pt"))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

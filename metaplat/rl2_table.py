"""RL²'s Tables 1 and 2 reproduced: baselines (tuned on meta-val tasks, scored on meta-test
tasks) and RL² (trained here within a time budget, or loaded from a checkpoint), each as
mean ± 95% CI of the total reward per trial from one run, with the paper's figure beside.

Used by ``benchmarks/rl2_table.py``; the logic lives here so it can be imported and tested.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from metaplat.baselines import bandit as B
from metaplat.baselines import mdp as M
from metaplat.inner.trials import TrialPolicy, evaluate_policy
from metaplat.outer.rl2 import RL2, RL2Config, evaluation_specs
from metaplat.stats import mean_ci95
from metaplat.tasks.base import Split
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool

log = logging.getLogger(__name__)

BANDIT_METHODS = ("random", "gittins", "ts", "ots", "ucb1", "eps-greedy", "greedy", "rl2")
MDP_METHODS = ("random", "psrl", "opsrl", "ucrl2", "beb", "eps-greedy", "greedy", "rl2", "oracle")

# Duan et al. 2016, Table 1 (as copied in public reproductions; see REFERENCES.md).
PAPER_BANDITS: dict[tuple[int, int], tuple[float, ...]] = {
    (10, 5): (5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7),
    (10, 10): (5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7),
    (10, 50): (5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8),
    (100, 5): (49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7),
    (100, 10): (49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5),
    (100, 50): (49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9),
    (500, 5): (249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6),
    (500, 10): (249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5),
    (500, 50): (249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9),
}
# Table 2 (no oracle column in the paper; knowing the MDP gives about 21.8 per episode).
PAPER_MDP: dict[int, tuple[float, ...]] = {
    10: (100.1, 138.1, 144.1, 146.6, 150.2, 132.8, 134.8, 156.2),
    25: (250.2, 408.8, 425.2, 424.1, 427.8, 377.3, 368.8, 445.7),
    50: (499.7, 904.4, 930.7, 918.9, 917.8, 823.3, 769.3, 936.1),
    75: (749.9, 1417.1, 1449.2, 1427.6, 1422.6, 1293.9, 1172.9, 1428.8),
    100: (999.4, 1939.5, 1973.9, 1942.1, 1935.1, 1778.2, 1578.5, 1913.7),
}

Cell = tuple[float, float, str]  # mean, CI half-width, note (tuned value, budget, ...)


def _gittins_gammas(n: int) -> tuple[float, ...]:
    return {10: (0.8, 0.9, 0.95)}.get(n, (0.95, 0.98, 0.99) if n <= 100 else (0.99, 0.995, 0.998))


#: method -> its hyper-parameter grid: (label, policy factory) pairs.
Candidates = dict[str, list[tuple[str, Callable[[], TrialPolicy]]]]


def bandit_candidates(n: int) -> Candidates:
    """Each bandit method with its hyper-parameter grid (tuned on meta-val tasks)."""
    return {
        "random": [("", B.RandomArm)],
        "gittins": [(f"γ={g}", partial(B.Gittins, g, n)) for g in _gittins_gammas(n)],
        "ts": [("", B.Thompson)],
        "ots": [("", B.OptimisticThompson)],
        "ucb1": [(f"c={c}", partial(B.UCB1, c)) for c in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)],
        "eps-greedy": [(f"ε={e}", partial(B.EpsilonGreedy, e)) for e in (0.01, 0.05, 0.1, 0.2)],
        "greedy": [("", B.Greedy)],
    }


def mdp_candidates() -> Candidates:
    """Each MDP method with its hyper-parameter grid (tuned on meta-val tasks)."""
    return {
        "random": [("", M.RandomAction)],
        "psrl": [("", M.PSRL)],
        "opsrl": [(f"J={j}", partial(M.OptimisticPSRL, j)) for j in (2, 5)],
        "ucrl2": [(f"c={c}", partial(M.UCRL2, c)) for c in (0.1, 0.3, 1.0)],
        "beb": [(f"β={b}", partial(M.BEB, b)) for b in (0.3, 1.0, 3.0)],
        "eps-greedy": [(f"ε={e}", partial(M.EpsilonGreedy, e)) for e in (0.02, 0.05, 0.1)],
        "greedy": [("", M.Greedy)],
        "oracle": [("", M.Oracle)],
    }


def score_baselines(
    family_name: str,
    config: dict[str, Any],
    episodes: int,
    candidates: Candidates,
    num_tasks: int,
    tune_tasks: int,
    seed: int,
    split: Split = "test",
    per_task: dict[str, torch.Tensor] | None = None,
    per_episode: dict[str, torch.Tensor] | None = None,
) -> dict[str, Cell]:
    """Tune each method's grid on ``tune_tasks`` meta-val tasks, score the best on
    ``num_tasks`` tasks of ``split`` (the same tasks RL² is scored on: meta-test for the
    table; meta-val for levels beside an RL² run's ``val/trial_return`` curve).
    ``per_task``, when given, receives each method's per-task returns (for
    :func:`paired_gap`); ``per_episode`` its ``[num_tasks, episodes]`` episode returns
    (for :func:`format_episode_curves`), from the same scoring run."""
    family = make_family(family_name, config)
    val = evaluation_specs(family, "val", tune_tasks, seed)
    test = evaluation_specs(family, split, num_tasks, seed)
    out: dict[str, Cell] = {}
    for name, grid in candidates.items():
        best = grid[0]
        if len(grid) > 1:
            scores = [
                evaluate_policy(make(), val, episodes, seed + 1).mean().item() for _, make in grid
            ]
            best = grid[max(range(len(grid)), key=scores.__getitem__)]
        by_episode = evaluate_policy(best[1](), test, episodes, seed + 2, per_episode=True)
        ret = by_episode.sum(1)
        out[name] = (*mean_ci95(ret.numpy()), best[0])
        if per_task is not None:
            per_task[name] = ret
        if per_episode is not None:
            per_episode[name] = by_episode
    return out


def paired_gap(
    cells: dict[str, Cell],
    per_task: dict[str, torch.Tensor],
    method: str = "rl2",
    exclude: Sequence[str] = ("oracle",),
) -> tuple[str, float, float] | None:
    """``method`` minus the best other method (by mean), task by task: the baseline's name,
    the mean difference and its 95% CI half-width. Every method meets the same tasks with the
    same reset seeds, so the paired CI is much narrower than either method's own; a gap
    whose CI covers 0 is a tie. ``exclude`` names upper bounds that are not baselines (the
    MDP oracle). None when ``method`` or the others have no per-task returns."""
    others = {m: c for m, c in cells.items() if m != method and m not in exclude and m in per_task}
    if method not in per_task or not others:
        return None
    best = max(others, key=lambda m: others[m][0])
    diff = per_task[method].double() - per_task[best].double()
    return (best, *mean_ci95(diff.numpy()))


@dataclasses.dataclass(frozen=True)
class RL2Setting:
    """One RL² training run for a table cell."""

    family: str
    config: dict[str, Any]
    episodes: int
    rl2: RL2Config

    @property
    def tag(self) -> str:
        cfg = "_".join(f"{k}{v}" for k, v in sorted(self.config.items()))
        return f"rl2_{self.family}_{cfg}_n{self.episodes}"


def rl2_setting(kind: str, n: int, k: int = 0) -> RL2Setting:
    """The RL² configuration used per cell (small enough for a CPU budget)."""
    if kind == "bandit":
        tasks = 512 if n <= 10 else 128
        cfg = RL2Config(
            episodes_per_trial=n,
            tasks_per_iteration=tasks,
            hidden_size=128,
            learning_rate=1e-3,
            epochs=4,
            minibatches=4,
        )
        return RL2Setting("bandit", {"num_arms": k}, n, cfg)
    # MDPs: GAE lambda 0.95 (0.3 let the policy's entropy collapse before the return rose)
    # and the step-in-episode/trial inputs (which the value head needs for 100-step trials);
    # a checkpoint without those inputs resumes with zero weights on them.
    cfg = RL2Config(
        episodes_per_trial=n,
        tasks_per_iteration=256,
        hidden_size=128,
        learning_rate=1e-3,
        epochs=4,
        minibatches=4,
        gae_lambda=0.95,
        time_inputs=True,
    )
    return RL2Setting("tabular_mdp", {}, n, cfg)


def cell_setting(tag: str) -> RL2Setting:
    """The setting of a cell tag: ``b<n>x<k>`` (bandits) or ``m<n>`` (MDPs)."""
    if tag.startswith("b") and "x" in tag:
        n, k = map(int, tag[1:].split("x"))
        return rl2_setting("bandit", n, k)
    if tag.startswith("m"):
        return rl2_setting("mdp", int(tag[1:]))
    raise ValueError(f"cell tag {tag!r}: expected b<n>x<k> (e.g. b100x5) or m<n> (e.g. m10)")


NETWORK_FIELDS = ("time_inputs", "hidden_size", "rnn_cell")
"""RL2Config fields that change the network's shape and so persist across phases."""


def config_overrides(items: list[str]) -> dict[str, Any]:
    """``["gae_lambda=0.95", ...]`` -> RL2Config fields, each value parsed as the field's
    type; an unknown field or a bad value is an error that names it."""
    fields = {f.name: f for f in dataclasses.fields(RL2Config)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(
                f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}"
            )
        kind = type(getattr(RL2Config(), name))
        flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        try:
            out[name] = flags[value.lower()] if kind is bool else kind(value)
        except (KeyError, ValueError):
            raise ValueError(f"--set {item!r}: {value!r} is not a {kind.__name__}") from None
    return out


def carried_network(facts: dict[str, Any]) -> dict[str, Any]:
    """The network-shaping fields (:data:`NETWORK_FIELDS`) a saved cell's last phase set:
    its policy reads and computes with them, so later phases and scoring keep them."""
    phases = facts.get("phases") or [{}]
    return {k: v for k, v in phases[-1].get("overrides", {}).items() if k in NETWORK_FIELDS}


def play_checkpoint(setting: RL2Setting, path: Path, seed: int = 0) -> tuple[RL2, Any]:
    """The kept best of the checkpoint at ``path`` as a policy in ``setting``: its own
    cell's, or another cell's with the same network shapes (e.g. an n=500 bandit file
    played for 100 pulls). The network fields its last phase set come with it; a policy
    for other shapes (another number of arms, another family) is an error that names them."""
    saved = torch.load(path, weights_only=True)
    cfg = dataclasses.replace(setting.rl2, **carried_network(saved["facts"]))
    algo = RL2(cfg, make_family(setting.family, setting.config), LocalPool(1), seed)
    best = widen_inputs(saved["best"], algo.net.input_size)
    _require_shapes(best["params"], algo.init().params, f"cannot play {path} in {setting.tag}")
    return algo, algo.load_state_dict(best)


def _require_shapes(
    params: dict[str, torch.Tensor], like: dict[str, torch.Tensor], what: str
) -> None:
    """``params`` must have the parameter names and shapes of ``like`` (a fresh network of
    the cell); otherwise a ``ValueError`` that starts with ``what`` and names the shapes."""
    shapes = {k: tuple(v.shape) for k, v in like.items()}
    if {k: tuple(v.shape) for k, v in params.items()} != shapes:
        raise ValueError(f"{what}: its parameters have other shapes (needs {shapes})")


def _phase(
    cfg: RL2Config,
    from_iteration: int,
    from_best: bool,
    val_tasks: int,
    overrides: dict[str, Any] | None = None,
    ema: float = 0.0,
) -> dict[str, Any]:
    """The record of one training phase in a cell's ``facts["phases"]``."""
    return {
        "from_iteration": from_iteration,
        "from_best": from_best,
        "learning_rate": cfg.learning_rate,
        "tasks_per_iteration": cfg.tasks_per_iteration,
        "entropy_coef": cfg.entropy_coef,
        "val_tasks": val_tasks,
        "overrides": dict(overrides or {}),
    } | ({"ema": ema} if ema else {})


def train_rl2(
    setting: RL2Setting,
    budget_s: float,
    seed: int,
    ckpt_dir: Path | None,
    overrides: dict[str, Any] | None = None,
    from_best: bool = False,
    val_tasks: int = 500,
    init_from: RL2Setting | None = None,
    eval_every_steps: int = 500_000,
    ema: float = 0.0,
) -> tuple[RL2, Any, dict[str, Any]]:
    """Train RL² for ``budget_s`` seconds of wall clock (or resume/finish from a
    checkpoint in ``ckpt_dir``), keeping the parameters with the best meta-val return
    (the public reproduction also reports peak performance); returns the algorithm,
    the kept state and facts about the run.

    A resumed run is a new *phase*: ``overrides`` replaces fields of the cell's
    :class:`RL2Config` for it (e.g. a lower ``learning_rate`` and more
    ``tasks_per_iteration`` to fine-tune), ``from_best`` resumes from the kept best
    state instead of the last one, and ``val_tasks`` meta-val tasks pick the best (more
    tasks: less selection bias from evaluation noise). Every phase with a budget is
    listed in ``facts["phases"]``, so the cell's note can say how it was trained. A phase
    that sets a larger ``hidden_size`` grows the saved GRU without changing what it
    computes (:func:`widen_hidden`; an LN-GRU's split units change it a little); like
    ``time_inputs``, the new shape stays for later phases and for scoring.

    ``init_from`` warm-starts a cell that has no checkpoint yet from another cell's kept
    best parameters (same network shapes, e.g. bandits with more pulls per trial, or a
    GRU grown to this cell's ``hidden_size``; with their value scale, but fresh Adam moments
    and counters);
    ``facts["init_from"]`` records that cell and its training cost.

    The policy is scored on meta-val about every ``eval_every_steps`` training env steps
    (at least once per update, and after the last): fewer evaluations leave more of the
    budget to training when updates are large, more give the kept best more candidates.

    ``ema`` (a decay in ``(0, 1)``; 0: off) keeps an exponential moving average of the
    phase's parameters, ``avg = ema * avg + (1 - ema) * params`` after every update, and
    scores it beside the current state at each evaluation: averaging the last ~1 / (1 - ema)
    updates smooths the noise of single PPO updates, and the average is kept as the best
    (with the current state's Adam moments and counters) when it scores higher."""
    if eval_every_steps < 1:
        raise ValueError(f"eval_every_steps {eval_every_steps}: must be at least 1")
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema {ema}: must be in [0, 1) (0: no parameter averaging)")
    family = make_family(setting.family, setting.config)
    path = ckpt_dir / f"{setting.tag}.pt" if ckpt_dir else None
    saved = torch.load(path, weights_only=True) if path is not None and path.exists() else None
    # fields that shape the network stay as the cell's last phase set them (a phase that
    # switched time_inputs on left a policy that reads them), unless overridden again
    carried = carried_network(saved["facts"]) if saved is not None else {}
    rl2_cfg = dataclasses.replace(setting.rl2, **(carried | (overrides or {})))
    algo = RL2(rl2_cfg, family, LocalPool(1), seed)
    facts: dict[str, Any] = {"train_s": 0.0, "iterations": 0, "env_steps": 0, "best_val": None}
    state = fresh = algo.init()

    def fit(d: dict[str, Any]) -> dict[str, Any]:
        """A saved state of this cell, grown to this phase's network (more inputs or units)."""
        return widen_hidden(widen_inputs(d, algo.net.input_size), fresh.params)

    if init_from is not None and ckpt_dir is not None and saved is None:
        source = torch.load(ckpt_dir / f"{init_from.tag}.pt", weights_only=True)
        params = widen_hidden(source["best"], fresh.params)["params"]
        _require_shapes(
            params, state.params, f"cannot warm-start {setting.tag} from {init_from.tag}"
        )
        # the value head predicts returns over the source's scale: keep it with the head
        state = dataclasses.replace(
            state,
            params={k: v.clone() for k, v in params.items()},
            value_scale=source["best"]["value_scale"],
        )
        src = source["facts"]
        facts["init_from"] = {
            "tag": init_from.tag,
            "train_s": src["train_s"],
            "env_steps": src["env_steps"],
            "iteration": source["best"]["iteration"],
        }
    best = state
    if saved is not None:
        state = algo.load_state_dict(fit(saved["state"]))
        best = algo.load_state_dict(fit(saved["best"]))
        facts = saved["facts"]
        # a checkpoint from before phases were recorded: one phase, the cell's own config
        old = _phase(setting.rl2, 0, False, 500) | {"to_iteration": facts["iterations"]}
        facts.setdefault("phases", [old])
        facts.setdefault("total_env_steps", facts["env_steps"])
        if from_best and budget_s > 0:
            state = best
    if budget_s > 0:
        # score the kept state (a fresh or warm start: the start) on this phase's tasks:
        # it is a candidate, and maxima over noisier evaluations are not comparable
        facts["best_val"] = algo.evaluate(best, "val", val_tasks)["val/trial_return"]
        phase = _phase(
            rl2_cfg, state.iteration, from_best, val_tasks, carried | (overrides or {}), ema
        )
        facts.setdefault("phases", []).append(phase)
    start = time.perf_counter()
    spent, spent_steps, first_steps = (
        facts["train_s"],
        facts.get("total_env_steps", 0),
        state.env_steps,
    )
    eval_every = 0  # iterations per evaluation: ~eval_every_steps (set after one step)
    avg: dict[str, torch.Tensor] | None = None  # the phase's parameter average (ema > 0)

    def save() -> None:
        facts["train_s"] = spent + time.perf_counter() - start
        facts["iterations"], facts["env_steps"] = state.iteration, state.env_steps
        # env_steps: the kept lineage's; total_env_steps: all training, resumed branches too
        facts["total_env_steps"] = spent_steps + state.env_steps - first_steps
        if budget_s > 0:
            facts["phases"][-1]["to_iteration"] = state.iteration
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"state": algo.state_dict(state), "best": algo.state_dict(best), "facts": facts},
                path,
            )

    while time.perf_counter() - start < budget_s:
        before = state.env_steps
        state, metrics = algo.step(state)
        if ema:
            avg = {
                k: v.clone() if avg is None else torch.lerp(v, avg[k], ema)
                for k, v in state.params.items()
            }
        eval_every = eval_every or max(1, eval_every_steps // (state.env_steps - before))
        last = time.perf_counter() - start >= budget_s  # the final state is a candidate too
        if state.iteration % eval_every == 0 or last:
            candidates = [("val", state)]
            if avg is not None:
                candidates.append(("ema", dataclasses.replace(state, params=avg)))
            scores = []
            for name, candidate in candidates:
                val = algo.evaluate(candidate, "val", val_tasks)["val/trial_return"]
                scores.append(f"{name} {val:.2f}")
                if facts["best_val"] is None or val > facts["best_val"]:
                    facts["best_val"], best = val, candidate
                    facts["best_ema"] = ema if name == "ema" else 0.0  # 0: not an average
            log.info(
                "%s it %d train %.2f %s",
                setting.tag,
                state.iteration,
                metrics["train/trial_return"],
                " ".join(scores),
            )
            save()  # a killed run keeps what it has
    if budget_s > 0:  # scoring only leaves the checkpoint as it is (it may be a shipped one)
        save()
    return algo, best, facts


def _zero_columns(w: torch.Tensor, n: int) -> torch.Tensor:
    """``w [rows, cols]`` with ``n`` zero columns appended: weights that read new inputs or
    units as nothing, so the function is unchanged."""
    return torch.cat([w, w.new_zeros(w.shape[0], n)], 1)


def widen_inputs(saved: dict[str, Any], input_size: int) -> dict[str, Any]:
    """A saved RL² state whose GRU reads fewer inputs than ``input_size`` (a checkpoint
    from before ``time_inputs`` was switched on) with zero input weights (and Adam moments)
    for the new trailing inputs: the same function as before, so training resumes."""
    key = "gru.weight_ih_l0" if "gru.weight_ih_l0" in saved["params"] else "gru.weight_ih"
    have = saved["params"][key].shape[1]
    if have >= input_size:
        return saved
    out = dict(saved)
    for part in ("params", "adam_m", "adam_v"):
        tensors = dict(saved[part])
        w = tensors[key]
        tensors[key] = _zero_columns(w, input_size - have)
        out[part] = tensors
    return out


def widen_hidden(saved: dict[str, Any], init: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A saved RL² state grown to the GRU of ``init`` (fresh parameters of the wider
    network, :meth:`GRUPolicy.init_params`), computing the same function (Net2Net-style;
    an LN-GRU's, up to second order).

    A plain GRU's new units take their weights from ``init``, but the old units' gates and
    both heads read them with zero weights, so the policy and value are unchanged until
    training uses them; new entries start with zero Adam moments and the old ones keep
    theirs. An LN-GRU grows by copying (:func:`_widen_lngru`), which needs a whole multiple
    of its units. A smaller network is an error."""
    params = saved["params"]
    have, hidden_size = params["pi.weight"].shape[1], init["pi.weight"].shape[1]
    if hidden_size < have:
        raise ValueError(f"hidden_size {hidden_size}: the checkpoint's GRU has {have} units")
    if hidden_size == have:
        return saved
    if "gru.weight_hh_l0" not in params:
        return _widen_lngru(saved, init)

    def gates(w: torch.Tensor, key: str, source: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """[3h, ...] -> [3H, ...]: each of the r, z, n blocks gets the new units' rows, from
        ``source[key]`` (a tensor of the wider network) or zeros."""
        blocks = w.reshape(3, have, *w.shape[1:])
        new = (
            w.new_zeros(3, hidden_size - have, *w.shape[1:])
            if source is None
            else source[key].reshape(3, hidden_size, *w.shape[1:])[:, have:].to(w)
        )
        return torch.cat([blocks, new], 1).reshape(3 * hidden_size, *w.shape[1:])

    out = dict(saved)
    for part in ("params", "adam_m", "adam_v"):
        t, source = dict(saved[part]), init if part == "params" else None
        for key in ("gru.weight_ih_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"):
            t[key] = gates(t[key], key, source)
        # old units read the new ones with zero weights; new units read every unit
        key = "gru.weight_hh_l0"
        t[key] = gates(_zero_columns(t[key], hidden_size - have), key, source)
        for head in ("pi.weight", "v.weight"):
            t[head] = _zero_columns(t[head], hidden_size - have)
        out[part] = t
    return out


#: the symmetry-breaking offsets of an LN-GRU's copied units (:func:`_widen_lngru`), in
#: units of the wider network's initial weights
COPY_NOISE = 1.0


def _widen_lngru(
    saved: dict[str, Any], init: dict[str, torch.Tensor], noise: float = COPY_NOISE
) -> dict[str, Any]:
    """A saved LN-GRU state grown to ``init``'s width (``times`` its own), each unit copied
    ``times`` times (units ``j``, ``j + H``, ...): every copy reads what the unit read and
    keeps its layer-norm gain and shift, and whatever read the unit (the recurrence and
    both heads) reads each copy with ``1 / times`` of the weight. With the copies in step,
    every layer norm sees the same mean and variance as before (a tiled vector has its
    tile's statistics) and the policy and value are unchanged. Identical copies would get
    identical gradients and never part (1% noise on one copy's rows left them as close
    after 54 updates as at the start), so the rows that feed each unit's copies get
    offsets that sum to zero across the copies (``noise`` times ``init``'s rows, centred),
    as when splitting neurons: the readers' sum of the copies and each layer norm's mean
    move only at second order (the shipped n=100, k=50 file, doubled, on 2000 meta-val
    tasks: 84.77 before, 84.79 / 84.80 / 84.78 with offsets of 0.1 / 0.3 / 1.0). Adam
    moments are tiled as they are (Adam's step is invariant to the gradients' scale)."""
    have, hidden_size = saved["params"]["pi.weight"].shape[1], init["pi.weight"].shape[1]
    if hidden_size % have:
        raise ValueError(
            f"hidden_size {hidden_size}: an LN-GRU grows by copying its {have} units, so "
            f"hidden_size must be a multiple of {have}"
        )
    times = hidden_size // have

    def rows(w: torch.Tensor) -> torch.Tensor:
        """[3h, cols] -> [3H, cols]: each gate block's units tiled."""
        return w.reshape(3, have, -1).repeat(1, times, 1).reshape(3 * hidden_size, -1)

    def jitter(w: torch.Tensor, key: str) -> torch.Tensor:
        """``w`` (already widened) with zero-mean noise across each unit's copies."""
        source = init[key].reshape(3, times, have, -1).to(w)
        offsets = noise * (source - source.mean(1, keepdim=True))
        return (w.reshape(3, times, have, -1) + offsets).reshape(w.shape)

    out = dict(saved)
    for part in ("params", "adam_m", "adam_v"):
        t = dict(saved[part])
        scale = 1.0 / times if part == "params" else 1.0
        t["gru.weight_ih"] = rows(t["gru.weight_ih"])
        t["gru.weight_hh"] = rows(t["gru.weight_hh"]).repeat(1, times) * scale
        for key in ("gru.ln_ih_weight", "gru.ln_ih_bias", "gru.ln_hh_weight", "gru.ln_hh_bias"):
            t[key] = t[key].repeat(1, times)
        for head in ("pi.weight", "v.weight"):
            t[head] = t[head].repeat(1, times) * scale
        if part == "params" and noise:
            for key in ("gru.weight_ih", "gru.weight_hh"):
                t[key] = jitter(t[key], key)
        out[part] = t
    return out


def score_rl2(
    algo: RL2, state: Any, num_tasks: int, seed: int, per_episode: bool = False
) -> torch.Tensor:
    """RL²'s per-task returns on the same meta-test tasks, with the same reset seeds and
    evaluation code as the baselines (``[num_tasks, episodes]`` with ``per_episode``)."""
    test = evaluation_specs(algo.family, "test", num_tasks, seed)
    return evaluate_policy(
        algo.policy(state), test, algo.config.episodes_per_trial, seed + 2, per_episode=per_episode
    )


def format_episode_curves(title: str, curves: dict[str, torch.Tensor], bins: int = 10) -> str:
    """Where in the trial each method earns its return: one line per method (from
    ``[tasks, episodes]`` episode returns) with the mean reward per episode in each of up
    to ``bins`` consecutive groups of episodes (an explorer pays early and gains late)."""
    episodes = next(iter(curves.values())).shape[1]
    groups = min(bins, episodes)
    edges = [i * episodes // groups for i in range(groups + 1)]
    spans = list(zip(edges[:-1], edges[1:], strict=True))
    heads = [f"ep {a + 1}" if b - a == 1 else f"ep {a + 1}-{b}" for a, b in spans]
    width = max(9, *(len(h) + 1 for h in heads))
    lines = [title, "method".ljust(12) + "".join(h.rjust(width) for h in heads)]
    for name, per_episode in curves.items():
        means = per_episode.double().mean(0)
        row = [means[a:b].mean().item() for a, b in spans]
        lines.append(name.ljust(12) + "".join(f"{v:.3g}".rjust(width) for v in row))
    return "\n".join(lines)


def format_table(
    title: str,
    methods: Sequence[str],
    rows: Mapping[str, Mapping[str, Cell | None]],
    paper: Mapping[str, Sequence[float]],
) -> str:
    """One table: rows are settings, columns methods; cells ``mean ± ci [paper]``."""
    width = 22
    lines = [title, "setting".ljust(12) + "".join(m.rjust(width) for m in methods)]
    for row, cells in rows.items():
        line = row.ljust(12)
        for j, m in enumerate(methods):
            cell = cells.get(m)
            ref = paper.get(row, ())
            ref_s = f" [{ref[j]:g}]" if j < len(ref) else ""
            txt = "not trained" if cell is None else f"{cell[0]:.1f}±{cell[1]:.1f}"
            line += (txt + ref_s).rjust(width)
        lines.append(line)
        notes = ", ".join(f"{m}: {c[2]}" for m, c in cells.items() if c is not None and c[2])
        if notes:
            lines.append(" " * 12 + notes)
    return "\n".join(lines)


#: Families with baselines, and each one's candidate grids given the trial's episodes.
BASELINE_FAMILIES: dict[str, Callable[[int], Candidates]] = {
    "bandit": bandit_candidates,
    "tabular_mdp": lambda episodes: mdp_candidates(),
}


def baseline_levels(
    family_name: str,
    config: dict[str, Any],
    episodes: int,
    seed: int,
    num_tasks: int = 500,
    tune_tasks: int = 100,
) -> dict[str, Cell]:
    """Every baseline's mean trial return on the meta-val tasks an RL² run with ``seed``
    evaluates on (``val/trial_return``): the levels its learning curve is read against."""
    if family_name not in BASELINE_FAMILIES:
        raise ValueError(
            f"no baselines for family {family_name!r}; "
            f"families with baselines: {', '.join(BASELINE_FAMILIES)}"
        )
    candidates = BASELINE_FAMILIES[family_name](episodes)
    return score_baselines(
        family_name, config, episodes, candidates, num_tasks, tune_tasks, seed, split="val"
    )

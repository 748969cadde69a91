"""Reproduce RL²'s Tables 1 (bandits) and 2 (tabular MDPs), with the paper's figures beside.

    PYTHONPATH=. python benchmarks/rl2_table.py                       # baselines + saved RL²
    PYTHONPATH=. python benchmarks/rl2_table.py --train b10x5 --budget 600
    PYTHONPATH=. python benchmarks/rl2_table.py --bandits 10x5,100x5 --mdp 10 --tasks 500
    # a fine-tuning phase: from the kept best, lower lr and entropy, bigger batches
    PYTHONPATH=. python benchmarks/rl2_table.py --bandits 100x5 --mdp "" --train b100x5 \
        --budget 1800 --lr 3e-4 --trials-per-update 512 --entropy-coef 0.001 --from-best \
        --val-tasks 2000
    # also score a moving average of the phase's parameters as a kept-best candidate
    PYTHONPATH=. python benchmarks/rl2_table.py --bandits 100x5 --mdp "" --train b100x5 \
        --budget 1800 --from-best --ema 0.995 --val-tasks 1000
    # the n=500 file played for 100 pulls, paired against the n=100 file on the same tasks
    PYTHONPATH=. python benchmarks/rl2_table.py --bandits 100x10 --mdp "" \
        --ckpt-dir benchmarks/rl2_checkpoints --tasks 50000 --tune-tasks 1000 \
        --compare benchmarks/rl2_checkpoints/rl2_bandit_num_arms10_n500.pt
    # a longer-trial cell warm-started from a trained one
    PYTHONPATH=. python benchmarks/rl2_table.py --bandits 500x5 --mdp "" --train b500x5 \
        --init-from b100x5 --budget 2400

Baselines are tuned on meta-val tasks and scored on 1000 (``--tasks``) meta-test tasks;
RL² is scored on the same tasks with the same evaluation code. RL² cells come from
checkpoints in ``--ckpt-dir`` (written by ``--train``; training resumes from them and
adds ``--budget`` seconds per setting) and read "not trained" otherwise. Each trained
cell's note gives its training wall clock, iterations and all env steps trained (a
from-best phase's abandoned branch included), its phases and any warm start.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from metaplat.rl2_table import (
    BANDIT_METHODS,
    MDP_METHODS,
    PAPER_BANDITS,
    PAPER_MDP,
    Cell,
    RL2Setting,
    bandit_candidates,
    cell_setting,
    config_overrides,
    format_episode_curves,
    format_table,
    mdp_candidates,
    paired_gap,
    play_checkpoint,
    rl2_setting,
    score_baselines,
    score_rl2,
    train_rl2,
)
from metaplat.stats import mean_ci95


def with_gap(
    cell: tuple[float, float, str] | None,
    cells: dict[str, Any],
    per_task: dict[str, torch.Tensor],
) -> tuple[float, float, str] | None:
    """RL²'s cell with its paired gap to the best baseline appended to the note."""
    gap = paired_gap(cells | {"rl2": cell}, per_task) if cell is not None else None
    if cell is None or gap is None:
        return cell
    best, diff, half = gap
    verdict = "tie" if abs(diff) <= half else ("ahead" if diff > 0 else "behind")
    return (*cell[:2], f"{cell[2]}; paired vs {best}: {diff:+.2f} ± {half:.2f} ({verdict})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--bandits",
        default="10x5,10x10,10x50,100x5,100x10,100x50,500x5,500x10,500x50",
        help="n x k settings of Table 1 (empty: none)",
    )
    p.add_argument("--mdp", default="10,25,50,75,100", help="n settings of Table 2 (empty: none)")
    p.add_argument("--tasks", type=int, default=1000, help="meta-test tasks per cell")
    p.add_argument("--tune-tasks", type=int, default=300, help="meta-val tasks for tuning")
    p.add_argument("--train", default="", help="RL² cells to train now, e.g. b10x5,b100x5,m10")
    p.add_argument("--budget", type=float, default=0.0, help="training seconds per trained cell")
    p.add_argument(
        "--ckpt-dir", type=Path, default=Path("~/metaplat_results/rl2_table").expanduser()
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, help="learning rate for this training phase")
    p.add_argument("--trials-per-update", type=int, help="tasks_per_iteration for this phase")
    p.add_argument("--entropy-coef", type=float, help="entropy bonus for this phase")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other RL2Config field for this phase, e.g. gae_lambda=0.95 (repeatable)",
    )
    p.add_argument(
        "--from-best", action="store_true", help="resume from the kept best state, not the last"
    )
    p.add_argument(
        "--init-from",
        default="",
        help="warm-start cells without a checkpoint from this cell's best (e.g. b100x5)",
    )
    p.add_argument("--val-tasks", type=int, default=500, help="meta-val tasks that pick the best")
    p.add_argument(
        "--eval-every-steps",
        type=int,
        default=500_000,
        help="training env steps between meta-val evaluations (at least one update)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="also score a moving average of the phase's parameters with this decay "
        "(e.g. 0.99) at each evaluation, as a candidate for the kept best (0: off)",
    )
    p.add_argument(
        "--compare",
        type=Path,
        help="also score another RL² checkpoint on each cell's meta-test tasks, paired with "
        "the cell's: a folder (its file for the same cell) or one .pt file, played in each "
        "cell (e.g. an n=500 file scored as an n=100 policy)",
    )
    p.add_argument(
        "--per-episode",
        action="store_true",
        help="also print, per setting, each method's mean reward per episode across the trial",
    )
    args = p.parse_args()
    if args.eval_every_steps < 1:
        p.error(f"--eval-every-steps {args.eval_every_steps}: must be at least 1")
    if not 0.0 <= args.ema < 1.0:
        p.error(f"--ema {args.ema}: must be in [0, 1) (0: no parameter averaging)")
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train = {t.strip() for t in args.train.split(",") if t.strip()}
    overrides: dict[str, Any] = {}  # for the cells trained now
    if args.lr is not None:
        overrides["learning_rate"] = args.lr
    if args.trials_per_update is not None:
        overrides["tasks_per_iteration"] = args.trials_per_update
    if args.entropy_coef is not None:
        overrides["entropy_coef"] = args.entropy_coef
    try:
        overrides |= config_overrides(args.set)
    except ValueError as e:
        p.error(str(e))
    t0 = time.perf_counter()

    curves: list[str] = []  # --per-episode blocks, printed after the tables

    def rl2_cell(
        tag: str,
        setting: RL2Setting,
        per_task: dict[str, torch.Tensor],
        per_episode: dict[str, torch.Tensor] | None,
    ) -> tuple[float, float, str] | None:
        path = args.ckpt_dir / f"{setting.tag}.pt"
        if tag not in train and not path.exists():
            return None
        algo, state, facts = train_rl2(
            setting,
            args.budget if tag in train else 0.0,
            args.seed,
            args.ckpt_dir,
            overrides if tag in train else None,
            args.from_best,
            args.val_tasks,
            cell_setting(args.init_from) if args.init_from else None,
            args.eval_every_steps,
            args.ema,
        )
        by_episode = score_rl2(algo, state, args.tasks, args.seed, per_episode=True)
        per_task["rl2"] = by_episode.sum(1)
        if per_episode is not None:
            per_episode["rl2"] = by_episode
        mean, half = mean_ci95(per_task["rl2"].numpy())
        note = (
            f"{facts['train_s'] / 60:.1f} min, {facts['iterations']} it, "
            f"{facts.get('total_env_steps', facts['env_steps']) / 1e6:.2f}M steps"
        )
        if algo.config.rnn_cell != "gru":
            note += f", {algo.config.rnn_cell} cell"
        if "init_from" in facts:
            src = facts["init_from"]
            note += (
                f"; warm-started from {src['tag']} ({src['train_s'] / 60:.0f} min, "
                f"{src['env_steps'] / 1e6:.1f}M steps)"
            )
        phases = facts.get("phases", [])
        if len(phases) > 1:
            last = phases[-1]
            note += (
                f"; {len(phases)} phases, last from it {last['from_iteration']}"
                f"{' (best)' if last['from_best'] else ''}: lr {last['learning_rate']:g}, "
                f"{last['tasks_per_iteration']} trials/update, "
                f"entropy {last.get('entropy_coef', setting.rl2.entropy_coef):g}"
            )
            extra = {k: v for k, v in last.get("overrides", {}).items() if k not in last}
            note += "".join(f", {k} {v}" for k, v in extra.items())
        if facts.get("best_ema"):
            note += f"; kept best: the parameter average (ema {facts['best_ema']:g})"
        return mean, half, note

    def with_compare(
        cell: Cell | None, setting: RL2Setting, per_task: dict[str, torch.Tensor]
    ) -> Cell | None:
        """``--compare``'s checkpoint scored on the same meta-test tasks, and the paired
        per-task difference (this cell's file minus that one), appended to RL²'s note."""
        if cell is None or args.compare is None:
            return cell
        other = args.compare
        if other.suffix != ".pt":
            other = other / f"{setting.tag}.pt"
        if not other.exists():
            return (*cell[:2], f"{cell[2]}; compare: {other} does not exist")
        theirs = score_rl2(*play_checkpoint(setting, other, args.seed), args.tasks, args.seed)
        mean, half = mean_ci95(theirs.numpy())
        diff, dhalf = mean_ci95((per_task["rl2"] - theirs).numpy())
        return (
            *cell[:2],
            f"{cell[2]}; {other} on the same tasks: {mean:.2f} ± {half:.2f}, "
            f"paired (this file - that one): {diff:+.2f} ± {dhalf:.2f}",
        )

    def add_curves(setting: str, per_episode: dict[str, torch.Tensor] | None) -> None:
        if per_episode:  # RL² first, then the baselines in the table's order
            ordered = dict(sorted(per_episode.items(), key=lambda kv: kv[0] != "rl2"))
            curves.append(
                format_episode_curves(
                    f"{setting}: mean reward per episode, over {args.tasks} meta-test tasks",
                    ordered,
                )
            )

    if args.bandits:
        rows, paper = {}, {}
        for item in args.bandits.split(","):
            n, k = map(int, item.split("x"))
            per_task: dict[str, torch.Tensor] = {}
            per_episode: dict[str, torch.Tensor] | None = {} if args.per_episode else None
            cells: dict[str, Cell | None] = dict(
                score_baselines(
                    "bandit",
                    {"num_arms": k},
                    n,
                    bandit_candidates(n),
                    args.tasks,
                    args.tune_tasks,
                    args.seed,
                    per_task=per_task,
                    per_episode=per_episode,
                )
            )
            setting = rl2_setting("bandit", n, k)
            cells["rl2"] = with_compare(
                with_gap(rl2_cell(f"b{n}x{k}", setting, per_task, per_episode), cells, per_task),
                setting,
                per_task,
            )
            row = f"n={n},k={k}"
            add_curves(f"bandits {row}", per_episode)
            rows[row], paper[row] = cells, PAPER_BANDITS[(n, k)]
        print(
            format_table(
                "Table 1: bandits, total reward per trial, ours ± 95% CI [paper]",
                BANDIT_METHODS,
                rows,
                paper,
            )
        )
        print()
    if args.mdp:
        rows, paper = {}, {}
        for item in args.mdp.split(","):
            n = int(item)
            per_task = {}
            per_episode = {} if args.per_episode else None
            cells = dict(
                score_baselines(
                    "tabular_mdp",
                    {},
                    n,
                    mdp_candidates(),
                    args.tasks,
                    args.tune_tasks,
                    args.seed,
                    per_task=per_task,
                    per_episode=per_episode,
                )
            )
            setting = rl2_setting("mdp", n)
            cells["rl2"] = with_compare(
                with_gap(rl2_cell(f"m{n}", setting, per_task, per_episode), cells, per_task),
                setting,
                per_task,
            )
            rows[f"n={n}"], paper[f"n={n}"] = cells, PAPER_MDP[n]
            add_curves(f"tabular MDPs n={n}", per_episode)
        print(
            format_table(
                "Table 2: tabular MDPs (|S|=10, |A|=5, H=10), total reward per "
                "trial, ours ± 95% CI [paper]",
                MDP_METHODS,
                rows,
                paper,
            )
        )
        print(
            "(greedy and ε-greedy plan by value iteration in the posterior-mean MDP, with ε "
            "tuned on meta-val tasks: a stronger bar than the paper's greedy rows)"
        )
    for block in curves:
        print("\n" + block)
    print(
        f"\n(one run, seed {args.seed}, {time.perf_counter() - t0:.0f} s; "
        f"baselines tuned on {args.tune_tasks} meta-val tasks)"
    )


if __name__ == "__main__":
    main()

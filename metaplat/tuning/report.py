"""Read an experiment folder back: one row per trial, and each trial's learning curve.

Works from the files Tune writes into ``<storage_path>/<name>`` (``params.json``,
``progress.csv``, ``error.txt`` per trial) plus ``metaplat_spec.yaml``, with pandas only,
so it needs no Ray and also reads a folder copied off a cluster. Other modules extend the
report by adding a function to :data:`PLOTS` (``name -> fn(curves, metric, out_path)``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from metaplat.tuning.space import SPEC_HASH_KEY

SPEC_FILE = "metaplat_spec.yaml"


def trial_dirs(path: str | Path) -> list[Path]:
    """Trial folders of an experiment (those holding ``params.json``), sorted by name."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not an experiment folder")
    dirs = sorted(p.parent for p in root.glob("*/params.json"))
    if not dirs:
        raise FileNotFoundError(f"{root} holds no trials (no */params.json)")
    return dirs


def load_spec_dict(path: str | Path) -> dict[str, Any] | None:
    f = Path(path).expanduser() / SPEC_FILE
    return yaml.safe_load(f.read_text()) if f.exists() else None


def curves(path: str | Path) -> dict[str, pd.DataFrame]:
    """Trial folder name -> its ``progress.csv`` (one row per report)."""
    out = {}
    for d in trial_dirs(path):
        f = d / "progress.csv"
        out[d.name] = pd.read_csv(f) if f.exists() and f.stat().st_size else pd.DataFrame()
    return out


def trials_table(
    path: str | Path, metric: str | None = None, mode: str | None = None
) -> pd.DataFrame:
    """One row per trial: its searched config, status, last iteration, best and last metric.

    ``metric`` / ``mode`` default to the experiment's spec. Status is ``done`` (reached
    ``train.iterations``), ``error`` (Tune wrote an ``error.txt`` and it did not finish) or
    ``stopped`` (early-stopped by a scheduler, or still running).
    """
    spec = load_spec_dict(path) or {}
    metric = metric or spec.get("tune", {}).get("metric")
    mode = mode or spec.get("tune", {}).get("mode", "min")
    iterations = spec.get("train", {}).get("iterations")
    rows = []
    for d in trial_dirs(path):
        config = json.loads((d / "params.json").read_text())
        config.pop(SPEC_HASH_KEY, None)
        f = d / "progress.csv"
        df = pd.read_csv(f) if f.exists() and f.stat().st_size else pd.DataFrame()
        last_it = int(df["train/iteration"].iloc[-1]) if "train/iteration" in df else 0
        trial = str(df["trial_id"].iloc[-1]) if "trial_id" in df else d.name
        row: dict[str, Any] = {"trial": trial}
        row.update(config)
        if iterations is not None and last_it >= iterations:
            row["status"] = "done"
        elif (d / "error.txt").exists():
            row["status"] = "error"
        else:
            row["status"] = "stopped"
        row["iterations"] = last_it
        if metric and metric in df and df[metric].notna().any():
            values = df[metric]
            best = values.idxmin() if mode == "min" else values.idxmax()
            row[f"best {metric}"] = float(values[best])
            row["best at"] = int(df["train/iteration"][best]) if "train/iteration" in df else best
            row[f"last {metric}"] = float(values.iloc[-1])
        rows.append(row)
    table = pd.DataFrame(rows)
    best_col = f"best {metric}"
    if best_col in table:
        table = table.sort_values(best_col, ascending=(mode == "min"), na_position="last")
    return table.reset_index(drop=True)


def rl2_baseline_levels(
    path: str | Path, num_tasks: int = 500
) -> dict[str, tuple[float, float, str]] | None:
    """For an RL² experiment on a family with baselines (bandit, tabular_mdp): each
    baseline's ``(mean, ci95, setting)`` trial return on the meta-val tasks its
    ``val/trial_return`` is measured on; ``None`` for other experiments."""
    spec = load_spec_dict(path) or {}
    method, task = spec.get("method") or {}, spec.get("task") or {}
    if method.get("name") not in ("rl2", "rl2_rllib"):
        return None
    from metaplat.outer.rl2 import RL2Config
    from metaplat.rl2_table import BASELINE_FAMILIES, baseline_levels

    if task.get("family") not in BASELINE_FAMILIES:
        return None
    config = method.get("config") or {}
    episodes = int(config.get("episodes_per_trial", RL2Config.episodes_per_trial))
    return baseline_levels(
        task["family"], task.get("config") or {}, episodes, int(spec.get("seed", 0)), num_tasks
    )


def curve_vs_levels(
    runs: dict[str, pd.DataFrame], metric: str, levels: dict[str, tuple[float, float, str]]
) -> pd.DataFrame:
    """Each trial's ``metric`` at every reported iteration where it changed, beside the best
    baseline level and the gap to it (positive: above the best baseline)."""
    best_name = max(levels, key=lambda k: levels[k][0] if k != "oracle" else float("-inf"))
    best = levels[best_name][0]
    rows = []
    for trial, df in runs.items():
        if metric not in df or "train/iteration" not in df:
            continue
        points = df[["train/iteration", metric]].dropna()
        points = points[points[metric].diff().fillna(1.0) != 0]  # evaluations, not repeats
        for it, value in zip(points["train/iteration"], points[metric], strict=True):
            rows.append(
                {
                    "trial": trial,
                    "iteration": int(it),
                    metric: float(value),
                    f"best baseline ({best_name})": best,
                    "gap": float(value) - best,
                }
            )
    return pd.DataFrame(rows)


def plot_curves(
    runs: dict[str, pd.DataFrame],
    metric: str,
    out: str | Path,
    levels: dict[str, tuple[float, float, str]] | None = None,
) -> Path:
    """``metric`` against ``train/iteration`` for every trial (and a dashed line per
    baseline level when given); needs matplotlib (optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, df in runs.items():
        if metric in df and "train/iteration" in df:
            ax.plot(df["train/iteration"], df[metric], label=name[:40])
    for name, (mean, _, _) in (levels or {}).items():
        ax.axhline(mean, linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(name, (0, mean), fontsize=6, color="grey", va="bottom")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel(metric)
    if len(runs) <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


#: Plot kinds for ``metaplat report --plot OUT [--plot-kind NAME]``.
PLOTS: dict[str, Callable[..., Path]] = {
    "curves": plot_curves,
}

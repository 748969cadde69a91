"""The RL² checkpoints shipped under ``benchmarks/rl2_checkpoints/`` (what the README's
RL² rows are scored from) still load into the table's cell settings and still play well:
a change to the policy's inputs or shapes, or to the cell configuration, fails here
rather than in a researcher's fresh clone."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "benchmarks" / "rl2_checkpoints"
CELLS = ("b100x5",)


def _table() -> ModuleType:
    script = ROOT / "benchmarks" / "rl2_table.py"
    spec = importlib.util.spec_from_file_location("rl2_table_bench", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tag", CELLS)
def test_shipped_rl2_checkpoint_scores_from_a_fresh_clone(tag: str) -> None:
    from metaplat.rl2_table import score_rl2, train_rl2

    setting = _table().cell_setting(tag)
    path = SHIPPED / f"{setting.tag}.pt"
    assert path.exists(), f"{path} is not shipped (see benchmarks/rl2_checkpoints/README.md)"
    before = path.read_bytes()
    algo, best, facts = train_rl2(setting, 0.0, 0, SHIPPED)
    assert path.read_bytes() == before  # scoring only never rewrites a shipped checkpoint
    assert facts["iterations"] > 0 and facts["phases"]
    returns = score_rl2(algo, best, 200, 0)
    n, k = setting.episodes, setting.config["num_arms"]
    # a trained n=100, k=5 policy is far above random (n/2) and near the best arm's
    # expectation n*k/(k+1); on 200 tasks its mean has a CI of about ±2.5
    assert returns.mean().item() > 0.85 * n * k / (k + 1)

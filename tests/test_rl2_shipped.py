"""The RL² checkpoints shipped under ``benchmarks/rl2_checkpoints/`` (what the README's
RL² rows are scored from) still load into the table's cell settings
(``metaplat.rl2_table.cell_setting``) and still play well: a change to the policy's inputs
or shapes, or to the cell configuration, fails here rather than in a researcher's fresh
clone."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from _paths import ROOT

SHIPPED = ROOT / "benchmarks" / "rl2_checkpoints"
# cell -> the mean its shipped policy must beat on 200 meta-test tasks: well above random
# (n/2) and a fresh policy, a few CIs below what the trained policy scores on 1000 tasks
CELLS = {
    "b10x5": 6.0,
    "b10x10": 6.0,
    "b10x50": 6.0,
    "b100x5": 72.0,  # random 50, the shipped LN-GRU policy 77.1 (78.2 on 50,000 tasks)
    "b100x10": 77.0,  # random 50, the shipped LN-GRU policy 82.4 (82.7 on 50,000 tasks)
    "b500x5": 377.0,  # random 250, the shipped LN-GRU policy 399.5
    "b100x50": 77.0,  # random 50, the shipped LN-GRU policy 84.5 (84.7 on 50,000 tasks)
    "b500x10": 402.0,  # random 250, the shipped LN-GRU policy 434.2 (434.0 on 20,000 tasks)
    "b500x50": 408.0,  # random 250, the shipped LN-GRU policy 438.5
    "m10": 122.0,  # random 100, the shipped policy 134 (PSRL's level)
    "m25": 335.0,  # random 252, the shipped policy 357 (PSRL 406)
    "m50": 700.0,  # random 503, the shipped policy 740 (PSRL 906)
    "m75": 1070.0,  # random 754, the shipped policy 1128 (PSRL 1423)
    "m100": 1450.0,  # random 1004, the shipped policy 1524 (PSRL 1948)
}


@pytest.mark.parametrize("tag, bar", CELLS.items())
def test_shipped_rl2_checkpoint_scores_from_a_fresh_clone(tag: str, bar: float) -> None:
    from metaplat.rl2_table import cell_setting, score_rl2, train_rl2

    setting = cell_setting(tag)
    path = SHIPPED / f"{setting.tag}.pt"
    assert path.exists(), f"{path} is not shipped (see benchmarks/rl2_checkpoints/README.md)"
    before = path.read_bytes()
    algo, best, facts = train_rl2(setting, 0.0, 0, SHIPPED)
    assert path.read_bytes() == before  # scoring only never rewrites a shipped checkpoint
    assert facts["iterations"] > 0 and facts["phases"]
    assert score_rl2(algo, best, 200, 0).mean().item() > bar


def test_table_compares_a_checkpoint_with_another_on_the_same_tasks() -> None:
    """``--compare`` scores a second file on the cell's meta-test tasks, paired: a file
    against itself differs by exactly nothing, and a file from another cell is played in
    this one (the n=500 policy for 10 pulls)."""
    table = ROOT / "benchmarks" / "rl2_table.py"

    def note(compare: str) -> str:
        out = subprocess.run(
            [
                sys.executable,
                str(table),
                "--bandits",
                "10x5",
                "--mdp",
                "",
                "--tasks",
                "100",
                "--tune-tasks",
                "20",
                "--ckpt-dir",
                str(SHIPPED),
                "--compare",
                compare,
            ],
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        return out.split("rl2:")[1]

    assert "paired (this file - that one): +0.00 ± 0.00" in note(str(SHIPPED))
    longer = note(str(SHIPPED / "rl2_bandit_num_arms5_n500.pt"))
    found = re.search(r"n500\.pt on the same tasks: ([\d.]+) ± [\d.]+, paired", longer)
    assert found and float(found[1]) > 6.0  # random: 5 per 10 pulls

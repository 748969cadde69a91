"""The ``metaplat`` command line, called through ``main(argv)`` (no Ray needed)."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _paths import SPECS

from metaplat.cli import main
from metaplat.tasks.registry import FAMILIES

SPEC = textwrap.dedent(
    """
    name: cli_toy
    task: {family: sinusoid, config: {num_support: 5}}
    method: {name: "toy_outer:ToyLoop", config: {lr: 0.1}}
    train: {iterations: 3, eval_every: 1, checkpoint_every: 1, eval_tasks: 2}
    tune:
      metric: val/loss
      search_space: {method.config.lr: {grid: [0.1, 0.2]}}
    """
)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    f = tmp_path / "spec.yaml"
    f.write_text(SPEC)
    return f


def test_validate_ok(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(spec_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {spec_file}: cli_toy: toy_outer:ToyLoop on sinusoid, 2 trials")


def test_validate_reports_every_error(
    spec_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(SPEC)
    data["train"]["iteration"] = 3
    data["workers"] = {"num_workers": -2}
    bad.write_text(yaml.safe_dump(data))
    assert main(["validate", str(spec_file), str(bad)]) == 1
    captured = capsys.readouterr()
    assert "OK: " in captured.out
    err = captured.err.splitlines()
    assert err[0] == f"INVALID: {bad}"
    assert any("train: unknown key 'iteration'; did you mean 'iterations'?" in e for e in err)
    assert any("workers: num_workers must be >= 0, got -2" in e for e in err)


def test_validate_with_overrides(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(spec_file), "--set", "method.config.lr=-1"]) == 1
    assert "method.config: lr must be > 0, got -1.0" in capsys.readouterr().err


def test_run_rejects_invalid_spec_before_starting_ray(
    spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(spec_file), "--iterations", "0"]) == 1
    assert "train: iterations must be >= 1, got 0" in capsys.readouterr().err


def test_tasks_list_survives_missing_modules(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(FAMILIES._paths, "zz_broken", "metaplat.tasks.no_such_module:Nope")
    assert main(["tasks", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "kind", "description"]
    assert any(line.split()[:2] == ["sinusoid", "supervised"] for line in lines)
    broken = next(line for line in lines if line.startswith("zz_broken"))
    assert "(unavailable: ModuleNotFoundError" in broken


def test_tasks_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks", "show", "sinusoid", "--config", "num_support=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["kind"] == "supervised" and shown["config"]["num_support"] == 3
    assert main(["tasks", "show", "sinusiod"]) == 1
    assert "did you mean 'sinusoid'?" in capsys.readouterr().err
    assert main(["tasks", "show", "sinusoid", "--config", "num_suport=3"]) == 1
    assert (
        "config: unknown key 'num_suport'; did you mean 'num_support'?" in capsys.readouterr().err
    )


def make_experiment(root: Path) -> Path:
    """A hand-made experiment folder, as Tune + the trainable leave it."""
    exp = root / "exp"
    spec = yaml.safe_load(SPEC)
    exp.mkdir()
    (exp / "metaplat_spec.yaml").write_text(yaml.safe_dump(spec))
    trials = {
        "toy_a_00000_0_lr=0.1": (0.1, [5.0, 3.0, 4.0], False),
        "toy_a_00001_1_lr=0.2": (0.2, [6.0, 2.5], True),
    }
    for i, (name, (lr, losses, errored)) in enumerate(trials.items()):
        d = exp / name
        d.mkdir()
        (d / "params.json").write_text(
            json.dumps({"seed": 0, "spec_hash": "h", "method.config.lr": lr})
        )
        pd.DataFrame(
            {
                "val/loss": losses,
                "train/iteration": range(1, len(losses) + 1),
                "trial_id": f"a_0000{i}",
            }
        ).to_csv(d / "progress.csv", index=False)
        if errored:
            (d / "error.txt").write_text("boom")
    return exp


def test_report_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = make_experiment(tmp_path)
    out_csv = tmp_path / "t.csv"
    assert main(["report", str(exp), "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "best val/loss" in printed[0] and "spec_hash" not in printed[0]
    table = pd.read_csv(out_csv)
    assert table["trial"].tolist() == ["a_00001", "a_00000"]  # best (min) first
    assert table["status"].tolist() == ["error", "done"]
    assert table["best val/loss"].tolist() == [2.5, 3.0]
    assert table["best at"].tolist() == [2, 2]
    assert table["last val/loss"].tolist() == [2.5, 4.0]
    assert main(["report", str(exp), "--mode", "max", "--csv", str(out_csv)]) == 0
    assert pd.read_csv(out_csv)["best val/loss"].tolist() == [6.0, 5.0]


def test_report_plot_is_optional(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = make_experiment(tmp_path)
    assert main(["report", str(exp), "--plot", str(tmp_path / "c.png")]) == 0
    try:
        import matplotlib  # noqa: F401

        assert (tmp_path / "c.png").exists()
    except ImportError:
        assert "--plot needs matplotlib" in capsys.readouterr().err


def test_report_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "is not an experiment folder" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.parametrize(
    "spec, overrides",
    [
        # The README's main job, shortened: MAML through two worker actors on 2 CPUs.
        ("quickstart.yaml", ["train.iterations=3", "train.eval_every=1", "train.eval_tasks=4"]),
        # Controller search with one Tune trial per child (NAS-RL), through `metaplat run`.
        (
            "nas_mlp_sinusoid.yaml",
            ["tune.num_samples=2", "tune.search_alg.batch_size=2", "tune.search_alg.child.steps=5"],
        ),
    ],
)
def test_repo_spec_runs_end_to_end_and_resume_keeps_results(
    ray_session: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    overrides: list[str],
) -> None:
    argv = ["run", str(SPECS / spec), "--storage-path", str(tmp_path)]
    argv += [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "0 errored" in out
    progress_files = list(tmp_path.glob("*/*/progress.csv"))
    assert progress_files
    for progress in progress_files:  # every trial reports provenance
        row = pd.read_csv(progress).iloc[-1]
        assert len(str(row["meta/spec_hash"])) == 12 and row["meta/version/ray"]
    assert main(argv) == 1  # an existing experiment is never overwritten
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # finished trials are kept, nothing reruns
    assert "0 errored" in capsys.readouterr().out


@pytest.mark.ray
def test_rllib_spec_runs_end_to_end_on_two_cpus(
    ray_session: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The RLlib RL² spec as shipped (one env runner, no pool) through `metaplat run`: the
    env runner lands in bundle 1 of the trial's placement group (it used to find no bundle
    there: "placement group bundle index 1 is invalid"), and the trial finishes."""
    from ray.tune import ExperimentAnalysis

    argv = ["run", str(SPECS / "rl2_cartpole_rllib.yaml")]
    argv += ["--storage-path", str(tmp_path), "--name", "rllib", "--iterations", "1"]
    for o in (
        "method.config.train_batch_size=400",
        "method.config.minibatch_size=200",
        "method.config.num_epochs=1",
        "method.config.num_envs_per_env_runner=2",
        "train.eval_tasks=4",
    ):
        argv += ["--set", o]
    assert main(argv) == 0
    assert "1 trials, 0 errored" in capsys.readouterr().out
    (trial,) = ExperimentAnalysis(str(tmp_path / "rllib")).trials
    assert trial.status == "TERMINATED" and trial.error_file is None
    assert trial.placement_group_factory.bundles == [{"CPU": 1.0}, {"CPU": 1.0}]
    ret = trial.last_result["val/trial_return"]
    assert math.isfinite(ret) and ret > 0 and trial.last_result["train/iteration"] == 1


def test_report_rl2_curve_against_baseline_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "rl2_exp"
    trial = exp / "rl2_00000"
    trial.mkdir(parents=True)
    spec = {
        "name": "rl2_exp",
        "seed": 0,
        "task": {"family": "bandit", "config": {"num_arms": 2}},
        "method": {"name": "rl2", "config": {"episodes_per_trial": 10}},
        "tune": {"metric": "val/trial_return", "mode": "max"},
    }
    (exp / "metaplat_spec.yaml").write_text(yaml.safe_dump(spec))
    (trial / "params.json").write_text(json.dumps({"seed": 0}))
    pd.DataFrame(
        {"train/iteration": [1, 2, 3, 4], "val/trial_return": [5.0, 5.0, 6.0, 9.9]}
    ).to_csv(trial / "progress.csv", index=False)
    assert main(["report", str(exp), "--baselines", "--baseline-tasks", "200"]) == 0
    out = capsys.readouterr().out
    levels = {
        line.split()[0]: float(line.split()[-3])
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("random", "gittins", "ucb1", "greedy")
    }
    # 10 pulls of 2 arms with p ~ U[0,1]: random earns 10 * 0.5; a good policy ~ 10 * 2/3
    assert abs(levels["random"] - 5.0) < 0.5 and levels["gittins"] > levels["random"] + 0.5
    assert levels["gittins"] < 10 * 2 / 3 + 0.3
    curve = out.split("learning curve vs the best baseline:")[1]
    assert [line.split()[1] for line in curve.strip().splitlines()[1:]] == ["1", "3", "4"]
    toy = make_experiment(tmp_path)  # not an RL² experiment
    assert main(["report", str(toy), "--baselines"]) == 1

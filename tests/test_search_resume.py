"""An interrupted Tune sweep resumes with the controller's state intact (Tuner.restore)."""

from __future__ import annotations

import glob
import os
import signal
from pathlib import Path

import pytest
import torch

SPACE = {"kind": "nas_mlp", "max_layers": 2, "widths": [4, 8]}
TINY_CHILD = {"steps": 5, "data": {"num_train": 32, "num_val": 32}}


def _searcher_state(exp_dir: Path) -> dict:
    paths = glob.glob(os.path.join(exp_dir, "searcher-state-*.pkl"))
    assert paths, f"no searcher checkpoint in {exp_dir}"
    # newest session by name, as Tune's own restore picks it (mtimes change on re-sync)
    return torch.load(max(paths), weights_only=True)


@pytest.mark.ray
def test_interrupted_sweep_resumes_with_controller_state(ray_session: None, tmp_path: Path) -> None:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from metaplat.tuning.controller_searcher import ControllerSearcher, child_trainable

    armed = tmp_path / "interrupt_armed"
    armed.touch()

    class InterruptAfterTwo(tune.Callback):
        """Sends the driver SIGUSR1 (Tune's Ctrl+C: save state, end the run) after 2 children.

        Callbacks are pickled into the experiment; the marker file disarms the restored copy.
        """

        def __init__(self) -> None:
            self.completed = 0

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:  # noqa: ANN001
            self.completed += 1
            if self.completed == 2 and armed.exists():
                os.kill(os.getpid(), signal.SIGUSR1)

    searcher = ControllerSearcher(SPACE, {"batch_size": 2, "seed": 3}, TINY_CHILD)
    tuner = tune.Tuner(
        child_trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, 1),
            num_samples=4,
            metric="reward",
            mode="max",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="resume", verbose=0, callbacks=[InterruptAfterTwo()]
        ),
    )
    first = tuner.fit()
    exp_dir = tmp_path / "resume"
    before = _searcher_state(exp_dir)["policy"]
    assert len(first) == 2 and len(before["history"]) == 2
    assert before["controller"]["num_updates"] == 1  # one sync batch of 2
    # what was saved is the live searcher's state: params, baseline, update count
    for k, v in searcher.policy.state.params.items():
        assert torch.equal(before["controller"]["params"][k], v)
    assert before["controller"]["baseline"] == searcher.policy.state.baseline

    armed.unlink()
    restored = tune.Tuner.restore(str(exp_dir), trainable=child_trainable)
    second = restored.fit()
    after = _searcher_state(exp_dir)["policy"]
    assert len(second) == 4 and not second.errors
    assert after["history"][:2] == before["history"]  # continued, not restarted
    assert len(after["history"]) == 4 and after["controller"]["num_updates"] == 2
    assert after["controller"]["num_sampled"] == 2  # two sampling calls: one per batch

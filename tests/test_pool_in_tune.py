"""A RayPool created inside a Tune trial lands in the trial's placement group."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import cloudpickle

from metaplat.tasks.base import TaskSpec
from metaplat.workers import worker_bundles

# Ray workers cannot import this test module; the trainable and job travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class SeedTimes:
    """Per shard: ``payload * seed`` for each task."""

    def __call__(self, payload: float, specs: Sequence[TaskSpec], device: torch.device) -> list:
        return [payload * s.seed for s in specs]


def trainable(config: dict[str, Any]) -> None:
    import ray
    from ray import tune
    from ray.util.placement_group import get_current_placement_group

    from metaplat.workers import RayPool

    trial_pg = get_current_placement_group()
    specs = [TaskSpec("toy", {}, {}, seed=s, split="train") for s in (0, 3, 6, 9, 12)]
    try:  # one worker more than the trial reserved: fails fast instead of waiting forever
        RayPool(3, num_cpus=0.5)
        oversized = "no error"
    except ValueError as e:
        oversized = str(e)
    with RayPool(2, num_cpus=0.5) as pool:
        out = pool.map(SeedTimes(), config["scale"], specs)
        infos = pool.worker_info()
    tune.report(
        {
            "flat": sum(out, []) == [config["scale"] * s.seed for s in specs],
            "shard_sizes": float(len(out[0]) * 10 + len(out[1])),
            "in_trial_pg": float(sum(i.placement_group_id == trial_pg.id.hex() for i in infos)),
            "oversized": oversized,
            "captures": ray.get_runtime_context().should_capture_child_tasks_in_placement_group,
        }
    )


@pytest.mark.ray
def test_pool_runs_inside_a_trial_placement_group(ray_session: None, tmp_path: Path) -> None:
    from ray import tune

    bundles = worker_bundles(2, 0.5, 0, 0.5)
    tuner = tune.Tuner(
        tune.with_resources(trainable, tune.PlacementGroupFactory(bundles)),
        param_space={"scale": 2.0},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="pool_in_tune", verbose=0),
    )
    results = tuner.fit()

    assert results.num_errors == 0, [r.error for r in results]
    m = results[0].metrics
    assert m["flat"] is True  # results correct and in task order
    assert m["shard_sizes"] == 32.0  # 5 tasks over 2 workers: shards of 3 and 2
    assert m["captures"] is True
    assert m["in_trial_pg"] == 2.0  # both actors sit in the trial's placement group
    assert "do not fit in this trial's placement group" in m["oversized"]

"""Evaluation harness: hand-computed CI, task order, determinism, method-agnostic entry points."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import pytest
import torch
from _metric_fixtures import BlobFamily

from metaplat.evaluation import (
    eval_specs,
    evaluate_fn,
    evaluate_method,
    run_per_task,
    summarize,
)
from metaplat.outer.protonet import ProtoNet, ProtoNetConfig
from metaplat.tasks.base import Episode, TaskSpec
from metaplat.workers.base import LocalPool

FAM = BlobFamily(num_ways=3, num_shots=1, num_query=2, shape=(4,))


def test_ci_is_mean_plus_minus_1_96_sd_over_sqrt_n() -> None:
    xs = [0.2, 0.6, 0.8, 1.0, 0.4]
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    m = summarize("test", {"post_acc": xs})
    assert m["test/post_acc"] == pytest.approx(mean)
    assert m["test/post_acc_ci95"] == pytest.approx(1.96 * sd / math.sqrt(len(xs)))
    assert m["test/num_tasks"] == 5


@dataclasses.dataclass(frozen=True)
class SeedJob:
    """Per-task values that identify the task, to check ordering."""

    def __call__(
        self, payload: float, specs: Sequence[TaskSpec], device: torch.device
    ) -> dict[str, list[float]]:
        return {"seed": [float(s.seed) + payload for s in specs]}


@pytest.mark.parametrize("workers,batch", [(1, 50), (3, 4), (2, 1)])
def test_per_task_values_come_back_in_spec_order(workers: int, batch: int) -> None:
    specs = eval_specs(FAM, "val", 11, seed=0)
    out = run_per_task(LocalPool(workers), SeedJob(), 0.5, specs, batch_size=batch)
    assert out["seed"] == [s.seed + 0.5 for s in specs]


def test_eval_specs_fixed_per_seed_and_split() -> None:
    a, b = eval_specs(FAM, "test", 20, 0), eval_specs(FAM, "test", 20, 0)
    assert a == b
    assert {s.seed for s in a}.isdisjoint(s.seed for s in eval_specs(FAM, "val", 20, 0))
    assert a != eval_specs(FAM, "test", 20, 1)
    assert all(s.split == "test" and s.seed % 3 == 2 for s in a)


def test_wrong_number_of_per_task_values_is_an_error() -> None:
    class Bad:
        def __call__(
            self, payload: object, specs: Sequence[TaskSpec], device: torch.device
        ) -> dict[str, list[float]]:
            return {"x": [0.0]}

    with pytest.raises(ValueError, match="3 tasks"):
        run_per_task(LocalPool(1), Bad(), None, eval_specs(FAM, "val", 3, 0))


def _nearest_centroid(payload: None, batch: Episode) -> dict[str, torch.Tensor]:
    """Raw-input ProtoNet (identity embedding): a hand-checkable evaluated function."""
    onehot = torch.nn.functional.one_hot(batch.support_y, 3).float()  # [T, Ns, N]
    protos = onehot.transpose(1, 2) @ batch.support_x / onehot.sum(1).unsqueeze(-1)
    d = torch.cdist(batch.query_x, protos)
    return {"post_acc": (d.argmin(-1) == batch.query_y).float().mean(-1)}


def test_evaluate_fn_matches_direct_computation() -> None:
    m = evaluate_fn(
        _nearest_centroid, FAM, LocalPool(2), "test", num_tasks=30, seed=7, batch_size=8
    )
    per_task = []
    for spec in eval_specs(FAM, "test", 30, 7):
        ep = FAM.build(spec)
        accs = _nearest_centroid(None, Episode.stack([ep]))["post_acc"]
        per_task.append(float(accs[0]))
    mean = sum(per_task) / 30
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_task) / 29)
    assert m["test/post_acc"] == pytest.approx(mean)
    assert m["test/post_acc_ci95"] == pytest.approx(1.96 * sd / math.sqrt(30))
    assert m == evaluate_fn(_nearest_centroid, FAM, LocalPool(1), "test", num_tasks=30, seed=7)


def test_evaluate_method_gives_ci_and_is_independent_of_workers_and_batching() -> None:
    results = []
    for workers, batch in ((1, 50), (3, 7)):
        cfg = ProtoNetConfig(hidden=4, embed_dim=4, eval_batch_size=batch)
        method = ProtoNet(cfg, FAM, LocalPool(workers), seed=0)
        results.append(evaluate_method(method, method.init(), "test", num_tasks=20))
    a, b = results
    assert set(a) == {
        "test/post_acc",
        "test/post_acc_ci95",
        "test/post_loss",
        "test/post_loss_ci95",
        "test/num_tasks",
    }
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5)


def test_evaluate_method_marks_missing_intervals_as_nan() -> None:
    class NoCI:
        def evaluate(
            self, state: object, split: str, num_tasks: int | None = None
        ) -> dict[str, float]:
            return {f"{split}/post_mse": 0.5}

    m = evaluate_method(NoCI(), None, "test", 10)
    assert m["test/post_mse"] == 0.5 and math.isnan(m["test/post_mse_ci95"])


def test_fewshot_table_runs_cells_and_marks_missing_and_inapplicable() -> None:
    from _metric_fixtures import NAME

    from metaplat.fewshot_table import Budget, Setting, build_table, format_table

    settings = [
        Setting(
            "blobs", NAME, {"num_ways": 3, "num_shots": 1, "num_query": 2, "shape": [4]}, "acc"
        ),
        Setting("sin K=5", "sinusoid", {"num_support": 5, "num_query": 10}, "mse"),
        Setting("nofam", "glyphs_does_not_exist", {}, "acc"),
    ]
    budget = Budget(iterations=1, meta_batch_size=2, eval_tasks=5)
    table = build_table(budget, ["protonet", "no_such_method"], settings)
    cells = table.rows["protonet"]
    assert 0 <= cells["blobs"].mean <= 100 and cells["blobs"].ci95 >= 0
    assert cells["sin K=5"].note == "n/a"
    assert cells["nofam"].note == "no family"
    text = format_table(table)
    assert (
        "no_such_method: skipped" in text
        and "family 'glyphs_does_not_exist'" in text
        and "1 outer iterations x 2 tasks" in text
    )
    assert "| protonet |" in text


def test_glyph_cells_train_gradient_methods_on_conv4_with_the_papers_inner_loop() -> None:
    from metaplat.fewshot_table import SETTINGS, Budget, method_config

    by_key = {s.key: s for s in SETTINGS}
    for name in ("maml", "fomaml", "reptile", "metasgd", "anil"):
        assert method_config(name, by_key["5w1s"], Budget()).model == "conv4"
        assert method_config(name, by_key["sin K=10"], Budget()).model == "mlp"
    five, twenty = (method_config("maml", by_key[k], Budget()) for k in ("5w1s", "20w5s"))
    assert (five.inner_lr, five.inner_steps, five.eval_inner_steps) == (0.4, 1, 3)
    assert (twenty.model, twenty.inner_lr, twenty.inner_steps) == ("conv4", 0.1, 5)

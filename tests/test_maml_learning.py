"""Learning tests (slow): the gradient-based methods actually meta-learn sinusoid regression.

Reference (shared/REFERENCES.md): a per-task-loop second-order MAML reached a post-adaptation
MSE of 0.474 after 1000 iterations (K=10, 5 inner steps) on a 2-core CPU. Here 400 iterations
with a larger outer step (3e-3) must get well below the pre-adaptation MSE and below what the
untrained network reaches with the same 10 adaptation steps.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from metaplat.outer.base import METHODS
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)


def train(method: str, iterations: int, **cfg: Any) -> tuple[dict[str, float], dict[str, float]]:
    torch.set_num_threads(1)
    cls = METHODS.get(method)
    m = cls(cls.Config(**cfg), make_family("sinusoid", {}), LocalPool(2), seed=0)
    s = m.init()
    before = m.evaluate(s, "val", 300)
    for _ in range(iterations):
        s, metrics = m.step(s)
        assert metrics["train/failed_tasks"] == 0
    after = m.evaluate(s, "test", 300)
    log.info(
        "%s: untrained post %.3f | trained pre %.3f, step1 %.3f, post %.3f",
        method,
        before["val/post_mse"],
        after["test/pre_mse"],
        after["test/mse_step1"],
        after["test/post_mse"],
    )
    return before, after


def test_maml_learns_sinusoids() -> None:
    before, after = train("maml", 400, inner_steps=5, outer_lr=3e-3)
    assert after["test/post_mse"] < 0.8, after
    assert after["test/post_mse"] < 0.3 * after["test/pre_mse"], after
    assert after["test/post_mse"] < 0.3 * before["val/post_mse"], (before, after)


@pytest.mark.parametrize(
    "method, cfg",
    [
        ("fomaml", {"inner_steps": 5, "outer_lr": 3e-3}),
        ("anil", {"inner_steps": 5, "outer_lr": 3e-3, "inner_lr": 0.05}),
        ("metasgd", {"inner_steps": 1, "outer_lr": 3e-3}),
        ("reptile", {"inner_steps": 10}),
    ],
)
def test_other_gradient_methods_learn(method: str, cfg: dict[str, Any]) -> None:
    before, after = train(method, 400, **cfg)
    assert after["test/post_mse"] < 0.7 * after["test/pre_mse"], after
    assert after["test/post_mse"] < 0.7 * before["val/post_mse"], (before, after)


def test_maml_conv4_learns_few_shot_classification() -> None:
    """3-way 1-shot episodes (synthetic prototypes + noise, labels permuted per task): after
    60 iterations one adaptation step beats what the untrained net reaches, and pre-adaptation
    accuracy stays at chance (labels carry no meaning across tasks)."""
    from test_gradient_methods import make  # registers the synthetic families

    fam = make_family("toy_ways_test", {"num_ways": 3, "num_shots": 1, "num_queries": 3})
    m = make(
        "maml",
        family=fam,
        model="conv4",
        conv_channels=8,
        inner_lr=0.4,
        meta_batch_size=4,
        eval_tasks=60,
        eval_inner_steps=1,
        outer_lr=3e-3,
    )
    s = m.init()
    before = m.evaluate(s, "val")
    for _ in range(60):
        s, _ = m.step(s)
    after = m.evaluate(s, "test")
    assert after["test/post_acc"] > before["val/post_acc"] + 0.15, (before, after)
    assert after["test/pre_acc"] < 0.5, after

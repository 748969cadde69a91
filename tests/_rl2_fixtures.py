"""Shared checks for the RL² tests (discrete and continuous policies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from metaplat.outer.rl2 import RL2


def runs_over_sharding(make_algo: Callable[[int], RL2]) -> list[tuple[Any, Any, Any]]:
    """Two RL² steps and a meta-val evaluation with 1, 2 and again 1 workers; checks that the
    repeat is identical and that sharding changes nothing beyond float rounding, and returns
    the three ``(state, train metrics, val metrics)``."""
    runs = []
    for workers in (1, 2, 1):
        algo = make_algo(workers)
        state = algo.init()
        for _ in range(2):
            state, metrics = algo.step(state)
        runs.append((state, metrics, algo.evaluate(state, "val")))
    (s0, m0, e0), (s1, m1, e1), (s2, m2, e2) = runs
    for k in s0.params:
        assert torch.equal(s0.params[k], s2.params[k])
        assert torch.allclose(s0.params[k], s1.params[k], atol=1e-6)
    assert m0["train/trial_return"] == m1["train/trial_return"] == m2["train/trial_return"]
    assert e0 == e2 and e0["val/trial_return"] == e1["val/trial_return"]
    return runs

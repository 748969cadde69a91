"""The task-spec contract itself, on a toy family defined here."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from metaplat._registry import LazyRegistry
from metaplat.tasks.base import SPLITS, Split, TaskFamily, TaskSpec
from metaplat.workers.base import LocalPool, shard


class Toy(TaskFamily):
    name = "toy"
    kind = "supervised"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        return {"a": float(rng.uniform(0, self.scale))}

    def build(self, spec: TaskSpec) -> Any:
        return spec.params["a"]


def test_splits_are_disjoint_and_reproducible() -> None:
    fam = Toy()
    seeds = {s: {t.seed for t in fam.sample(np.random.default_rng(0), s, 500)} for s in SPLITS}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["val"] & seeds["test"])
    a = fam.sample(np.random.default_rng(7), "val", 5)
    b = fam.sample(np.random.default_rng(7), "val", 5)
    assert a == b
    assert all(s.seed % 3 == 1 for s in a)


def test_spec_round_trips_json_and_rebuilds() -> None:
    spec = Toy(2.0).sample(np.random.default_rng(1), "test", 1)[0]
    again = TaskSpec.from_json(spec.to_json())
    assert again == spec
    assert Toy(**again.config).spec(again.seed, "test") == spec


def test_seed_of_another_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="belongs to split 'train'"):
        Toy().spec(3, "test")


def test_unknown_name_suggests_closest() -> None:
    reg: LazyRegistry[Any] = LazyRegistry("task family", {"sinusoid": "math:sin"})
    with pytest.raises(KeyError, match="did you mean 'sinusoid'"):
        reg.get("sinusiod")
    assert reg.get("sinusoid")(0.0) == 0.0


def test_make_family_names_unknown_family() -> None:
    from metaplat.tasks import make_family

    with pytest.raises(ValueError, match="unknown task family 'sinusiod'; did you mean"):
        make_family("sinusiod")


@pytest.mark.parametrize("n,k", [(10, 3), (2, 5), (7, 1), (0, 2)])
def test_shard_is_contiguous_and_complete(n: int, k: int) -> None:
    specs = Toy().sample(np.random.default_rng(0), "train", n)
    shards = shard(specs, k)
    assert [s for sh in shards for s in sh] == specs
    assert len(shards) <= max(k, 1)
    pool = LocalPool(num_workers=k)
    out = pool.map(lambda p, sp, d: [p * s.params["a"] for s in sp], 2.0, specs)
    assert [x for r in out for x in r] == [2.0 * s.params["a"] for s in specs]

"""Contracts of every supervised family buildable without external data, and the quadratics."""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from metaplat.tasks import make_family
from metaplat.tasks.base import SPLITS, OptimizationFamily, SupervisedFamily, TaskSpec
from metaplat.tasks.quadratic import QuadraticFamily, QuadraticProblem

# Small configs keep the suite fast; the contract does not depend on sizes.
SUPERVISED: dict[str, dict[str, Any]] = {
    "sinusoid": {"num_support": 5, "num_query": 7},
    "glyphs": {"num_ways": 3, "num_shots": 2, "num_query": 3, "image_size": 16},
}


@pytest.fixture(params=sorted(SUPERVISED))
def family(request: pytest.FixtureRequest) -> SupervisedFamily:
    fam = make_family(request.param, SUPERVISED[request.param])
    assert isinstance(fam, SupervisedFamily) and fam.kind == "supervised"
    return fam


def test_spec_json_round_trip_rebuilds_same_spec(family: SupervisedFamily) -> None:
    for split in SPLITS:
        spec = family.sample(np.random.default_rng(3), split, 1)[0]
        again = TaskSpec.from_json(spec.to_json())
        assert again == spec
        assert make_family(again.family, dict(again.config)).spec(again.seed, split) == spec


def test_same_seed_same_episode_tensors(family: SupervisedFamily) -> None:
    spec = family.sample(np.random.default_rng(0), "train", 1)[0]
    a = family.build(spec)
    b = make_family(spec.family, dict(spec.config)).build(TaskSpec.from_json(spec.to_json()))
    for name in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    other = family.build(family.sample(np.random.default_rng(1), "train", 1)[0])
    assert not torch.equal(a.support_x, other.support_x)


def test_build_batch_stacks_with_task_dim(family: SupervisedFamily) -> None:
    specs = family.sample(np.random.default_rng(0), "val", 3)
    batch = family.build_batch(specs)
    single = family.build(specs[1])
    for name in ("support_x", "support_y", "query_x", "query_y"):
        got, one = getattr(batch, name), getattr(single, name)
        assert got.shape == (3, *one.shape), name
        assert torch.equal(got[1], one), name


def test_config_rebuilds_family_and_pickles(family: SupervisedFamily) -> None:
    again = make_family(family.name, family.config())
    assert again.config() == family.config()
    assert json.loads(json.dumps(family.config())) == family.config()
    assert pickle.loads(pickle.dumps(family)).config() == family.config()  # ships to actors
    d = family.describe()
    assert d["kind"] == "supervised" and d["config"] == family.config()


def test_split_task_seeds_disjoint(family: SupervisedFamily) -> None:
    seeds = {s: {t.seed for t in family.sample(np.random.default_rng(0), s, 200)} for s in SPLITS}
    assert not (seeds["train"] & seeds["val"] or seeds["train"] & seeds["test"])
    assert not seeds["val"] & seeds["test"]


# -- quadratic optimization problems ----------------------------------------------------------


def test_quadratic_is_an_optimization_family() -> None:
    fam = make_family("quadratic", {"dim": 4})
    assert isinstance(fam, OptimizationFamily) and fam.kind == "optimization"
    assert fam.describe()["kind"] == "optimization"
    spec = fam.sample(np.random.default_rng(0), "test", 1)[0]
    assert TaskSpec.from_json(spec.to_json()) == spec
    assert torch.equal(fam.build(spec).W, make_family("quadratic", dict(spec.config)).build(spec).W)


def test_quadratic_loss_matches_hand_formula() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([1.0, -1.0])
    prob = QuadraticProblem(w, y, torch.zeros(2))
    theta = torch.tensor([0.5, -1.0])
    # W θ = [0.5 - 2, 1.5 - 4] = [-1.5, -2.5]; minus y = [-2.5, -1.5]; 6.25 + 2.25 = 8.5
    assert prob.loss(theta).item() == pytest.approx(8.5)
    # gradient 2 Wᵀ r = 2 [1*-2.5 + 3*-1.5, 2*-2.5 + 4*-1.5] = [-14, -22]
    assert torch.allclose(prob.grad(theta), torch.tensor([-14.0, -22.0]))


def test_quadratic_gradient_is_2_wt_residual() -> None:
    fam = QuadraticFamily(dim=6)
    prob = fam.build(fam.spec(0, "train"))
    theta = torch.randn(6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (g,) = torch.autograd.grad(prob.loss(theta), theta)
    expected = 2 * prob.W.T @ (prob.W @ theta.detach() - prob.y)
    assert torch.allclose(g, expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(prob.grad(theta.detach()), expected)
    assert torch.func.grad(prob.loss)(theta.detach()).allclose(expected, rtol=1e-5, atol=1e-5)


def test_quadratic_batch_matches_single_problems_and_vmaps() -> None:
    fam = QuadraticFamily(dim=5)
    specs = fam.sample(np.random.default_rng(0), "train", 4)
    batch = fam.build_batch(specs)
    assert batch.W.shape == (4, 5, 5) and batch.y.shape == (4, 5) and batch.theta0.shape == (4, 5)
    theta = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    losses = batch.loss_batch(theta)
    assert losses.shape == (4,)
    singles = torch.stack([fam.build(s).loss(theta[i]) for i, s in enumerate(specs)])
    assert torch.allclose(losses, singles)
    vmapped = torch.func.vmap(lambda w, y, t: QuadraticProblem(w, y, t).loss(t))(
        batch.W, batch.y, theta
    )
    assert torch.allclose(vmapped, singles)
    with pytest.raises(ValueError, match="theta must have shape"):
        batch.loss_batch(theta[:2])


def test_quadratic_distribution_init_and_solution() -> None:
    uni = QuadraticFamily(dim=10)
    prob = uni.build(uni.spec(3, "train"))
    assert prob.W.min() >= 0 and prob.W.max() < 1 and prob.y.min() >= 0
    assert prob.theta0.abs().max() < 0.1  # N(0, 0.01²)
    assert prob.loss(prob.solution()).item() < 1e-4 * prob.loss(prob.theta0).item()
    normal = QuadraticFamily(dim=10, distribution="normal")
    assert normal.build(normal.spec(3, "train")).W.min() < 0
    again = uni.build(uni.spec(3, "train"))
    assert torch.equal(again.W, prob.W) and torch.equal(again.theta0, prob.theta0)
    fresh = prob.init_params(torch.Generator().manual_seed(0))
    assert fresh.shape == (10,) and not torch.equal(fresh, prob.theta0)


@pytest.mark.parametrize(
    "config,match",
    [({"dim": 0}, "dim must be"), ({"distribution": "cauchy"}, "distribution must be one of")],
)
def test_quadratic_bad_config_names_field(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_family("quadratic", config)

"""Contracts of the gradient-based outer loops.

Configs, optimizers, state, seeds, classification, failures.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
from typing import Any

import numpy as np
import pytest
import torch
from _paths import SPECS

from metaplat.estimators import backprop
from metaplat.estimators.backprop import LR_PREFIX, MetaGradJob, ModelSpec, make_kernels
from metaplat.inner.adapt import InnerRule, adapt, stack_params
from metaplat.optim.functional import adam_init, adam_update, sgd_update
from metaplat.outer.base import METHODS
from metaplat.seeding import rng
from metaplat.tasks.base import Episode, Split, SupervisedFamily, TaskSpec
from metaplat.tasks.registry import FAMILIES, make_family
from metaplat.workers.base import LocalPool

GRADIENT_METHODS = ("maml", "fomaml", "reptile", "metasgd", "anil")
CPU = torch.device("cpu")


# -- synthetic families registered for these tests ---------------------------------------
@dataclasses.dataclass(frozen=True, repr=False)
class ToyWays(SupervisedFamily):
    """N-way K-shot episodes of 16x16 noise images around per-class prototypes (int labels)."""

    num_ways: int = 3
    num_shots: int = 1
    num_queries: int = 2
    poison: str = "none"
    """``none``, ``all`` (every task's targets NaN; regression only) or ``some``."""

    name = "toy_ways_test"

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        return {}

    def build(self, spec: TaskSpec) -> Episode:
        g = torch.Generator().manual_seed(spec.seed % 2**31)
        protos = torch.randn(self.num_ways, 1, 16, 16, generator=g)

        def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.arange(self.num_ways).repeat_interleave(k)
            return protos[y] + 0.3 * torch.randn(len(y), 1, 16, 16, generator=g), y

        sx, sy = draw(self.num_shots)
        qx, qy = draw(self.num_queries)
        return Episode(sx, sy, qx, qy)


@dataclasses.dataclass(frozen=True, repr=False)
class ToyNanSine(SupervisedFamily):
    """Linear regression; ``poison='all'``: every target NaN, ``'some'``: about every third task."""

    poison: str = "some"
    name = "toy_nan_test"

    def config(self) -> dict[str, Any]:
        return {"poison": self.poison}

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        return {"slope": float(rng.uniform(-2, 2)), "bad": bool(rng.integers(3) == 0)}

    def build(self, spec: TaskSpec) -> Episode:
        g = torch.Generator().manual_seed(spec.seed % 2**31)
        x = torch.rand(10, 1, generator=g) * 4 - 2
        y = spec.params["slope"] * x
        if self.poison == "all" or (self.poison == "some" and spec.params["bad"]):
            y = torch.full_like(y, math.nan)
        return Episode(x[:5], y[:5], x[5:], y[5:])


for _cls in (ToyWays, ToyNanSine):
    if _cls.name not in FAMILIES:
        FAMILIES.register(_cls.name, _cls)


def make(method: str, family: Any = None, workers: int = 1, seed: int = 0, **cfg: Any) -> Any:
    cls = METHODS.get(method)
    family = family or make_family("sinusoid", {"num_support": 5, "num_query": 5})
    base = {"meta_batch_size": 4, "hidden": (8, 8), "eval_inner_steps": 2, "eval_tasks": 6}
    return cls(cls.Config(**(base | cfg)), family, LocalPool(workers), seed)


# -- functional optimizers equal torch.optim ---------------------------------------------
def test_functional_adam_and_sgd_equal_torch_optim() -> None:
    g = torch.Generator().manual_seed(0)
    p0 = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    grads = [{k: torch.randn(v.shape, generator=g) for k, v in p0.items()} for _ in range(5)]
    for kind in ("adam", "sgd"):
        leaves = [v.clone().requires_grad_() for v in p0.values()]
        opt = (
            torch.optim.Adam(leaves, lr=0.01, betas=(0.5, 0.9))
            if kind == "adam"
            else torch.optim.SGD(leaves, lr=0.1)
        )
        params, state = dict(p0), adam_init(p0)
        for gr in grads:
            for leaf, gv in zip(leaves, gr.values(), strict=True):
                leaf.grad = gv.clone()
            opt.step()
            if kind == "adam":
                params, state = adam_update(params, gr, state, 0.01, betas=(0.5, 0.9))
            else:
                params = sgd_update(params, gr, 0.1)
        for leaf, v in zip(leaves, params.values(), strict=True):
            torch.testing.assert_close(leaf.detach(), v, rtol=1e-6, atol=1e-7)


def test_inner_adam_matches_torch_optim_per_task() -> None:
    """Reptile's inner Adam, stacked over tasks, equals torch.optim.Adam run on each task."""
    spec = ModelSpec(kind="mlp", in_shape=(1,), out_dim=1, hidden=(6,))
    fam = make_family("sinusoid", {"num_support": 5, "num_query": 5})
    ep = fam.build_batch(fam.sample(np.random.default_rng(0), "train", 3))  # type: ignore[attr-defined]
    params = spec.init_params(0)
    rule = InnerRule(steps=3, lr=0.01, optimizer="adam", betas=(0.0, 0.999))
    res = adapt(
        stack_params(params, 3),
        ep.support_x,
        ep.support_y,
        make_kernels(spec, "vmap", CPU).forward,
        rule,
    )
    module = spec.build()
    for t in range(3):
        module.load_state_dict(params)
        opt = torch.optim.Adam(module.parameters(), lr=0.01, betas=(0.0, 0.999))
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.mse_loss(module(ep.support_x[t]), ep.support_y[t]).backward()
            opt.step()
        for k, v in module.named_parameters():
            torch.testing.assert_close(res.params[k][t].detach(), v.detach(), rtol=1e-5, atol=1e-6)


# -- configs ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, field, value",
    [
        ("maml", "meta_batch_size", 0),
        ("maml", "model", "resnet"),
        ("maml", "inner_grad_clip", -1.0),
        ("maml", "outer_optimizer", "rmsprop"),
        ("maml", "inner_lr", math.nan),
        ("maml", "per_step_bn", True),
        ("fomaml", "first_order", False),
        ("metasgd", "first_order", True),
        ("reptile", "inner_optimizer", "lbfgs"),
        ("anil", "hidden", (0,)),
        ("maml", "tasks_per_pass", 0),
        ("maml", "eval_batch_size", 0),
        ("maml", "eval_batch_size", True),
        ("maml", "kernel", "grouped"),
    ],
)
def test_bad_config_names_the_field(method: str, field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        METHODS.get(method).Config(**{field: value})


@pytest.mark.parametrize(
    "extra", [{"model": "conv4"}, {"kernel": "vmap"}, {"vectorize": False}], ids=str
)
def test_compile_needs_the_mlp_kernel(extra: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="compile"):
        METHODS.get("maml").Config(compile=True, **extra)
    METHODS.get("maml").Config(compile=True)  # the MLP's bmm kernel: allowed


def test_paper_defaults() -> None:
    c = METHODS.get("maml").Config()
    assert (
        c.meta_batch_size,
        c.inner_lr,
        c.inner_steps,
        c.eval_inner_steps,
        c.outer_lr,
        c.hidden,
    ) == (25, 0.01, 1, 10, 1e-3, (40, 40))
    assert METHODS.get("fomaml").Config().first_order


# -- the outer-loop contract for every method -------------------------------------------
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_step_evaluate_checkpoint_roundtrip(method: str) -> None:
    m = make(method)
    s, metrics = m.step(m.init())
    assert {"train/pre_loss", "train/post_loss", "train/failed_tasks"} <= set(metrics)
    assert metrics["train/failed_tasks"] == 0
    ev = m.evaluate(s, "val")
    assert {"val/pre_mse", "val/post_mse", "val/mse_step1", "val/mse_step2"} <= set(ev)
    assert ev["val/num_tasks"] == 6
    buf = io.BytesIO()
    torch.save(m.state_dict(s), buf)
    buf.seek(0)
    s2 = m.load_state_dict(torch.load(buf, weights_only=True))
    a, ma = m.step(s)
    b, mb = m.step(s2)
    assert ma == mb
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_same_seed_reproduces_and_other_seed_differs(method: str) -> None:
    def run(seed: int) -> list[dict[str, float]]:
        m = make(method, seed=seed, workers=2)
        s, out = m.init(), []
        for _ in range(2):
            s, met = m.step(s)
            out.append(met)
        return out + [m.evaluate(s, "val")]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_reptile_outer_step_moves_toward_adapted_weights() -> None:
    m = make("reptile", outer_lr=0.5, inner_steps=3)
    s0 = m.init()
    s1, _ = m.step(s0)
    specs = m.family.sample(rng(m.seed, "train", 0), "train", 4)
    ep = m.family.build_batch(specs)
    res = adapt(
        stack_params(s0.params, 4),
        torch.cat([ep.support_x, ep.query_x], 1),
        torch.cat([ep.support_y, ep.query_y], 1),
        make_kernels(m.model, "bmm", CPU).forward,
        m.train_job.rule,
    )
    for k, v in s0.params.items():
        expected = v + 0.5 * (res.params[k].detach() - v).mean(0)
        torch.testing.assert_close(s1.params[k], expected, rtol=1e-5, atol=1e-6)


def test_metasgd_learns_rates_and_evaluates_with_them() -> None:
    m = make("metasgd", inner_lr=0.05)
    s0 = m.init()
    assert {LR_PREFIX + k for k in m.model.init_params(0)} <= set(s0.params)
    s1, _ = m.step(s0)
    assert not torch.equal(s1.params[LR_PREFIX + "0.weight"], s0.params[LR_PREFIX + "0.weight"])
    # evaluation with all rates zero is evaluation without adaptation
    frozen = dataclasses.replace(
        s1, params={k: (v * 0 if k.startswith(LR_PREFIX) else v) for k, v in s1.params.items()}
    )
    ev = m.evaluate(frozen, "val")
    assert ev["val/post_mse"] == pytest.approx(ev["val/pre_mse"], rel=1e-6)


# -- classification ---------------------------------------------------------------------
@pytest.mark.parametrize("method, model", [("maml", "conv4"), ("anil", "conv4"), ("fomaml", "mlp")])
def test_classification_episodes(method: str, model: str) -> None:
    fam = make_family("toy_ways_test", {"num_ways": 3})
    m = make(
        method,
        family=fam,
        model=model,
        conv_channels=4,
        inner_lr=0.4,
        meta_batch_size=2,
        eval_tasks=4,
    )
    assert m.model.out_dim == 3 and m.model.in_shape == (1, 16, 16)
    s, met = m.step(m.init())
    assert math.isfinite(met["train/post_loss"]) and 0.0 <= met["train/post_acc"] <= 1.0
    ev = m.evaluate(s, "test")
    assert 0.0 <= ev["test/post_acc"] <= 1.0 and "test/acc_step2" in ev and "test/pre_acc" in ev


# -- failures ---------------------------------------------------------------------------
def test_failed_tasks_are_dropped_and_counted() -> None:
    m = make("maml", family=make_family("toy_nan_test", {"poison": "some"}), meta_batch_size=12)
    s = m.init()
    failed = 0.0
    for _ in range(3):
        s, met = m.step(s)
        failed += met["train/failed_tasks"]
        assert math.isfinite(met["train/post_loss"])
    assert failed > 0
    assert all(torch.isfinite(v).all() for v in s.params.values())


def test_all_tasks_failing_raises_a_clear_error() -> None:
    m = make("maml", family=make_family("toy_nan_test", {"poison": "all"}))
    with pytest.raises(RuntimeError, match="all 4 tasks .* non-finite"):
        m.step(m.init())


def test_vmap_failure_falls_back_to_the_loop(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    fam = make_family("sinusoid", {"num_support": 5, "num_query": 5})
    specs = fam.sample(np.random.default_rng(0), "train", 3)
    spec = ModelSpec(kind="mlp", in_shape=(1,), out_dim=1, hidden=(8,))
    params = spec.init_params(0)
    job = MetaGradJob(spec, InnerRule(steps=1, lr=0.01), "second_order", "vmap")
    expected = dataclasses.replace(job, kernel="loop")(params, specs, CPU)

    def broken(module: Any, flatten: bool = False) -> Any:
        def fwd(p: Any, x: Any) -> Any:
            raise RuntimeError("vmap: batching rule not implemented (simulated)")

        return fwd

    monkeypatch.setattr(backprop, "vmap_forward", broken)
    with caplog.at_level(logging.WARNING):
        got = job(params, specs, CPU)
    assert got.kernel == "loop" and "falling back to a per-task loop" in caplog.text
    for k in params:
        torch.testing.assert_close(got.grad_sum[k], expected.grad_sum[k])


# -- specs --------------------------------------------------------------------------------
SPEC_NAMES = (
    "quickstart",
    "maml_sinusoid_paper",
    "fomaml_sinusoid",
    "reptile_sinusoid",
    "metasgd_sinusoid",
    "anil_sinusoid",
)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_tune_specs_build_valid_configs(name: str) -> None:
    import yaml

    d = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    cls = METHODS.get(d["method"]["name"])
    cls(
        cls.Config(**d["method"]["config"]),
        make_family(d["task"]["family"], d["task"]["config"]),
        LocalPool(d["workers"]["num_workers"]),
        d["seed"],
    )


def test_per_step_bn_outer_loop() -> None:
    fam = make_family("toy_ways_test", {"num_ways": 3})
    m = make(
        "maml",
        family=fam,
        model="conv4",
        conv_channels=4,
        inner_lr=0.4,
        meta_batch_size=2,
        eval_tasks=3,
        inner_steps=2,
        eval_inner_steps=4,
        per_step_bn=True,
    )
    s0 = m.init()
    assert {f"bnstep{i}.encoder.0.1.weight" for i in range(3)} <= set(s0.params)
    assert "encoder.0.1.weight" not in s0.params
    s1, met = m.step(s0)
    assert not torch.equal(
        s1.params["bnstep2.encoder.0.1.bias"], s0.params["bnstep2.encoder.0.1.bias"]
    )
    assert 0.0 <= m.evaluate(s1, "val")["val/post_acc"] <= 1.0


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_jobs_and_results_pickle_for_remote_workers(method: str) -> None:
    """A Ray worker receives the job by pickle and sends the result back the same way."""
    import pickle

    m = make(method)
    s = m.init()
    specs = m.family.sample(np.random.default_rng(0), "train", 3)
    job = pickle.loads(pickle.dumps(m.train_job))
    res = pickle.loads(pickle.dumps(job(s.params, specs, CPU)))
    direct = m.train_job(s.params, specs, CPU)
    for k in s.params:
        assert torch.equal(res.grad_sum[k], direct.grad_sum[k])
    ev = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(m.eval_job))(s.params, specs, CPU)))
    assert ev.losses.shape == (3, 3)


def test_evaluation_does_not_depend_on_chunking_or_workers() -> None:
    a = make("maml", eval_tasks=7)
    b = make("maml", eval_tasks=7, workers=3, eval_batch_size=2)
    s = a.init()
    ea, eb = a.evaluate(s, "test"), b.evaluate(s, "test")
    assert ea.keys() == eb.keys()
    for k in ea:
        assert ea[k] == pytest.approx(eb[k], rel=1e-6, abs=1e-9), k


def test_conv4_evaluation_rounds_are_small_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """250 tasks per round held >20 GB of Conv4 activations at 20-way 5-shot (an OOM kill);
    Conv4 evaluates 20 tasks per pool round unless eval_batch_size says otherwise."""
    glyphs = make_family("glyphs", {"num_ways": 2, "num_shots": 1, "num_query": 1})
    m = make("maml", glyphs, model="conv4", conv_channels=2, eval_inner_steps=1)
    sizes: list[int] = []
    real_map = m.pool.map

    def spy(job: Any, payload: Any, specs: Any) -> Any:
        sizes.append(len(specs))
        return real_map(job, payload, specs)

    monkeypatch.setattr(m.pool, "map", spy)
    m.evaluate(m.init(), "test", 45)
    assert sizes == [20, 20, 5]
    assert make("maml").config.eval_batch_size is None  # MLP: 250 per round


def test_tasks_per_pass_chunks_give_the_same_step() -> None:
    whole = make("maml", meta_batch_size=7)
    chunked = make("maml", meta_batch_size=7, tasks_per_pass=3)
    s = whole.init()
    a, ma = whole.step(s)
    b, mb = chunked.step(s)
    assert ma == pytest.approx(mb, rel=1e-6)
    for k in a.params:
        torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kernel", ["vmap", "bmm"])
def test_kernel_choice_gives_the_same_step(kernel: str) -> None:
    a = make("maml", kernel="auto")
    b = make("maml", kernel=kernel)
    assert b.train_job.kernel == kernel
    s = a.init()
    sa, ma = a.step(s)
    sb, mb = b.step(s)
    assert ma == pytest.approx(mb, rel=1e-5)
    for k in sa.params:
        torch.testing.assert_close(sa.params[k], sb.params[k], rtol=1e-5, atol=1e-6)

"""ProtoNets: hand-computed prototypes and logits, vmap == loop, shard invariance, seeds, Adam."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from _metric_fixtures import BlobFamily
from torch.func import functional_call

from metaplat.evaluation import build_batch
from metaplat.optim.functional import adam_init, adam_update
from metaplat.outer._metric_common import EpisodeJob, episode_loss
from metaplat.outer.base import METHODS
from metaplat.outer.protonet import (
    ProtoNet,
    ProtoNetConfig,
    ProtoNetModel,
    proto_logits,
    prototypes,
)
from metaplat.seeding import rng
from metaplat.tasks.sinusoid import SinusoidFamily
from metaplat.workers.base import LocalPool

IMG = BlobFamily(num_ways=3, num_shots=2, num_query=2, shape=(1, 16, 16))
VEC = BlobFamily(num_ways=4, num_shots=2, num_query=3, shape=(10,))
SMALL = ProtoNetConfig(meta_batch_size=5, hidden=4, embed_dim=6)


def test_registered() -> None:
    assert METHODS.get("protonet") is ProtoNet


def test_prototypes_are_class_means() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 3, generator=g)
    y = torch.tensor([2, 0, 1, 0, 2, 2, 1])
    protos = prototypes(z, y, 3)
    for k in range(3):
        rows = [z[i] for i in range(7) if int(y[i]) == k]
        assert torch.allclose(protos[k], sum(rows) / len(rows), atol=1e-6)


def test_logits_equal_hand_computation() -> None:
    g = torch.Generator().manual_seed(1)
    zq, protos = torch.randn(4, 5, generator=g), torch.randn(3, 5, generator=g)
    logits = proto_logits(zq, protos)
    for q in range(4):
        for k in range(3):
            d2 = sum((float(zq[q, j]) - float(protos[k, j])) ** 2 for j in range(5))
            assert logits[q, k].item() == pytest.approx(-d2, rel=1e-5)


def test_model_embeds_episode_once_and_scores_by_distance() -> None:
    method = ProtoNet(SMALL, IMG, LocalPool(), seed=0)
    params = method.init().params
    model = method.model.build()
    ep = IMG.build(IMG.spec(3, "train"))
    logits = functional_call(
        model, params, (ep.support_x, ep.support_y, ep.query_x), {"num_ways": 3}
    )
    emb = model.embedding  # type: ignore[union-attr]
    sub = {k.removeprefix("embedding."): v for k, v in params.items()}
    z = functional_call(emb, sub, (torch.cat([ep.support_x, ep.query_x]),))
    expect = proto_logits(z[6:], prototypes(z[:6], ep.support_y, 3))
    assert isinstance(model, ProtoNetModel)
    assert torch.allclose(logits, expect, atol=1e-5)


@pytest.mark.parametrize("family", [IMG, VEC], ids=["conv4", "mlp"])
def test_vmap_over_tasks_equals_per_task_loop(family: BlobFamily) -> None:
    method = ProtoNet(SMALL, family, LocalPool(), seed=0)
    params = method.init().params
    model = method.model.build()
    specs = family.sample(__import__("numpy").random.default_rng(0), "train", 4)
    batch = build_batch(specs, torch.device("cpu"))
    loss, acc = episode_loss(model, params, batch, family.num_ways)
    for t, spec in enumerate(specs):
        ep = family.build(spec)
        logits = functional_call(
            model, params, (ep.support_x, ep.support_y, ep.query_x), {"num_ways": family.num_ways}
        )
        ref = torch.nn.functional.cross_entropy(logits, ep.query_y)
        assert loss[t].item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
        assert acc[t].item() == pytest.approx(
            (logits.argmax(-1) == ep.query_y).float().mean().item()
        )


def test_one_two_three_shards_give_the_same_meta_gradient() -> None:
    results = []
    for workers in (1, 2, 3):
        method = ProtoNet(SMALL, IMG, LocalPool(workers), seed=4)
        state = method.init()
        specs = IMG.sample(__import__("numpy").random.default_rng(1), "train", 5)
        shards = method.pool.map(EpisodeJob(method.model, grad=True), state.params, specs)
        assert len(shards) == workers
        grad = {k: sum(s["grad"][k] for s in shards) for k in state.params}
        losses = [x for s in shards for x in s["loss"]]
        results.append((grad, losses, method.step(state)[1]))
    g1, l1, m1 = results[0]
    # (Updated params are not compared: a conv bias before BatchNorm has a zero true gradient,
    # and Adam turns its float-rounding noise into full-size steps.)
    for g, losses, m in results[1:]:
        assert losses == pytest.approx(l1, rel=1e-6)
        assert m["train/loss"] == pytest.approx(m1["train/loss"], rel=1e-6)
        for k in g1:
            assert torch.allclose(g[k], g1[k], atol=1e-5, rtol=1e-4), k


def test_adam_matches_torch_optim() -> None:
    g = torch.Generator().manual_seed(2)
    p0 = {"a": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g)}
    grads = [{k: torch.randn(v.shape, generator=g) for k, v in p0.items()} for _ in range(3)]
    ref = {k: torch.nn.Parameter(v.clone()) for k, v in p0.items()}
    opt = torch.optim.Adam(ref.values(), lr=0.01)
    p, state = p0, adam_init(p0)
    for gr in grads:
        for k in ref:
            ref[k].grad = gr[k].clone()
        opt.step()
        p, state = adam_update(p, gr, state, 0.01)
    for k in ref:
        assert torch.allclose(p[k], ref[k].detach(), atol=1e-6)


def _run(seed: int) -> tuple[list[dict[str, float]], dict[str, float]]:
    method = ProtoNet(SMALL, VEC, LocalPool(2), seed=seed)
    state, log = method.init(), []
    for _ in range(2):
        state, metrics = method.step(state)
        log.append(metrics)
    return log, method.evaluate(state, "val", 6)


def test_same_seed_same_metrics_and_different_seed_differs() -> None:
    a, b, c = _run(0), _run(0), _run(1)
    assert a == b
    assert a != c


def test_state_dict_roundtrip_with_weights_only_load() -> None:
    method = ProtoNet(SMALL, VEC, LocalPool(), seed=0)
    state, _ = method.step(method.init())
    buf = io.BytesIO()
    torch.save(method.state_dict(state), buf)
    buf.seek(0)
    back = method.load_state_dict(torch.load(buf, weights_only=True))
    assert back.iteration == 1
    s1, m1 = method.step(state)
    s2, m2 = method.step(back)
    assert m1 == m2
    assert all(torch.equal(s1.params[k], s2.params[k]) for k in s1.params)


def test_train_ways_trains_on_more_ways_than_it_tests() -> None:
    method = ProtoNet(dataclasses.replace(SMALL, train_ways=6), VEC, LocalPool(), seed=0)
    assert method.train_family.config()["num_ways"] == 6  # type: ignore[attr-defined]
    _, metrics = method.step(method.init())
    assert metrics["train/iteration"] == 1.0
    specs = method.train_family.sample(__import__("numpy").random.default_rng(0), "train", 1)
    assert int(method.train_family.build(specs[0]).support_y.max()) == 5


def test_config_errors_name_field_and_allowed_values() -> None:
    with pytest.raises(ValueError, match="meta_batch_size.*>= 1"):
        ProtoNetConfig(meta_batch_size=0)
    with pytest.raises(ValueError, match="backbone.*'conv4'"):
        ProtoNetConfig(backbone="resnet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classification"):
        ProtoNet(ProtoNetConfig(), SinusoidFamily(), LocalPool(), seed=0)
    with pytest.raises(ValueError, match="train_ways.*num_ways"):
        ProtoNet(ProtoNetConfig(train_ways=5), _NoWays(), LocalPool(), seed=0)


@dataclasses.dataclass(frozen=True, repr=False)
class _NoWays(BlobFamily):
    def config(self) -> dict[str, object]:
        return {k: v for k, v in super().config().items() if k != "num_ways"}


def test_job_gives_same_gradient_looped_chunked_and_fully_vmapped() -> None:
    import pickle

    method = ProtoNet(SMALL, IMG, LocalPool(), seed=0)
    params = method.init().params
    specs = IMG.sample(__import__("numpy").random.default_rng(2), "train", 4)
    cpu = torch.device("cpu")
    results = [pickle.loads(pickle.dumps(method._job(grad=True)))(params, specs, cpu)]  # auto: loop
    results += [
        EpisodeJob(method.model, grad=True, chunk_size=c)(params, specs, cpu) for c in (1, 3, 100)
    ]
    for r in results[1:]:
        assert r["loss"] == pytest.approx(results[0]["loss"], rel=1e-5)
        for k in params:
            assert torch.allclose(r["grad"][k], results[0]["grad"][k], atol=1e-5, rtol=1e-4), k


def test_lr_halving_schedule_is_applied_to_adam() -> None:
    cfg = dataclasses.replace(SMALL, outer_lr=0.01, lr_halve_every=2)
    method = ProtoNet(cfg, VEC, LocalPool(), seed=0)
    assert [method.lr(t) for t in (1, 2, 3, 4, 5)] == [0.01, 0.01, 0.005, 0.005, 0.0025]
    state = method.init()
    p, adam = state.params, adam_init(state.params)
    for t in (1, 2, 3):
        specs = VEC.sample(rng(0, "train", t - 1), "train", cfg.meta_batch_size)
        (res,) = LocalPool().map(method._job(grad=True), p, specs)
        g = {k: x / len(specs) for k, x in res["grad"].items()}
        p, adam = adam_update(p, g, adam, [0.01, 0.01, 0.005][t - 1])
        state, metrics = method.step(state)
        assert metrics["train/lr"] == [0.01, 0.01, 0.005][t - 1]
    for k in p:
        assert torch.allclose(state.params[k], p[k], atol=1e-6), k

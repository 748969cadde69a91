"""Matching Networks: hand-computed cosine attention and label mixing, FCE cell, vmap, shards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _metric_fixtures import BlobFamily
from torch.func import functional_call

from metaplat.evaluation import build_batch
from metaplat.outer._metric_common import EpisodeJob, episode_loss
from metaplat.outer.base import METHODS
from metaplat.outer.matchingnet import (
    LSTMCell,
    MatchingNet,
    MatchingNetConfig,
    attention,
    cosine_similarity,
    matching_log_probs,
)
from metaplat.workers.base import LocalPool

IMG = BlobFamily(num_ways=3, num_shots=2, num_query=2, shape=(1, 16, 16))
VEC = BlobFamily(num_ways=4, num_shots=2, num_query=3, shape=(10,))
SMALL = MatchingNetConfig(meta_batch_size=5, hidden=4, embed_dim=6)


def test_registered() -> None:
    assert METHODS.get("matchingnet") is MatchingNet


def test_attention_equals_hand_computation_and_sums_to_one() -> None:
    g = torch.Generator().manual_seed(0)
    zq, zs = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    a = attention(zq, zs, scale=1.5)
    cos = cosine_similarity(zq, zs)
    for q in range(3):
        sims = []
        for i in range(5):
            dot = sum(float(zq[q, j]) * float(zs[i, j]) for j in range(4))
            nq = math.sqrt(sum(float(zq[q, j]) ** 2 for j in range(4)))
            ns = math.sqrt(sum(float(zs[i, j]) ** 2 for j in range(4)))
            sims.append(dot / (nq * ns))
            assert cos[q, i].item() == pytest.approx(sims[-1], rel=1e-5, abs=1e-6)
        z = sum(math.exp(1.5 * s) for s in sims)
        for i in range(5):
            assert a[q, i].item() == pytest.approx(math.exp(1.5 * sims[i]) / z, rel=1e-5)
        assert a[q].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_class_probabilities_are_attention_mass_per_label() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.softmax(torch.randn(4, 6, generator=g), dim=-1)
    y = torch.tensor([1, 0, 2, 1, 2, 0])
    p = matching_log_probs(a.log(), y, 3).exp()
    for q in range(4):
        for k in range(3):
            assert p[q, k].item() == pytest.approx(
                sum(float(a[q, i]) for i in range(6) if y[i] == k), rel=1e-5
            )
        assert p[q].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_model_without_fce_is_cosine_attention_over_backbone_embeddings() -> None:
    method = MatchingNet(SMALL, VEC, LocalPool(), seed=0)
    params = method.init().params
    model = method.model.build()
    ep = VEC.build(VEC.spec(3, "train"))
    logp = functional_call(model, params, (ep.support_x, ep.support_y, ep.query_x), {"num_ways": 4})
    sub = {k.removeprefix("embedding."): v for k, v in params.items()}
    z = functional_call(model.embedding, sub, (torch.cat([ep.support_x, ep.query_x]),))  # type: ignore[arg-type]
    a = attention(z[8:], z[:8])
    expect = torch.stack([a[:, ep.support_y == k].sum(-1) for k in range(4)], dim=-1)
    assert torch.allclose(logp.exp(), expect, atol=1e-6)


def test_lstm_cell_equals_torch_lstm_cell() -> None:
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(3, 5)
    cell = LSTMCell(3, 5, 5)
    with torch.no_grad():
        cell.ih.weight.copy_(ref.weight_ih)
        cell.ih.bias.copy_(ref.bias_ih + ref.bias_hh)
        cell.hh.weight.copy_(ref.weight_hh)
    x, h, c = torch.randn(2, 3), torch.randn(2, 5), torch.randn(2, 5)
    h_ref, c_ref = ref(x, (h, c))
    h_out, c_out = cell(x, h, c)
    assert torch.allclose(h_out, h_ref, atol=1e-6) and torch.allclose(c_out, c_ref, atol=1e-6)


@pytest.mark.parametrize("family,fce", [(IMG, False), (VEC, True)], ids=["conv4", "mlp-fce"])
def test_vmap_over_tasks_equals_per_task_loop(family: BlobFamily, fce: bool) -> None:
    cfg = MatchingNetConfig(meta_batch_size=3, hidden=4, embed_dim=6, fce=fce, fce_steps=2)
    method = MatchingNet(cfg, family, LocalPool(), seed=0)
    params = method.init().params
    model = method.model.build()
    specs = family.sample(np.random.default_rng(0), "train", 3)
    loss, _ = episode_loss(model, params, build_batch(specs, torch.device("cpu")), family.num_ways)
    for t, spec in enumerate(specs):
        ep = family.build(spec)
        logp = functional_call(
            model, params, (ep.support_x, ep.support_y, ep.query_x), {"num_ways": family.num_ways}
        )
        assert logp.exp().sum(-1) == pytest.approx(torch.ones(len(ep.query_y)), abs=1e-5)
        ref = torch.nn.functional.nll_loss(logp, ep.query_y)
        assert loss[t].item() == pytest.approx(ref.item(), rel=1e-5)


def test_fce_parameters_get_finite_gradients() -> None:
    cfg = MatchingNetConfig(meta_batch_size=2, hidden=4, embed_dim=6, fce=True, fce_steps=2)
    method = MatchingNet(cfg, VEC, LocalPool(), seed=0)
    state = method.init()
    assert any(k.startswith("fce.attn") for k in state.params)
    specs = VEC.sample(np.random.default_rng(0), "train", 2)
    (res,) = method.pool.map(EpisodeJob(method.model, grad=True), state.params, specs)
    for k, g in res["grad"].items():
        assert torch.isfinite(g).all(), k
    assert res["grad"]["fce.attn.hh.weight"].abs().sum() > 0


def test_one_two_three_shards_give_the_same_meta_gradient() -> None:
    grads = []
    for workers in (1, 2, 3):
        method = MatchingNet(SMALL, IMG, LocalPool(workers), seed=4)
        state = method.init()
        specs = IMG.sample(np.random.default_rng(1), "train", 5)
        shards = method.pool.map(EpisodeJob(method.model, grad=True), state.params, specs)
        grads.append({k: sum(s["grad"][k] for s in shards) for k in state.params})
    for g in grads[1:]:
        for k in g:
            assert torch.allclose(g[k], grads[0][k], atol=1e-5, rtol=1e-4), k


def test_same_seed_same_metrics() -> None:
    def run() -> tuple[dict[str, float], dict[str, float]]:
        method = MatchingNet(SMALL, VEC, LocalPool(2), seed=3)
        state, m = method.step(method.init())
        return m, method.evaluate(state, "test", 5)

    assert run() == run()


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="fce_steps"):
        MatchingNetConfig(fce_steps=0)
    with pytest.raises(ValueError, match="cosine_scale"):
        MatchingNetConfig(cosine_scale=0.0)

"""PPO controller updates: REINFORCE's step at one epoch, the clip bounds the ratio, it learns."""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
from pathlib import Path

import pytest
import torch
import yaml
from _paths import SPECS

from metaplat.nn.controller import (
    Controller,
    ControllerConfig,
    ControllerState,
    _loss,
    log_probs,
)
from metaplat.search.policy import PolicyConfig
from metaplat.tuning.controller_searcher import make_controller_searcher

VOCAB = [3, 2, 4]


@pytest.mark.parametrize("grad_clip", [5.0, 1e-3])
def test_one_epoch_of_ppo_takes_the_reinforce_step(grad_clip: float) -> None:
    kw = {"hidden": 8, "entropy_coef": 0.01, "grad_clip": grad_clip}
    rf = Controller(VOCAB, ControllerConfig(**kw))
    ppo = Controller(VOCAB, ControllerConfig(**kw, algorithm="ppo", ppo_epochs=1))
    st, s = rf.sample(rf.init(0), 8)
    st, _ = rf.update(st, s.tokens, torch.rand(8))  # non-trivial Adam moments and baseline
    st, s = rf.sample(st, 8)
    rewards = torch.rand(8)
    a, ma = rf.update(st, s.tokens, rewards)
    b, mb = ppo.update(st, s.tokens, rewards)
    for k in a.params:
        torch.testing.assert_close(b.params[k], a.params[k], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(b.adam_m[k], a.adam_m[k], rtol=1e-5, atol=1e-9)
    assert (b.baseline, b.num_updates) == (a.baseline, a.num_updates)
    assert mb["controller/grad_norm"] == pytest.approx(ma["controller/grad_norm"], rel=1e-5)
    assert mb["controller/clip_fraction"] == 0.0


def test_clipped_surrogate_has_no_gradient_past_the_clip_in_the_advantage_direction() -> None:
    cfg = ControllerConfig(hidden=8, entropy_coef=0.0, algorithm="ppo", ppo_clip=0.2)
    params = Controller(VOCAB, cfg).init(0).params
    tokens = torch.tensor([[0, 1, 2], [2, 0, 3]])
    lp = log_probs(params, VOCAB, cfg, tokens).log_probs
    old = lp - math.log(1.5)  # ratio 1.5 for both programs, past 1 + clip

    def grad_norm(adv: torch.Tensor) -> float:
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        loss, _, ratio = _loss(leaves, VOCAB, cfg, tokens, adv, old)
        torch.testing.assert_close(ratio, torch.full((2,), 1.5))
        grads = torch.autograd.grad(loss, list(leaves.values()))
        return math.sqrt(sum(float((g * g).sum()) for g in grads))

    assert grad_norm(torch.tensor([1.0, 0.5])) == 0.0  # r > 1 + c, A > 0: clipped
    assert grad_norm(torch.tensor([-1.0, -0.5])) > 0.0  # r > 1 + c, A < 0: still pulls back


@pytest.mark.parametrize("clip", [0.1, 0.2])
def test_many_epochs_stop_near_the_clip_range(clip: float) -> None:
    # One program with advantage 1: without the clip, 300 Adam steps would keep raising its
    # probability; with it, the ratio stops just past 1 + clip (Adam momentum overshoots a bit).
    cfg = ControllerConfig(hidden=8, lr=1e-3, entropy_coef=0.0, algorithm="ppo",
                           ppo_epochs=300, ppo_clip=clip)  # fmt: skip
    c = Controller([4], cfg)
    st = dataclasses.replace(c.init(0), baseline=0.0)
    tokens = torch.tensor([[0]])
    old = log_probs(st.params, [4], cfg, tokens).log_probs
    new_state, m = c.update(st, tokens, torch.tensor([1.0]))
    ratio = float((log_probs(new_state.params, [4], cfg, tokens).log_probs - old).exp())
    assert 1 + clip < ratio < 1 + 1.3 * clip, ratio
    assert m["controller/clip_fraction"] > 0.5


def test_ppo_learns_to_pick_the_rewarded_tokens() -> None:
    cfg = ControllerConfig(hidden=16, lr=0.05, baseline_decay=0.5, algorithm="ppo")
    c = Controller(VOCAB, cfg)
    target = torch.tensor([2, 0, 3])
    st = c.init(0)
    all_seq = torch.tensor(list(itertools.product(*[range(v) for v in VOCAB])))
    idx = [i for i, t in enumerate(all_seq) if torch.equal(t, target)][0]
    p0 = float(log_probs(st.params, VOCAB, c.config, all_seq).log_probs[idx].exp())
    for _ in range(30):
        st, s = c.sample(st, 16)
        reward = (s.tokens == target).float().mean(1)
        st, _ = c.update(st, s.tokens, reward)
    p1 = float(log_probs(st.params, VOCAB, c.config, all_seq).log_probs[idx].exp())
    assert p0 < 0.05 and p1 > 0.5, (p0, p1)
    assert st.num_updates == 30  # batches, not epochs


def test_ppo_state_round_trips_and_resumes_adam_where_it_stopped() -> None:
    c = Controller(VOCAB, ControllerConfig(hidden=8, algorithm="ppo", ppo_epochs=3))
    st, a = c.sample(c.init(7), 5)
    st, _ = c.update(st, a.tokens, torch.arange(5.0))
    buf = io.BytesIO()
    torch.save(st.state_dict(), buf)
    buf.seek(0)
    restored = ControllerState.from_state_dict(torch.load(buf, weights_only=True))
    straight, _ = c.update(st, a.tokens, torch.arange(5.0).flip(0))
    resumed, _ = c.update(restored, a.tokens, torch.arange(5.0).flip(0))
    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k])
    assert resumed.baseline == straight.baseline and resumed.num_updates == 2


def test_policy_config_takes_the_algorithm_from_a_spec_dict() -> None:
    cfg = PolicyConfig(controller={"algorithm": "ppo", "ppo_epochs": 2, "ppo_clip": 0.1})
    assert cfg.controller.algorithm == "ppo" and cfg.controller.steps_per_update == 2


def test_spec_with_ppo_drives_a_searcher_that_saves_and_restores(tmp_path: Path) -> None:
    spec = yaml.safe_load((SPECS / "nas_mlp_sinusoid.yaml").read_text())
    section = spec["tune"]["search_alg"] | {"batch_size": 2}
    assert section["controller"]["algorithm"] == "reinforce"  # the documented default
    section["controller"] = section["controller"] | {"algorithm": "ppo", "ppo_epochs": 2}
    s = make_controller_searcher(section, "reward", "max")
    for i in range(2):
        s.suggest(f"t{i}")
    s.on_trial_complete("t0", {"reward": 0.2})
    s.on_trial_complete("t1", {"reward": 0.8})
    assert s.policy.state.num_updates == 1 and "controller/clip_fraction" in s.policy.last_metrics
    s.save(str(tmp_path / "searcher.pt"))
    r = make_controller_searcher(section, "reward", "max")
    r.restore(str(tmp_path / "searcher.pt"))
    assert r.suggest("t2") == s.suggest("t2")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"algorithm": "a2c"}, "algorithm 'a2c' not allowed; allowed: reinforce, ppo"),
        ({"ppo_epochs": 0}, "ppo_epochs must be an int >= 1"),
        ({"ppo_epochs": 2.0}, "ppo_epochs must be an int >= 1"),
        ({"ppo_clip": 0.0}, r"ppo_clip must be in \(0, 1\)"),
        ({"ppo_clip": 1.0}, r"ppo_clip must be in \(0, 1\)"),
    ],
)
def test_ppo_config_errors_name_the_field_and_what_is_allowed(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ControllerConfig(**kw)

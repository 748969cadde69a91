"""Controller: a proper distribution over token sequences, REINFORCE learns, state round-trips."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch

from metaplat.nn.controller import Controller, ControllerConfig, ControllerState, log_probs

VOCAB = [3, 2, 4]


def test_sampled_tokens_in_range_and_scores_match_teacher_forcing() -> None:
    c = Controller(VOCAB, ControllerConfig(hidden=8, layers=2))
    state, s = c.sample(c.init(0), 64)
    assert s.tokens.shape == (64, 3) and s.log_probs.shape == (64,) and s.entropy.shape == (64,)
    for i, v in enumerate(VOCAB):
        assert int(s.tokens[:, i].min()) >= 0 and int(s.tokens[:, i].max()) < v
    again = log_probs(state.params, VOCAB, c.config, s.tokens)
    torch.testing.assert_close(again.log_probs, s.log_probs)
    assert state.num_sampled == 1


def test_probabilities_of_all_sequences_sum_to_one() -> None:
    c = Controller(VOCAB, ControllerConfig(hidden=8, init_range=1.0))
    state = c.init(3)
    allseq = torch.tensor(list(itertools.product(*[range(v) for v in VOCAB])))
    s = log_probs(state.params, VOCAB, c.config, allseq)
    assert math.isclose(float(s.log_probs.exp().sum()), 1.0, rel_tol=1e-5)


def test_entropy_of_single_decision_matches_formula() -> None:
    c = Controller([5], ControllerConfig(hidden=4, init_range=1.0))
    state = c.init(1)
    s = log_probs(state.params, [5], c.config, torch.arange(5)[:, None])
    p = s.log_probs.exp()
    torch.testing.assert_close(s.entropy[0], -(p * p.log()).sum())


def test_seed_reproduces_and_state_round_trips_through_weights_only_load() -> None:
    c = Controller(VOCAB, ControllerConfig(hidden=8))
    st, a = c.sample(c.init(7), 5)
    st, _ = c.update(st, a.tokens, torch.arange(5.0))
    buf = io.BytesIO()
    torch.save(st.state_dict(), buf)
    buf.seek(0)
    restored = ControllerState.from_state_dict(torch.load(buf, weights_only=True))
    assert restored.num_updates == 1 and restored.baseline == st.baseline
    _, x = c.sample(st, 6)
    _, y = c.sample(restored, 6)
    assert torch.equal(x.tokens, y.tokens)
    _, z = c.sample(c.init(7), 5)
    assert torch.equal(z.tokens, a.tokens)


def test_baseline_is_an_ema_of_batch_mean_rewards() -> None:
    c = Controller(VOCAB, ControllerConfig(hidden=4, baseline_decay=0.9))
    st, s = c.sample(c.init(0), 4)
    st, m = c.update(st, s.tokens, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert st.baseline == pytest.approx(2.5) and m["controller/advantage_mean"] == pytest.approx(0)
    st, m = c.update(st, s.tokens, torch.tensor([5.0, 5.0, 5.0, 5.0]))
    assert st.baseline == pytest.approx(0.9 * 2.5 + 0.1 * 5.0)
    assert m["controller/advantage_mean"] == pytest.approx(2.5)
    assert st.num_updates == 2


def test_reinforce_learns_to_pick_the_rewarded_tokens() -> None:
    torch.manual_seed(0)
    c = Controller(VOCAB, ControllerConfig(hidden=16, lr=0.05, baseline_decay=0.5))
    target = torch.tensor([2, 0, 3])
    st = c.init(0)
    all_seq = torch.tensor(list(itertools.product(*[range(v) for v in VOCAB])))
    idx = [i for i, t in enumerate(all_seq) if torch.equal(t, target)][0]
    p0 = float(log_probs(st.params, VOCAB, c.config, all_seq).log_probs[idx].exp())
    for _ in range(60):
        st, s = c.sample(st, 16)
        reward = (s.tokens == target).float().mean(1)
        st, _ = c.update(st, s.tokens, reward)
    p1 = float(log_probs(st.params, VOCAB, c.config, all_seq).log_probs[idx].exp())
    assert p0 < 0.05 and p1 > 0.5, (p0, p1)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="baseline_decay"):
        ControllerConfig(baseline_decay=1.0)
    with pytest.raises(ValueError, match="hidden"):
        ControllerConfig(hidden=0)

"""RL² contracts: hidden state across episodes/trials, GAE and PPO by hand, reproducibility."""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import numpy as np
import pytest
import torch
from _paths import SPECS
from _rl2_fixtures import runs_over_sharding

from metaplat.inner.rl import discounted_returns, gae, ppo_loss
from metaplat.inner.trials import StepInput, evaluate_policy, run_trials
from metaplat.nn.recurrent import GRUPolicy
from metaplat.outer.rl2 import RL2, RL2Config, RL2Policy, minibatch_grad
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool


class Spy:
    """Wraps a TrialPolicy and records the hidden state it is handed at every step."""

    def __init__(self, inner: RL2Policy):
        self.inner, self.seen = inner, []

    def initial_state(self, env: Any, keys: torch.Tensor) -> Any:
        return self.inner.initial_state(env, keys)

    def __call__(self, state: Any, inp: StepInput) -> Any:
        self.seen.append((inp.episode, inp.t, bool(inp.done.any()), state.h.clone()))
        action, new, extras = self.inner(state, inp)
        self.after = new.h.clone()
        return action, new, extras


@pytest.mark.parametrize("cell", ["gru", "lngru"])
def test_hidden_state_survives_episodes_and_resets_between_trials(cell: str) -> None:
    fam = make_family("tabular_mdp", {"num_states": 4, "num_actions": 3, "horizon": 3})
    specs = fam.sample(np.random.default_rng(0), "train", 5)
    net = GRUPolicy(4, 3, 8, cell=cell)
    spy = Spy(RL2Policy(net, net.init_params(0)))
    run_trials(spy, fam.build_batched(specs), episodes=3, seed=0)
    assert len(spy.seen) == 9
    assert torch.count_nonzero(spy.seen[0][3]) == 0  # trial starts from zeros
    for i in range(1, 9):
        ep, t, done, h = spy.seen[i]
        assert torch.count_nonzero(h) > 0, (ep, t)  # never reset inside the trial
        assert done == (t == 0)  # the done flag marks the first step of a new episode
    # Episode 1 starts from exactly the hidden state episode 0 ended with.
    h_end_ep0 = spy.inner(*_replay(spy, fam, specs, net))[1].h
    assert torch.equal(spy.seen[3][3], h_end_ep0)
    first_trial_last = spy.after
    run_trials(spy, fam.build_batched(specs), episodes=1, seed=1)
    assert torch.count_nonzero(spy.seen[9][3]) == 0 and torch.count_nonzero(first_trial_last) > 0


def _replay(spy: Spy, fam: Any, specs: Any, net: GRUPolicy) -> tuple[Any, StepInput]:
    """Rebuild the state and input of step (episode 0, t 2) by rerunning 2 steps."""
    from metaplat.inner.trials import policy_keys

    env = fam.build_batched(specs)
    state = spy.inner.initial_state(env, policy_keys(env, 0))
    obs = env.reset(0)
    b = len(specs)
    pa, pr, done = torch.full((b,), -1), torch.zeros(b), torch.zeros(b, dtype=torch.bool)
    for t in range(3):
        inp = StepInput(obs, pa, pr, done, t, 0)
        if t == 2:
            return state, inp
        a, state, _ = spy.inner(state, inp)
        obs, r, te, tr = env.step(a)
        pa, pr, done = a, r, te | tr
    raise AssertionError


@pytest.mark.parametrize("cell", ["gru", "lngru"])
def test_rollout_steps_and_the_learners_whole_trial_unroll_agree(cell: str) -> None:
    # rollouts call the net one step at a time, the PPO update on the whole trial: the
    # log-probabilities they compute must agree, or PPO's ratio is off before any update
    net = GRUPolicy(4, 3, 16, cell=cell)
    params = net.init_params(0)
    x = torch.randn(12, 5, net.input_size)
    heads, values, h_end = net.unroll(params, x, net.initial_hidden(5))
    h = net.initial_hidden(5)
    for t in range(12):
        head, value, h = net.unroll(params, x[t : t + 1], h)
        assert torch.allclose(head[0], heads[t], atol=1e-5)
        assert torch.allclose(value[0], values[t], atol=1e-5)
    assert torch.allclose(h, h_end, atol=1e-5)


def test_the_loop_unroll_computes_what_the_gru_op_computes() -> None:
    # the compiled learner unrolls the plain GRU as a Python loop (gru_loop): same function
    # (the LN-GRU is a loop already, so loop=True changes nothing there: no case for it)
    net = GRUPolicy(4, 3, 16, cell="gru")
    params = net.init_params(1)
    x, h0 = torch.randn(9, 5, net.input_size), torch.randn(5, 16)
    ref_out = zip(net.unroll(params, x, h0), net.unroll(params, x, h0, loop=True), strict=True)
    for ref, out in ref_out:
        assert torch.allclose(ref, out, atol=1e-6), (ref - out).abs().max()


@pytest.mark.parametrize("cell", ["gru", "lngru"])
def test_compiled_learner_takes_the_eager_learners_update(cell: str, caplog: Any) -> None:
    # one update from the same start on the same rollouts, eager vs torch.compile-d
    eager_algo, algo = _algo(1, rnn_cell=cell), _algo(1, rnn_cell=cell, compile_learner=True)
    (eager, m_eager), (fast, m_fast) = eager_algo.step(eager_algo.init()), algo.step(algo.init())
    for k, v in eager.params.items():
        assert torch.allclose(v, fast.params[k], atol=1e-5), k
    assert m_fast["train/policy_loss"] == pytest.approx(m_eager["train/policy_loss"], abs=1e-5)
    assert "failed" not in caplog.text  # it compiled (no eager fallback)
    # compiling is the slow part: one compiled function per network and loss setting
    assert minibatch_grad(algo.net, algo.config) is minibatch_grad(algo.net, algo.config)


def test_lngru_adds_up_evidence_past_one_and_leans_towards_keeping_its_state() -> None:
    net = GRUPolicy(1, 2, 4, cell="lngru")
    params = net.init_params(0)
    # zero layer-norm gains: every gate pre-activation is its shift alone
    for k in ("gru.ln_ih_weight", "gru.ln_hh_weight", "gru.ln_ih_bias", "gru.ln_hh_bias"):
        params[k] = torch.zeros(3, 4)
    x = torch.zeros(60, 1, net.input_size)
    params["gru.ln_ih_bias"][2] = 3.0  # candidate relu(3) = 3; keep gate σ(0 + 1)
    _, _, h = net.unroll(params, x, net.initial_hidden(1))
    assert torch.allclose(h, torch.full((1, 4), 3.0), atol=1e-4)  # a tanh cell stays < 1
    params["gru.ln_ih_bias"][2] = -3.0  # candidate relu(-3) = 0: the state decays by σ(1)
    _, _, h = net.unroll(params, x[:1], torch.full((1, 4), 2.0))
    assert torch.allclose(h, torch.full((1, 4), 2.0 * torch.sigmoid(torch.tensor(1.0)).item()))
    with pytest.raises(ValueError, match=r"cell must be one of \['gru', 'lngru'\], got 'lstm'"):
        GRUPolicy(1, 2, 4, cell="lstm")


def test_gae_matches_a_hand_computation() -> None:
    r = torch.tensor([[1.0], [0.0], [2.0]])
    v = torch.tensor([[0.5], [1.0], [0.2]])
    term = torch.tensor([[False], [True], [False]])
    g, lam = 0.9, 0.5
    # t=2: delta = 2 + 0.9*boot(0.7) - 0.2 ; t=1 terminal: delta = 0 - 1 ; t=0: 1 + .9*1 - .5
    d2 = 2 + 0.9 * 0.7 - 0.2
    d1 = 0.0 - 1.0
    d0 = 1 + 0.9 * 1.0 - 0.5
    a2, a1 = d2, d1
    a0 = d0 + g * lam * a1
    adv, ret = gae(r, v, term, g, lam, bootstrap=torch.tensor([0.7]))
    assert torch.allclose(adv[:, 0], torch.tensor([a0, a1, a2]))
    assert torch.allclose(ret, adv + v)
    # lambda = 1, V = 0 gives discounted returns.
    adv1, _ = gae(r, torch.zeros_like(v), term, g, 1.0)
    assert torch.allclose(adv1, discounted_returns(r, term, g))
    assert torch.allclose(discounted_returns(r, term, g)[:, 0], torch.tensor([1.0, 0.0, 2.0]))


def test_ppo_loss_clips_like_the_paper() -> None:
    # Two actions, old prob of action 0 = 0.5; new prob 0.8 -> ratio 1.6.
    logits = torch.log(torch.tensor([[0.8, 0.2], [0.8, 0.2], [0.3, 0.7]])).requires_grad_(True)
    actions = torch.tensor([0, 0, 0])
    old = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0])
    zeros = torch.zeros(3)
    loss, info = ppo_loss(logits, zeros, actions, old, adv, zeros, 0.2, 0.0, 0.0)
    # A>0, ratio 1.6 -> clipped 1.2; A<0, ratio 1.6 -> unclipped -1.6; ratio 0.6, A>0 -> 0.6.
    assert loss.item() == pytest.approx(-(1.2 - 1.6 + 0.6) / 3, abs=1e-6)
    g = torch.autograd.grad(loss, logits)[0]
    assert torch.all(g[0] == 0)  # clipped sample contributes no gradient
    assert torch.any(g[1] != 0) and torch.any(g[2] != 0)
    assert info["clip_frac"].item() == pytest.approx(1.0)
    # Value loss and entropy terms.
    v = torch.tensor([1.0, 2.0, 3.0])
    _, info = ppo_loss(logits, v, actions, old, adv, torch.zeros(3), 0.2, 1.0, 0.0)
    assert info["value_loss"].item() == pytest.approx(0.5 * (1 + 4 + 9) / 3)
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    h3 = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7))
    assert info["entropy"].item() == pytest.approx((2 * h + h3) / 3, abs=1e-6)


def _algo(workers: int, seed: int = 0, **overrides: Any) -> RL2:
    cfg = RL2Config(
        episodes_per_trial=4,
        tasks_per_iteration=12,
        hidden_size=16,
        epochs=2,
        minibatches=3,
        eval_tasks=20,
        **overrides,
    )
    return RL2(cfg, make_family("bandit", {"num_arms": 3}), LocalPool(workers), seed)


def test_rl2_step_reproduces_and_does_not_depend_on_sharding() -> None:
    (s0, m0, e0), _, _ = runs_over_sharding(_algo)
    assert m0["train/env_steps"] == 2 * 4 * 12 and set(e0) == {
        "val/trial_return",
        "val/trial_return_ci95",
    }
    other = _algo(1, seed=1)
    assert not torch.equal(other.init().params["pi.weight"], s0.params["pi.weight"])


def test_state_dict_round_trips_through_torch_save_weights_only() -> None:
    algo = _algo(1)
    state, _ = algo.step(algo.init())
    buf = io.BytesIO()
    torch.save(algo.state_dict(state), buf)
    buf.seek(0)
    again = algo.load_state_dict(torch.load(buf, weights_only=True))
    assert again.iteration == 1 and all(
        torch.equal(again.params[k], state.params[k]) for k in state.params
    )
    ret = evaluate_policy(
        algo.policy(again),
        make_family("bandit", {"num_arms": 3}).sample(np.random.default_rng(0), "test", 5),
        4,
        seed=0,
    )
    assert ret.shape == (5,) and bool(((ret >= 0) & (ret <= 4)).all())


def test_time_inputs_feed_step_fractions_and_widening_keeps_the_policy() -> None:
    from metaplat.rl2_table import widen_inputs

    fam = make_family("tabular_mdp", {"num_states": 4, "num_actions": 3, "horizon": 3})
    specs = fam.sample(np.random.default_rng(0), "train", 6)
    plain = RL2(
        RL2Config(
            episodes_per_trial=2, tasks_per_iteration=6, hidden_size=8, minibatches=2, epochs=1
        ),
        fam,
        LocalPool(1),
        0,
    )
    timed = RL2(
        RL2Config(
            episodes_per_trial=2,
            tasks_per_iteration=6,
            hidden_size=8,
            minibatches=2,
            epochs=1,
            time_inputs=True,
        ),
        fam,
        LocalPool(1),
        0,
    )
    assert timed.net.input_size == plain.net.input_size + 2
    seen: list[torch.Tensor] = []
    policy = timed.policy(timed.init())

    def record(state: Any, inp: StepInput) -> Any:
        out = policy(state, inp)
        seen.append(out[2]["x"][0, -2:].clone())
        return out

    run_trials(_Wrap(record, policy), fam.build_batched(specs), episodes=2, seed=0)
    expected = [(t / 3, (3 * e + t) / 6) for e in range(2) for t in range(3)]
    assert [tuple(round(v, 6) for v in x.tolist()) for x in seen] == [
        tuple(round(v, 6) for v in e) for e in expected
    ]
    # A checkpoint without the time inputs resumes as the same policy (zero new weights).
    state, _ = plain.step(plain.init())
    widened = timed.load_state_dict(widen_inputs(plain.state_dict(state), timed.net.input_size))
    r_plain = evaluate_policy(plain.policy(state), specs, 2, seed=1)
    r_timed = evaluate_policy(timed.policy(widened), specs, 2, seed=1)
    assert torch.allclose(r_plain, r_timed)
    with pytest.raises(ValueError, match="time_inputs"):
        timed.net.inputs(
            torch.zeros(2, 4),
            torch.zeros(2, dtype=torch.int64),
            torch.zeros(2),
            torch.zeros(2, dtype=torch.bool),
        )


def test_growing_the_gru_keeps_the_policy_and_training_uses_the_new_units(
    tmp_path: Any,
) -> None:
    from metaplat.rl2_table import RL2Setting, train_rl2, widen_hidden

    cfg = RL2Config(episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2)
    setting = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)
    small, trained, _ = train_rl2(setting, 0.2, 0, tmp_path, val_tasks=10)
    big = RL2(dataclasses.replace(cfg, hidden_size=12), small.family, LocalPool(1), 0)
    grown = big.load_state_dict(widen_hidden(small.state_dict(trained), big.init().params))
    assert grown.params["gru.weight_hh_l0"].shape == (36, 12)
    assert grown.adam_step == trained.adam_step
    # the same logits and values on any input, from the zero start and from any hidden state
    x = torch.randn(5, 4, small.net.input_size)
    h0 = torch.randn(4, 8)
    h0_big = torch.cat([h0, torch.randn(4, 4)], 1)
    head, value, h_t = small.net.unroll(trained.params, x, h0)
    head_big, value_big, h_t_big = big.net.unroll(grown.params, x, h0_big)
    assert torch.allclose(head, head_big, atol=1e-6)
    assert torch.allclose(value, value_big, atol=1e-6)
    assert torch.allclose(h_t, h_t_big[:, :8], atol=1e-6)
    # ... so the grown policy plays the same trials
    specs = small.family.sample(np.random.default_rng(0), "test", 20)
    r_small = evaluate_policy(small.policy(trained), specs, 3, seed=1)
    assert torch.allclose(r_small, evaluate_policy(big.policy(grown), specs, 3, seed=1))
    # the new units start unread, and one update makes the heads read them
    assert not grown.params["pi.weight"][:, 8:].any()
    stepped, _ = big.step(grown)
    assert stepped.params["pi.weight"][:, 8:].abs().sum() > 0
    with pytest.raises(ValueError, match="hidden_size 4: the checkpoint's GRU has 8 units"):
        narrow = RL2(dataclasses.replace(cfg, hidden_size=4), small.family, LocalPool(1), 0)
        widen_hidden(small.state_dict(trained), narrow.init().params)
    # a table phase that sets a larger hidden_size grows the cell; later phases keep it
    algo, best, facts = train_rl2(setting, 0.2, 0, tmp_path, {"hidden_size": 12}, True, 10)
    assert algo.config.hidden_size == 12 and best.params["pi.weight"].shape == (3, 12)
    algo, best, _ = train_rl2(setting, 0.0, 0, tmp_path)
    assert algo.config.hidden_size == 12 and best.params["gru.weight_hh_l0"].shape == (36, 12)
    assert facts["phases"][-1]["overrides"] == {"hidden_size": 12}


def test_growing_an_lngru_copies_its_units(tmp_path: Any) -> None:
    from metaplat.rl2_table import RL2Setting, _widen_lngru, train_rl2, widen_hidden

    cfg = RL2Config(
        episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2, rnn_cell="lngru"
    )
    setting = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)
    small, trained, _ = train_rl2(setting, 0.2, 0, tmp_path, val_tasks=10)
    big = RL2(dataclasses.replace(cfg, hidden_size=16), small.family, LocalPool(1), 0)
    saved = small.state_dict(trained)
    x = torch.randn(5, 4, small.net.input_size)
    h0 = torch.randn(4, 8)
    head, value, h_t = small.net.unroll(trained.params, x, h0)
    # without the noise, the copies compute exactly what the units did, from any state
    exact = big.load_state_dict(_widen_lngru(saved, big.init().params, noise=0.0))
    head_big, value_big, h_t_big = big.net.unroll(exact.params, x, torch.cat([h0, h0], 1))
    assert torch.allclose(head, head_big, atol=1e-5)
    assert torch.allclose(value, value_big, atol=1e-5)
    assert torch.allclose(h_t_big, torch.cat([h_t, h_t], 1), atol=1e-5)
    assert exact.adam_step == trained.adam_step
    # with them (the default), the copies' offsets cancel: each unit's copies average to
    # its weights, the function moves only a little, and training moves the copies apart
    grown = big.load_state_dict(widen_hidden(saved, big.init().params))
    for key in ("gru.weight_ih", "gru.weight_hh"):
        copies = grown.params[key].reshape(3, 2, 8, -1)
        assert not torch.allclose(copies[:, 0], copies[:, 1], atol=1e-3)
        assert torch.allclose(copies.mean(1), exact.params[key].reshape(3, 2, 8, -1)[:, 0])

    # ... at second order: the same offsets put on one copy only (a first-order change)
    # move the value 50-120x more than split across both (0.1 leaves a wide margin)
    split = _widen_lngru(saved, big.init().params, 0.01)["params"]
    one_sided = dict(exact.params)
    for key in ("gru.weight_ih", "gru.weight_hh"):
        w = exact.params[key].reshape(3, 2, 8, -1).clone()
        w[:, 1] += 2 * (split[key] - exact.params[key]).reshape(3, 2, 8, -1)[:, 1]
        one_sided[key] = w.reshape(exact.params[key].shape)

    def moved(params: dict[str, torch.Tensor]) -> float:
        return float((big.net.unroll(params, x, torch.cat([h0, h0], 1))[1] - value).norm())

    assert 0 < moved(split) < 0.1 * moved(one_sided)
    stepped, _ = big.step(grown)
    gap = stepped.params["pi.weight"][:, :8] - stepped.params["pi.weight"][:, 8:]
    assert gap.abs().sum() > 0
    odd = RL2(dataclasses.replace(cfg, hidden_size=12), small.family, LocalPool(1), 0)
    with pytest.raises(ValueError, match="hidden_size 12: .* must be a multiple of 8"):
        widen_hidden(saved, odd.init().params)
    # a table phase that sets hidden_size=16 grows the saved LN-GRU; later phases keep it
    algo, best, _ = train_rl2(setting, 0.2, 0, tmp_path, {"hidden_size": 16}, True, 10)
    assert best.params["gru.weight_hh"].shape == (48, 16)
    assert train_rl2(setting, 0.0, 0, tmp_path)[0].config.hidden_size == 16


class _Wrap:
    def __init__(self, call: Any, policy: RL2Policy):
        self.call, self.policy = call, policy

    def initial_state(self, env: Any, keys: torch.Tensor) -> Any:
        return self.policy.initial_state(env, keys)

    def __call__(self, state: Any, inp: StepInput) -> Any:
        return self.call(state, inp)


def test_table_training_resumes_in_recorded_phases(tmp_path: Any) -> None:
    from metaplat.rl2_table import RL2Setting, train_rl2

    cfg = RL2Config(episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2)
    setting = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)
    algo, _, facts = train_rl2(setting, 0.3, 0, tmp_path, val_tasks=20)
    first = facts["iterations"]
    assert first > 0 and len(facts["phases"]) == 1
    path = tmp_path / f"{setting.tag}.pt"
    saved = torch.load(path, weights_only=True)
    saved["best"] = algo.state_dict(algo.init())  # pretend the fresh policy was the best
    torch.save(saved, path)
    algo, _, facts = train_rl2(
        setting, 0.3, 0, tmp_path, {"learning_rate": 1e-4, "tasks_per_iteration": 4}, True, 30
    )
    assert algo.config.learning_rate == 1e-4 and algo.config.tasks_per_iteration == 4
    one, two = facts["phases"]
    assert one["to_iteration"] == first and one["learning_rate"] == cfg.learning_rate
    # the second phase starts from the kept best state, not from the last one
    assert two["from_best"] and two["from_iteration"] == 0 < first
    assert two["learning_rate"] == 1e-4 and two["to_iteration"] == facts["iterations"]
    # the lineage restarted at 0, but the compute of both phases is counted
    assert facts["total_env_steps"] == first * 8 * 3 + facts["env_steps"]
    # scoring only (no budget) adds no phase and leaves the checkpoint untouched
    before = path.read_bytes()
    _, _, again = train_rl2(setting, 0.0, 0, tmp_path)
    assert len(again["phases"]) == 2 and path.read_bytes() == before


def test_table_training_evaluates_every_so_many_env_steps(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from metaplat.rl2_table import RL2Setting, train_rl2

    cfg = RL2Config(episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2)
    setting = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)

    def evaluated(every: int) -> tuple[list[int], int]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="metaplat.rl2_table"):
            _, _, facts = train_rl2(setting, 0.3, 0, None, val_tasks=5, eval_every_steps=every)
        its = [int(r.getMessage().split(" it ")[1].split()[0]) for r in caplog.records]
        return its, facts["iterations"]

    its, last = evaluated(1)  # an update is 24 env steps: every update is scored
    assert its == list(range(1, last + 1))
    its, last = evaluated(48)  # every second update, and the last one
    assert its == [*range(2, last + 1, 2), *([last] if last % 2 else [])]
    its, last = evaluated(10**9)  # only the last
    assert its == [last]
    with pytest.raises(ValueError, match="eval_every_steps 0: must be at least 1"):
        train_rl2(setting, 0.1, 0, None, eval_every_steps=0)


def test_table_phase_that_adds_time_inputs_keeps_them_for_later_phases_and_scoring(
    tmp_path: Any,
) -> None:
    from metaplat.rl2_table import RL2Setting, train_rl2

    cfg = RL2Config(episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2)
    setting = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)
    train_rl2(setting, 0.2, 0, tmp_path, val_tasks=10)
    algo, _, _ = train_rl2(setting, 0.2, 0, tmp_path, {"time_inputs": True}, val_tasks=10)
    assert algo.net.time_inputs
    # a later phase that overrides something else, and scoring, keep the wider policy
    algo, best, facts = train_rl2(setting, 0.2, 0, tmp_path, {"learning_rate": 1e-4}, val_tasks=10)
    assert algo.net.time_inputs and algo.config.learning_rate == 1e-4
    assert facts["phases"][-1]["overrides"] == {"time_inputs": True, "learning_rate": 1e-4}
    algo, best, _ = train_rl2(setting, 0.0, 0, tmp_path)
    assert algo.net.time_inputs
    assert best.params["gru.weight_ih_l0"].shape[1] == algo.net.input_size


def test_table_cell_warm_starts_from_another_cells_best(tmp_path: Any) -> None:
    from metaplat.rl2_table import RL2Setting, train_rl2

    cfg = RL2Config(episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2)
    short = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)
    _, src_best, _ = train_rl2(short, 0.2, 0, tmp_path)
    path = tmp_path / f"{short.tag}.pt"
    saved = torch.load(path, weights_only=True)
    saved["best"]["value_scale"] = 7.5  # as if trained on returns of that spread
    torch.save(saved, path)
    longer = RL2Setting(
        "bandit", {"num_arms": 3}, 6, dataclasses.replace(cfg, episodes_per_trial=6)
    )
    _, state, facts = train_rl2(longer, 0.0, 0, tmp_path, init_from=short)
    assert facts["init_from"]["tag"] == short.tag and state.iteration == 0
    assert all(torch.equal(state.params[k], src_best.params[k]) for k in state.params)
    assert state.value_scale == 7.5  # the value head's units come with it
    wider = RL2Setting("bandit", {"num_arms": 4}, 3, cfg)
    with pytest.raises(ValueError, match="other shapes"):
        train_rl2(wider, 0.0, 0, tmp_path, init_from=short)


def test_table_plays_a_checkpoint_in_another_cell_with_its_network_fields(tmp_path: Any) -> None:
    from metaplat.rl2_table import RL2Setting, play_checkpoint, score_rl2, train_rl2

    cfg = RL2Config(episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2)
    short = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)
    train_rl2(short, 0.2, 0, tmp_path, val_tasks=10)
    train_rl2(short, 0.2, 0, tmp_path, {"time_inputs": True}, val_tasks=10)
    algo, best, _ = train_rl2(short, 0.0, 0, tmp_path)
    path = tmp_path / f"{short.tag}.pt"
    # in its own cell: the very policy the table scores, on the same tasks
    own, state = play_checkpoint(short, path)
    assert torch.equal(score_rl2(own, state, 50, 0), score_rl2(algo, best, 50, 0))
    # in a longer-trial cell: the same parameters, still reading the step in the trial
    longer = RL2Setting(
        "bandit", {"num_arms": 3}, 6, dataclasses.replace(cfg, episodes_per_trial=6)
    )
    other, state = play_checkpoint(longer, path)
    assert other.net.time_inputs and other.config.episodes_per_trial == 6
    assert all(torch.equal(state.params[k], best.params[k]) for k in best.params)
    assert score_rl2(other, state, 50, 0).shape == (50,)
    with pytest.raises(ValueError, match="cannot play .* in .*other shapes"):
        play_checkpoint(RL2Setting("bandit", {"num_arms": 4}, 3, cfg), path)


def test_table_phase_overrides_parse_to_field_types_and_name_bad_ones() -> None:
    from metaplat.rl2_table import config_overrides

    got = config_overrides(["gae_lambda=0.95", "epochs=3", "time_inputs=true"])
    assert got == {"gae_lambda": 0.95, "epochs": 3, "time_inputs": True}
    assert type(got["epochs"]) is int
    with pytest.raises(ValueError, match="gae_lamda.*one of.*gae_lambda"):
        config_overrides(["gae_lamda=0.9"])
    with pytest.raises(ValueError, match="'x' is not a int"):
        config_overrides(["epochs=x"])
    with pytest.raises(ValueError, match="is not a bool"):
        config_overrides(["time_inputs=maybe"])


def test_bfloat16_learner_keeps_float32_state_and_follows_the_float32_update() -> None:
    def one_update(dtype: str) -> dict[str, torch.Tensor]:
        cfg = RL2Config(
            episodes_per_trial=6,
            tasks_per_iteration=64,
            hidden_size=32,
            epochs=1,
            minibatches=1,
            learner_dtype=dtype,
        )
        algo = RL2(cfg, make_family("bandit", {"num_arms": 3}), LocalPool(1), seed=0)
        start = algo.init()
        state, metrics = algo.step(start)
        assert math.isfinite(metrics["train/policy_loss"])
        assert all(v.dtype == torch.float32 for v in state.params.values())
        assert all(v.dtype == torch.float32 for v in state.adam_v.values())
        return {k: v - start.params[k] for k, v in state.params.items()}

    full, mixed = one_update("float32"), one_update("bfloat16")
    # one Adam step from the same start on the same rollouts: bfloat16 matmuls only
    # perturb the gradient, so the step points the same way (Adam's first step is
    # sign-like: most coordinates move the same amount in the same direction)
    a = torch.cat([v.flatten() for v in full.values()])
    b = torch.cat([v.flatten() for v in mixed.values()])
    assert torch.cosine_similarity(a, b, dim=0) > 0.9
    assert not torch.equal(a, b)  # the learner really ran in bfloat16


def test_annealed_step_size_falls_linearly_to_zero_and_then_updates_nothing() -> None:
    algo = _algo(1, learning_rate=1e-3, lr_anneal_iterations=4)
    assert [algo.learning_rate_at(i) for i in (0, 1, 2, 4, 9)] == pytest.approx(
        [1e-3, 7.5e-4, 5e-4, 0.0, 0.0]
    )
    start = algo.init()
    state, metrics = algo.step(start)  # iteration 0: the full step size
    assert metrics["train/lr"] == 1e-3
    assert not torch.equal(state.params["pi.weight"], start.params["pi.weight"])
    late = dataclasses.replace(state, iteration=4)
    after, metrics = algo.step(late)  # past the schedule's end: nothing moves
    assert metrics["train/lr"] == 0.0 and after.iteration == 5
    assert all(torch.equal(after.params[k], late.params[k]) for k in late.params)
    assert _algo(1, learning_rate=1e-3).learning_rate_at(10**6) == 1e-3
    with pytest.raises(ValueError, match="lr_anneal_iterations must be >= 0"):
        RL2Config(lr_anneal_iterations=-1)


def test_heads_stay_float32_under_a_bfloat16_autocast() -> None:
    net = GRUPolicy(obs_dim=1, num_actions=3, hidden_size=16)
    params = net.init_params(0)
    x, h0 = torch.randn(7, 4, net.input_size), net.initial_hidden(4)
    ref = net.unroll(params, x, h0)
    with torch.autocast("cpu", torch.bfloat16):
        out = net.unroll(params, x, h0)
    for r, o in zip(ref, out, strict=True):
        assert o.dtype == torch.float32
        assert torch.allclose(r, o, atol=0.05), (r - o).abs().max()


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"rnn_cell must be one of \['gru', 'lngru'\]"):
        RL2Config(rnn_cell="lstm")
    with pytest.raises(ValueError, match=r"learner_dtype must be one of \['bfloat16', 'float32'\]"):
        RL2Config(learner_dtype="float16")
    with pytest.raises(ValueError, match="gae_lambda must be in"):
        RL2Config(gae_lambda=1.5)
    with pytest.raises(ValueError, match="minibatches"):
        RL2Config(tasks_per_iteration=2, minibatches=4)
    with pytest.raises(ValueError, match="kind rl"):
        RL2(RL2Config(), make_family("sinusoid"), LocalPool(1), 0)


@pytest.mark.gpu
def test_rl2_rollout_on_cuda_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from metaplat.outer.rl2 import RL2RolloutJob

    fam = make_family("tabular_mdp")
    specs = fam.sample(np.random.default_rng(0), "train", 64)
    net = GRUPolicy(10, 5, 32)
    payload = {
        "policy": RL2Policy(net, net.init_params(0)),
        "seed": 3,
        "index": {s.seed: i for i, s in enumerate(specs)},
    }
    cpu = RL2RolloutJob(3)(payload, specs, torch.device("cpu"))
    gpu = RL2RolloutJob(3)(payload, specs, torch.device("cuda"))
    # Same noise and sampling uniforms; actions agree unless a logit differs in the last bits.
    agree = (cpu["action"] == gpu["action"]).float().mean().item()
    assert agree > 0.99


@pytest.mark.parametrize(
    "name", ["rl2_bandits", "rl2_mdp", "rl2_point_nav", "rl2_point_nav_rllib", "rl2_cartpole_rllib"]
)
def test_tune_specs_build_their_method_configs(name: str) -> None:
    import yaml

    from metaplat.outer.rl2_rllib import RL2RLlibConfig

    spec = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    config = {"rl2": RL2Config, "rl2_rllib": RL2RLlibConfig}[spec["method"]["name"]]
    config(**spec["method"]["config"])
    assert spec["tune"]["metric"] == "val/trial_return"
    try:
        make_family(spec["task"]["family"], spec["task"]["config"])
    except ImportError:
        pytest.skip(f"family {spec['task']['family']!r} not on this branch")


def test_table_training_keeps_the_parameter_average_when_it_scores_higher(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metaplat.rl2_table import RL2Setting, train_rl2

    cfg = RL2Config(episodes_per_trial=3, tasks_per_iteration=8, hidden_size=8, minibatches=2)
    setting = RL2Setting("bandit", {"num_arms": 3}, 3, cfg)
    stepped: list[dict[str, torch.Tensor]] = []  # the parameters after each update
    scored: list[dict[str, torch.Tensor]] = []
    real_step = RL2.step

    def step(self: RL2, state: Any) -> Any:
        out = real_step(self, state)
        stepped.append(out[0].params)
        return out

    def evaluate(self: RL2, state: Any, split: str, num_tasks: int | None = None) -> Any:
        scored.append(state.params)
        is_current = bool(stepped) and state.params is stepped[-1]
        return {"val/trial_return": -1.0 if not stepped else (0.0 if is_current else 1.0)}

    monkeypatch.setattr(RL2, "step", step)
    monkeypatch.setattr(RL2, "evaluate", evaluate)
    _, best, facts = train_rl2(
        setting, 0.3, 0, tmp_path, val_tasks=5, eval_every_steps=10**9, ema=0.75
    )
    assert len(stepped) == facts["iterations"] > 1
    expected = stepped[0]
    for params in stepped[1:]:
        expected = {k: 0.75 * expected[k] + 0.25 * v for k, v in params.items()}
    # scored once at the start, then the last state and the average of every update
    assert len(scored) == 3 and scored[1] is stepped[-1]
    for k, v in expected.items():
        torch.testing.assert_close(best.params[k], v)
        assert not torch.equal(v, stepped[-1][k])
    assert facts["best_ema"] == 0.75 and facts["phases"][-1]["ema"] == 0.75
    # the kept average resumes with the last state's counters
    assert best.iteration == facts["iterations"] and best.env_steps == facts["env_steps"]
    with pytest.raises(ValueError, match="ema 1.0: must be in"):
        train_rl2(setting, 0.1, 0, None, ema=1.0)

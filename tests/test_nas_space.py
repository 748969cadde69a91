"""Search spaces: every sampled program builds and runs; children score and fail safely."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metaplat.optim import dsl
from metaplat.search.children import ChildConfig, run_child
from metaplat.search.nas_space import ConvSpace, MLPSpace, build_network
from metaplat.search.nos_space import NOSSpace, program_of
from metaplat.search.space import check_tokens, make_space, random_tokens, vocab_sizes


def test_200_sampled_conv_programs_build_and_run_on_28x28() -> None:
    space = ConvSpace()  # the paper's choices: filters 1..7, 24..64 filters, strides 1..3
    rng = np.random.default_rng(0)
    x = torch.randn(2, 1, 28, 28)
    for _ in range(200):
        program = space.decode(random_tokens(space, rng))
        assert build_network(program, (1, 28, 28), 5)(x).shape == (2, 5)


def test_200_sampled_mlp_programs_build_and_run() -> None:
    space = MLPSpace()
    rng = np.random.default_rng(1)
    for _ in range(200):
        program = space.decode(random_tokens(space, rng))
        assert 1 <= len(program["layers"]) <= 3
        assert build_network(program, (2,), 3)(torch.randn(4, 2)).shape == (4, 3)


def test_conv_decoding_anchors_and_shapes_by_hand() -> None:
    space = ConvSpace(num_layers=3, filter_sizes=(3, 5), filters=(4, 8), strides=(1, 2))
    names = [d.name for d in space.decisions]
    assert names[-1] == "layer2/skip0" and "layer1/skip0" not in names  # i-1 always feeds i
    # layer0: 5x3, 8 filters, stride 2; layer1: 3x3, 4, s1; layer2: 3x5, 8, s2, skip from 0
    tokens = [1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    program = space.decode(tokens)
    assert program["layers"][0] == {
        "filter_h": 5,
        "filter_w": 3,
        "filters": 8,
        "stride": 2,
        "skips": [],
    }
    assert program["layers"][2]["skips"] == [0]
    net = build_network(program, (1, 28, 28), 2)
    assert net.convs[2].in_channels == 4 + 8  # layer1 output + anchor from layer0
    assert net.convs[0].padding == (2, 1)
    assert space.describe(program) == "conv 5x3/8/s2 -> 3x3/4/s1 -> 3x5/8/s2 +[0]"


def test_nos_space_expresses_powersign_and_decodes_valid_programs() -> None:
    space = NOSSpace(num_units=2)
    assert vocab_sizes(space)[:2] == [len(dsl.OPERANDS)] * 2
    assert vocab_sizes(space)[5] == len(dsl.OPERANDS) + 1  # unit1 may use u0
    want = dsl.POWERSIGN.units
    tokens = []
    for d in space.decisions:
        k, field = d.name.split("/")
        tokens.append(d.choices.index(getattr(want[int(k[4:])], field)))
    assert program_of(space.decode(tokens)) == dsl.POWERSIGN
    rng = np.random.default_rng(0)
    for _ in range(50):
        program_of(space.decode(random_tokens(space, rng)))  # validates


def test_make_space_and_token_errors_name_the_problem() -> None:
    assert make_space({"kind": "nas_mlp", "widths": [4, 8]}).widths == (4, 8)
    with pytest.raises(ValueError, match="did you mean 'nas_mlp'"):
        make_space({"kind": "nas_mpl"})
    with pytest.raises(ValueError, match="max_layer"):
        make_space({"kind": "nas_mlp", "max_layer": 2})
    with pytest.raises(ValueError, match="out of range"):
        check_tokens(MLPSpace(), [5, 0, 0, 0, 0, 0, 0])


FAST = {"steps": 40, "lrs": [0.1], "data": {"num_train": 128, "num_val": 128}}


def test_children_train_and_failures_get_worst_reward_with_a_reason() -> None:
    cfg = ChildConfig.from_dict(FAST)
    good = run_child({"kind": "nos", **dsl.ADAM.to_dict()}, cfg, seed=0)
    assert good.status == "ok" and good.reward > 0.5  # 3 spiral classes: chance is 1/3
    zero = dsl.Program((dsl.Unit("g", "g", b="sub"), dsl.Unit("u0", "one", u1="log_abs")))
    nan = run_child({"kind": "nos", **zero.to_dict()}, cfg, seed=0)  # log|0| = -inf
    assert nan.status == "nan" and nan.reward == cfg.worst_reward and "diverged" in nan.reason
    slow = run_child(
        MLPSpace().decode([0] * 7), ChildConfig.from_dict(FAST | {"time_budget_s": 1e-9}), 0
    )
    assert slow.status == "timeout" and slow.reward == 0.0
    bad = run_child({"kind": "rnn"}, cfg, 0)
    assert bad.status == "error" and "rnn" in bad.reason


def test_child_reward_is_deterministic_in_its_seed() -> None:
    cfg = ChildConfig.from_dict(FAST | {"reward_power": 3.0})
    program = MLPSpace().decode([1, 2, 0, 1, 1, 0, 0])
    a, b = run_child(program, cfg, 5), run_child(program, cfg, 5)
    assert a.reward == b.reward and a.reward == pytest.approx(a.metrics["val/accuracy"] ** 3)

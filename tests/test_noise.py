"""Counter-based noise: equals plain splitmix64, is uniform, deterministic, and key-sensitive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from environments.noise import (
    MASK64,
    bits,
    categorical,
    episode_keys,
    hash64,
    normal,
    reference_splitmix64,
    substream,
    uniform,
)


def test_bits_equal_reference_splitmix64() -> None:
    states = [0, 1, 12345, 2**63 - 1, -1, -(2**63), -987654321]
    keys = torch.tensor(states, dtype=torch.int64)
    got = bits(keys[:, None], torch.arange(6))
    for i, s in enumerate(states):
        want = reference_splitmix64(s & MASK64, 6)
        assert [int(v) & MASK64 for v in got[i]] == want


def test_hash64_is_a_bijection_on_a_sample() -> None:
    x = torch.arange(-50_000, 50_000, dtype=torch.int64)
    assert hash64(x).unique().numel() == x.numel()


def test_uniform_is_uniform_on_unit_interval() -> None:
    keys = episode_keys(torch.arange(200), seed=0)
    u = uniform(keys[:, None], torch.arange(500)).flatten()  # 100k draws
    assert u.dtype == torch.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    n = u.numel()
    assert abs(float(u.mean()) - 0.5) < 4 * (1 / 12 / n) ** 0.5
    assert abs(float(u.var()) - 1 / 12) < 2e-3
    counts = torch.histc(u, bins=20, min=0.0, max=1.0)
    chi2 = float(((counts - n / 20) ** 2 / (n / 20)).sum())
    assert chi2 < 45.3  # chi^2(19) at p = 0.999
    # Consecutive draws are uncorrelated.
    corr = np.corrcoef(u[:-1].numpy(), u[1:].numpy())[0, 1]
    assert abs(corr) < 0.015


def test_float32_uniforms_are_the_top_bits_of_float64_ones() -> None:
    keys = episode_keys(torch.arange(100), seed=3)
    u32 = uniform(keys, 4, torch.float32).double()
    u64 = uniform(keys, 4, torch.float64)
    assert torch.equal(u32, torch.floor(u64 * 2**24) / 2**24)
    assert torch.equal(u32 * 2**24, torch.round(u32 * 2**24))


def test_determinism_and_sensitivity_to_key_and_counter() -> None:
    keys = episode_keys(torch.arange(64), seed=11)
    a = uniform(keys, 7)
    assert torch.equal(a, uniform(keys.clone(), 7))
    assert (a != uniform(keys, 8)).float().mean() > 0.99
    assert (a != uniform(keys + 1, 7)).float().mean() > 0.99
    assert keys.unique().numel() == 64


def test_episode_keys_follow_the_reset_rule() -> None:
    task_seeds = torch.tensor([3, 6, 9, 12])
    batch = episode_keys(task_seeds, seed=100)
    for i in range(4):
        (single,) = episode_keys(task_seeds[i : i + 1], seed=100 + i)
        assert single == batch[i]
    assert torch.equal(episode_keys(task_seeds, None, batch), hash64(batch))
    # Same task under another seed, and swapped (task, seed), give other keys.
    assert not torch.equal(batch, episode_keys(task_seeds, seed=101))
    swapped = episode_keys(torch.tensor([100]), seed=3)
    assert swapped != episode_keys(torch.tensor([3]), seed=100)
    # Unseeded resets are fresh.
    assert not torch.equal(episode_keys(task_seeds, None), episode_keys(task_seeds, None))


def test_normal_and_categorical_statistics() -> None:
    keys = episode_keys(torch.arange(100), seed=0)
    z = normal(keys[:, None], torch.arange(1000)).flatten()
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1.0) < 0.02
    assert abs(float((z.abs() < 1.96).float().mean()) - 0.95) < 0.005
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    draws = categorical(keys[:, None], torch.arange(1000), probs.expand(100, 1000, 4))
    freq = torch.bincount(draws.flatten(), minlength=4).double() / draws.numel()
    assert freq[1] == 0.0
    np.testing.assert_allclose(freq.numpy(), probs.numpy(), atol=0.01)


def test_categorical_inverts_the_cdf_exactly() -> None:
    keys = episode_keys(torch.arange(50), seed=2)
    u = uniform(keys, 0, torch.float64)
    probs = torch.tensor([0.25, 0.5, 0.25]).expand(50, 3)
    want = (u >= 0.25).long() + (u >= 0.75).long()
    assert torch.equal(categorical(keys, 0, probs), want)


@pytest.mark.gpu
def test_cuda_matches_cpu_bit_for_bit() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    keys = episode_keys(torch.arange(1000), seed=5)
    counters = torch.arange(64)
    cpu = uniform(keys[:, None], counters, torch.float64)
    gpu = uniform(keys.cuda()[:, None], counters.cuda(), torch.float64).cpu()
    assert torch.equal(cpu, gpu)
    assert torch.equal(episode_keys(torch.arange(1000).cuda(), seed=5).cpu(), keys)


def test_substreams_are_distinct_and_deterministic() -> None:
    keys = episode_keys(torch.arange(32), seed=1)
    a, b = substream(keys, 0), substream(keys, 1)
    assert torch.equal(a, substream(keys.clone(), 0))
    assert not (a == b).any() and not (a == keys).any()
    corr = np.corrcoef(uniform(a, 0).numpy(), uniform(b, 0).numpy())[0, 1]
    assert abs(corr) < 0.5

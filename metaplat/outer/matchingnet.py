"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016).

Algorithm (per episode): embed support with g and queries with f; attention
a(x̂, x_i) = softmax_i(cos(f(x̂), g(x_i))); the query's class distribution is the
attention-weighted sum of the support labels' one-hot vectors,
P(y = k | x̂, S) = sum_i a(x̂, x_i) [y_i = k]; minimise the query NLL with Adam.

Without full-context embeddings (``fce=False``, the paper's Omniglot setting) f = g = the
backbone. With ``fce=True`` (the paper's appendix, used for miniImageNet):

* g(x_i) = h→_i + h←_i + g'(x_i): a bidirectional LSTM (hidden = embedding width) over the
  support embeddings g'(x_i) in the episode's support order;
* f(x̂) = h_K after K = ``fce_steps`` steps of an attention LSTM:
  r_{k-1} = sum_i softmax_i(h_{k-1}ᵀ g(x_i)) g(x_i);
  ĥ_k, c_k = LSTM(f'(x̂), [h_{k-1}, r_{k-1}], c_{k-1});  h_k = ĥ_k + f'(x̂);  h_0 = c_0 = 0.

Probabilities are computed in log space (log-softmax attention, log-sum-exp over each class's
support items), which equals ``log(sum_i a_i [y_i = k])`` without underflow.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaplat.outer._metric_common import (
    EmbeddingSpec,
    MetricConfig,
    MetricOuterLoop,
    ModelSpec,
    _check,
    embedding_spec,
)
from metaplat.outer.protonet import one_hot


def cosine_similarity(z_query: Tensor, z_support: Tensor, eps: float = 1e-8) -> Tensor:
    """``[Nq, D], [Ns, D] -> [Nq, Ns]`` cosines of every query with every support embedding."""
    q = z_query / z_query.norm(dim=-1, keepdim=True).clamp_min(eps)
    s = z_support / z_support.norm(dim=-1, keepdim=True).clamp_min(eps)
    return q @ s.T


def attention(z_query: Tensor, z_support: Tensor, scale: float = 1.0) -> Tensor:
    """Attention weights ``[Nq, Ns]`` (rows sum to 1): softmax of ``scale`` times the cosines."""
    return torch.softmax(scale * cosine_similarity(z_query, z_support), dim=-1)


def matching_log_probs(log_attention: Tensor, y_support: Tensor, num_ways: int) -> Tensor:
    """``log sum_i a_i [y_i = k]``: ``[Nq, Ns] log-weights, [Ns] labels -> [Nq, num_ways]``."""
    member = one_hot(y_support, num_ways).bool()  # [Ns, N]
    masked = torch.where(member, log_attention.unsqueeze(-1), float("-inf"))  # [Nq, Ns, N]
    return torch.logsumexp(masked, dim=-2)


class LSTMCell(nn.Module):
    """An LSTM cell written out (so ``vmap`` and ``functional_call`` see plain linear maps).

    ``forward(x [.., in], h [.., hidden_in], c [.., out]) -> (h', c')``, gates i, f, g, o.
    """

    def __init__(self, in_dim: int, hidden_in: int, out_dim: int):
        super().__init__()
        self.ih = nn.Linear(in_dim, 4 * out_dim)
        self.hh = nn.Linear(hidden_in, 4 * out_dim, bias=False)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class FullContextEmbedding(nn.Module):
    """The paper's g (bidirectional LSTM over the support) and f (K-step attention LSTM)."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        self.steps = steps
        self.fwd = LSTMCell(dim, dim, dim)
        self.bwd = LSTMCell(dim, dim, dim)
        self.attn = LSTMCell(dim, 2 * dim, dim)

    def _run(self, cell: LSTMCell, zs: Tensor, order: range) -> list[Tensor]:
        h = c = torch.zeros_like(zs[0])
        out: list[Tensor] = [h] * zs.shape[0]
        for i in order:
            h, c = cell(zs[i], h, c)
            out[i] = h
        return out

    def support(self, zs: Tensor) -> Tensor:
        """g: ``[Ns, D] -> [Ns, D]``."""
        n = zs.shape[0]
        hf = torch.stack(self._run(self.fwd, zs, range(n)))
        hb = torch.stack(self._run(self.bwd, zs, range(n - 1, -1, -1)))
        return zs + hf + hb

    def query(self, zq: Tensor, gs: Tensor) -> Tensor:
        """f: ``[Nq, D], g [Ns, D] -> [Nq, D]``."""
        h = c = torch.zeros_like(zq)
        for _ in range(self.steps):
            r = torch.softmax(h @ gs.T, dim=-1) @ gs
            h_hat, c = self.attn(zq, torch.cat([h, r], dim=-1), c)
            h = h_hat + zq
        return h


class MatchingNetModel(nn.Module):
    """Per-task model: ``forward(support_x, support_y, query_x, num_ways) -> log P [Nq, N]``."""

    def __init__(self, embedding: nn.Module, fce: FullContextEmbedding | None, scale: float):
        super().__init__()
        self.embedding = embedding
        self.fce = fce
        self.scale = scale

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, num_ways: int
    ) -> Tensor:
        n_s = support_x.shape[0]
        z = self.embedding(torch.cat([support_x, query_x]))  # one BN batch per episode
        gs, fq = z[:n_s], z[n_s:]
        if self.fce is not None:
            gs = self.fce.support(gs)
            fq = self.fce.query(fq, gs)
        log_a = F.log_softmax(self.scale * cosine_similarity(fq, gs), dim=-1)
        return matching_log_probs(log_a, support_y, num_ways)


@dataclasses.dataclass(frozen=True)
class MatchingNetSpec:
    """Picklable recipe of :class:`MatchingNetModel`."""

    embedding: EmbeddingSpec
    fce: bool
    fce_steps: int
    scale: float

    def build(self) -> nn.Module:
        emb = self.embedding.build()
        fce = None
        if self.fce:
            with torch.no_grad():
                probe = torch.zeros(2, *self.embedding.in_shape)
                dim = emb(probe).shape[-1]
            fce = FullContextEmbedding(dim, self.fce_steps)
        return MatchingNetModel(emb, fce, self.scale)


@dataclasses.dataclass(frozen=True)
class MatchingNetConfig(MetricConfig):
    """Matching Networks' settings (plus those of :class:`MetricConfig`)."""

    fce: bool = False
    """Full-context embeddings (bidirectional support LSTM + attention-LSTM query)."""
    fce_steps: int = 3
    """K: processing steps of the attention LSTM (used only with ``fce``)."""
    cosine_scale: float = 1.0
    """Multiplies the cosines before the softmax (the paper: 1, no temperature)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(isinstance(self.fce, bool), "fce", self.fce, "true or false")
        _check(self.fce_steps >= 1, "fce_steps", self.fce_steps, "an int >= 1")
        _check(self.cosine_scale > 0, "cosine_scale", self.cosine_scale, "a float > 0")


class MatchingNet(MetricOuterLoop):
    """Matching Networks over any classification family (glyphs: Conv4 embedding)."""

    name: ClassVar[str] = "matchingnet"
    Config: ClassVar[type] = MatchingNetConfig

    def model_spec(self, config: MetricConfig, x_shape: tuple[int, ...]) -> ModelSpec:
        assert isinstance(config, MatchingNetConfig)
        return MatchingNetSpec(
            embedding_spec(config, x_shape), config.fce, config.fce_steps, config.cosine_scale
        )

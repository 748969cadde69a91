"""Prototypical Networks (Snell, Swersky & Zemel 2017).

Algorithm (per episode): embed support and query with f_phi; a class's prototype is the
mean of its support embeddings, c_k = mean_{i: y_i = k} f(x_i); a query's logits are the
negative squared Euclidean distances -||f(x) - c_k||^2; minimise query cross-entropy over
episodes with Adam (lr 1e-3). Meta-representation: the embedding; meta-optimiser: gradient
descent on the episode loss; no inner optimisation.

Differences from the paper: the learning-rate halving every 2000 episodes is left to the
caller; training with more ways than testing is the config field ``train_ways``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from metaplat.outer._metric_common import (
    EmbeddingSpec,
    MetricConfig,
    MetricOuterLoop,
    ModelSpec,
    embedding_spec,
)


def one_hot(y: Tensor, num_ways: int) -> Tensor:
    """``[n] int64 -> [n, num_ways]`` float one-hot (a comparison, so vmap batches it)."""
    return (y.unsqueeze(-1) == torch.arange(num_ways, device=y.device)).to(torch.float32)


def prototypes(z_support: Tensor, y_support: Tensor, num_ways: int) -> Tensor:
    """Class means of the support embeddings: ``[Ns, D], [Ns] -> [num_ways, D]``."""
    onehot = one_hot(y_support, num_ways).to(z_support.dtype)  # [Ns, N]
    return (onehot.T @ z_support) / onehot.sum(0).unsqueeze(-1)


def proto_logits(z_query: Tensor, protos: Tensor) -> Tensor:
    """Negative squared Euclidean distances: ``[Nq, D], [N, D] -> [Nq, N]``."""
    return -((z_query.unsqueeze(-2) - protos) ** 2).sum(-1)


class ProtoNetModel(nn.Module):
    """Per-task model: ``forward(support_x, support_y, query_x, num_ways) -> logits [Nq, N]``."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        self.embedding = embedding

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, num_ways: int
    ) -> Tensor:
        n_s = support_x.shape[0]
        z = self.embedding(torch.cat([support_x, query_x]))  # one BN batch per episode
        return proto_logits(z[n_s:], prototypes(z[:n_s], support_y, num_ways))


@dataclasses.dataclass(frozen=True)
class ProtoNetSpec:
    """Picklable recipe of :class:`ProtoNetModel`."""

    embedding: EmbeddingSpec

    def build(self) -> nn.Module:
        return ProtoNetModel(self.embedding.build())


@dataclasses.dataclass(frozen=True)
class ProtoNetConfig(MetricConfig):
    """ProtoNets' settings: those of :class:`MetricConfig` (nothing method-specific)."""


class ProtoNet(MetricOuterLoop):
    """Prototypical Networks over any classification family (glyphs: Conv4 embedding)."""

    name: ClassVar[str] = "protonet"
    Config: ClassVar[type] = ProtoNetConfig

    def model_spec(self, config: MetricConfig, x_shape: tuple[int, ...]) -> ModelSpec:
        return ProtoNetSpec(embedding_spec(config, x_shape))

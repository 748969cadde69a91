"""Small learners used through ``torch.func.functional_call`` (never mutated in place).

BatchNorm layers keep no running statistics (``track_running_stats=False``): they always
normalise with the statistics of the batch at hand, as the MAML paper's inner loop does,
and that keeps them pure functions that ``vmap`` can batch over tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """``in -> hidden... -> out`` with ``activation`` between layers (the MAML 1-40-40-1 net)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), activation()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ConvBlock(nn.Sequential):
    """3x3 conv (padding 1) -> BatchNorm (batch statistics) -> ReLU -> 2x2 max-pool."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )


class Conv4(nn.Module):
    """The standard 4-block few-shot conv net (64 filters each), flattened features.

    ``x: [N, C, H, W] -> features [N, feature_dim]``; with ``num_classes`` set, a linear
    head named ``head`` maps features to logits ``[N, num_classes]`` (ANIL adapts only it).
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        num_classes: int | None = None,
        image_size: int = 28,
    ):
        super().__init__()
        self.encoder = nn.Sequential(
            *(ConvBlock(in_channels if i == 0 else hidden, hidden) for i in range(4))
        )
        side = image_size
        for _ in range(4):
            side //= 2
        self.feature_dim = hidden * max(side, 1) ** 2
        self.head = nn.Linear(self.feature_dim, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x).flatten(1)
        return self.head(z) if self.head is not None else z

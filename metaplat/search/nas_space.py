"""NAS-RL spaces (Zoph & Le 2017): conv nets for images, MLPs for vectors; and their builders.

Conv space, per layer ``i``: filter height and width, number of filters, stride, and for each
earlier layer ``j < i-1`` a binary *anchor* decision "feed layer j's output into layer i"
(layer ``i-1`` always feeds layer ``i``). Inputs of different spatial sizes are average-pooled
to the smallest before being concatenated along channels (Zoph & Le pad instead; pooling keeps
every program valid at any stride). Convolutions use "same" padding (``k // 2``), so a layer
maps ``H -> floor((H - 1) / stride) + 1 >= 1``: every token sequence builds a valid network.
Each layer is conv -> BatchNorm (batch statistics) -> ReLU; the head is global average pooling
and a linear layer.

MLP space: a depth, then per layer a width and an activation (layers beyond the depth are
ignored by the decoder, so their tokens do not matter).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaplat.search.space import Decision, choices_of

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "identity": nn.Identity,
}  # fmt: skip


def _check_choices(field: str, values: Sequence[Any], ok: Any) -> tuple[Any, ...]:
    values = tuple(values)
    if not values or not all(ok(v) for v in values):
        raise ValueError(f"{field} must be a non-empty list of allowed values, got {list(values)}")
    return values


@dataclasses.dataclass(frozen=True)
class ConvSpace:
    """Conv nets over ``num_layers`` layers (defaults: the paper's choices)."""

    num_layers: int = 4
    """Number of conv layers."""
    filter_sizes: tuple[int, ...] = (1, 3, 5, 7)
    """Choices for filter height and for filter width (odd sizes)."""
    filters: tuple[int, ...] = (24, 36, 48, 64)
    """Choices for the number of filters."""
    strides: tuple[int, ...] = (1, 2, 3)
    """Choices for the stride (same in both directions)."""
    skips: bool = True
    """Whether to search anchor (skip) connections from layers ``j < i-1``."""

    name = "nas_conv"

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        odd = _check_choices("filter_sizes", self.filter_sizes, lambda v: int(v) >= 1 and v % 2)
        object.__setattr__(self, "filter_sizes", odd)
        object.__setattr__(
            self, "filters", _check_choices("filters", self.filters, lambda v: v >= 1)
        )
        object.__setattr__(
            self, "strides", _check_choices("strides", self.strides, lambda v: v >= 1)
        )

    @property
    def decisions(self) -> tuple[Decision, ...]:
        out: list[Decision] = []
        for i in range(self.num_layers):
            out += [
                Decision(f"layer{i}/filter_h", self.filter_sizes),
                Decision(f"layer{i}/filter_w", self.filter_sizes),
                Decision(f"layer{i}/filters", self.filters),
                Decision(f"layer{i}/stride", self.strides),
            ]
            if self.skips:
                out += [Decision(f"layer{i}/skip{j}", (0, 1)) for j in range(i - 1)]
        return tuple(out)

    def decode(self, tokens: Sequence[int]) -> dict[str, Any]:
        c = choices_of(self, tokens)
        layers = []
        for i in range(self.num_layers):
            skips = [j for j in range(i - 1) if self.skips and c[f"layer{i}/skip{j}"]]
            layers.append(
                {
                    "filter_h": c[f"layer{i}/filter_h"],
                    "filter_w": c[f"layer{i}/filter_w"],
                    "filters": c[f"layer{i}/filters"],
                    "stride": c[f"layer{i}/stride"],
                    "skips": skips,
                }
            )
        return {"kind": "conv", "layers": layers}

    def describe(self, program: dict[str, Any]) -> str:
        return describe_program(program)


@dataclasses.dataclass(frozen=True)
class MLPSpace:
    """MLPs of 1..``max_layers`` hidden layers."""

    max_layers: int = 3
    """Largest number of hidden layers."""
    widths: tuple[int, ...] = (8, 16, 32, 64)
    """Choices for a hidden layer's width."""
    activations: tuple[str, ...] = ("relu", "tanh", "sigmoid", "elu")
    """Choices for a hidden layer's activation (see ``ACTIVATIONS``)."""

    name = "nas_mlp"

    def __post_init__(self) -> None:
        if self.max_layers < 1:
            raise ValueError(f"max_layers must be >= 1, got {self.max_layers}")
        object.__setattr__(self, "widths", _check_choices("widths", self.widths, lambda v: v >= 1))
        acts = _check_choices("activations", self.activations, lambda v: v in ACTIVATIONS)
        object.__setattr__(self, "activations", acts)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        out = [Decision("depth", tuple(range(1, self.max_layers + 1)))]
        for i in range(self.max_layers):
            out += [Decision(f"layer{i}/width", self.widths)]
            out += [Decision(f"layer{i}/activation", self.activations)]
        return tuple(out)

    def decode(self, tokens: Sequence[int]) -> dict[str, Any]:
        c = choices_of(self, tokens)
        layers = [
            {"width": c[f"layer{i}/width"], "activation": c[f"layer{i}/activation"]}
            for i in range(c["depth"])
        ]
        return {"kind": "mlp", "layers": layers}

    def describe(self, program: dict[str, Any]) -> str:
        return describe_program(program)


def describe_program(program: dict[str, Any]) -> str:
    """``conv 3x5/36/s1 -> ...`` or ``mlp 32 tanh -> 16 relu``."""
    if program["kind"] == "mlp":
        return "mlp " + " -> ".join(
            f"{layer['width']} {layer['activation']}" for layer in program["layers"]
        )
    parts = []
    for layer in program["layers"]:
        skip = f" +{layer['skips']}" if layer["skips"] else ""
        parts.append(
            f"{layer['filter_h']}x{layer['filter_w']}/{layer['filters']}/s{layer['stride']}{skip}"
        )
    return "conv " + " -> ".join(parts)


class ConvNet(nn.Module):
    """The network a conv program describes; ``x [B, C, H, W] -> logits [B, num_classes]``."""

    def __init__(self, program: dict[str, Any], in_channels: int, num_classes: int):
        super().__init__()
        self.layers_spec = [dict(layer) for layer in program["layers"]]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels: list[int] = []
        for i, layer in enumerate(self.layers_spec):
            c_in = (
                in_channels
                if i == 0
                else channels[i - 1] + sum(channels[j] for j in layer["skips"])
            )
            kh, kw = int(layer["filter_h"]), int(layer["filter_w"])
            self.convs.append(
                nn.Conv2d(
                    c_in, int(layer["filters"]), (kh, kw), int(layer["stride"]), (kh // 2, kw // 2)
                )
            )
            self.norms.append(nn.BatchNorm2d(int(layer["filters"]), track_running_stats=False))
            channels.append(int(layer["filters"]))
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers_spec):
            if i > 0:
                ins = [outs[i - 1]] + [outs[j] for j in layer["skips"]]
                h = min(t.shape[-2] for t in ins)
                w = min(t.shape[-1] for t in ins)
                x = torch.cat([F.adaptive_avg_pool2d(t, (h, w)) for t in ins], dim=1)
            outs.append(F.relu(self.norms[i](self.convs[i](x))))
        return self.head(outs[-1].mean(dim=(-2, -1)))


def build_network(program: dict[str, Any], in_shape: Sequence[int], out_dim: int) -> nn.Module:
    """The child network of ``program`` for inputs ``[B, *in_shape]`` and ``out_dim`` outputs."""
    kind = program.get("kind")
    if kind == "conv":
        if len(in_shape) != 3:
            raise ValueError(
                f"conv programs need image inputs [C, H, W], got shape {list(in_shape)}"
            )
        return ConvNet(program, int(in_shape[0]), out_dim)
    if kind == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        d = 1
        for s in in_shape:
            d *= int(s)
        for layer in program["layers"]:
            layers += [nn.Linear(d, int(layer["width"])), ACTIVATIONS[layer["activation"]]()]
            d = int(layer["width"])
        layers.append(nn.Linear(d, out_dim))
        return nn.Sequential(*layers)
    raise ValueError(f"program kind {kind!r} is not buildable; allowed: conv, mlp")

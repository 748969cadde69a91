"""Hand-batched forwards for stacked per-task parameters (no ``vmap`` dispatch overhead).

On a CPU the 1-40-40-1 MLP of the MAML paper is so small that the per-operator cost of
``vmap`` + ``functional_call`` dominates an outer iteration; writing the same network as
``torch.baddbmm`` over stacked weights gives identical math with a few large kernels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from metaplat.inner.adapt import Forward


def mlp_bmm_forward(num_linear: int, flatten: bool = False) -> Forward:
    """Forward of ``metaplat.nn.backbones.mlp`` (ReLU, ``num_linear`` Linear layers at even
    indices ``0, 2, 4, ...`` of the Sequential) over stacked params ``{"0.weight": [T, out, in], ...}``.

    ``x: [T, N, in]`` (or ``[T, N, *image]`` with ``flatten``) -> ``[T, N, out]``.
    """

    def fwd(p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(2) if flatten else x
        for i in range(num_linear):
            w, b = p[f"{2 * i}.weight"], p[f"{2 * i}.bias"]
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < num_linear - 1:
                h = torch.relu(h)
        return h

    return fwd

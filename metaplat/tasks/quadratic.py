"""Random quadratics f(θ) = ||Wθ − y||² (Andrychowicz et al. 2016), the learned-optimizer toy.

The paper's text says W and y are Gaussian; its released code (``problems.quadratic`` in
deepmind/learning-to-learn) draws them from U[0, 1) and starts θ at N(0, 0.01²). The default
here follows the code; ``distribution="normal"`` gives the text's version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from metaplat.tasks.base import OptimizationFamily, Split, TaskSpec

Distribution = Literal["uniform", "normal"]
_DISTRIBUTIONS: tuple[str, ...] = ("uniform", "normal")


@dataclasses.dataclass
class QuadraticProblem:
    """One quadratic (``W [d, d]``, ``y [d]``) or a stack of them (``W [T, d, d]``, ``y [T, d]``).

    ``theta0`` is the problem's own starting point (``[d]`` or ``[T, d]``), drawn from the
    spec seed so that every optimizer compared on a spec starts from the same θ.
    """

    W: torch.Tensor
    y: torch.Tensor
    theta0: torch.Tensor
    init_std: float = 0.01

    @property
    def dim(self) -> int:
        return int(self.y.shape[-1])

    @property
    def batched(self) -> bool:
        return self.y.dim() == 2

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """``||Wθ − y||²``: ``theta [d] -> []`` for one problem, ``[T, d] -> [T]`` for a stack.

        Pure and differentiable; ``torch.func.vmap`` over a leading dimension of ``theta`` works
        for one problem (many θ on the same f).
        """
        r = (self.W @ theta.unsqueeze(-1)).squeeze(-1) - self.y
        return (r * r).sum(-1)

    def loss_batch(self, theta: torch.Tensor) -> torch.Tensor:
        """``theta [T, d] -> [T]``, one θ per stacked problem; raises if this is one problem."""
        if not self.batched:
            raise ValueError("loss_batch needs a stacked problem (from build_batch); use loss()")
        if theta.shape != self.y.shape:
            raise ValueError(
                f"theta must have shape {tuple(self.y.shape)}, got {tuple(theta.shape)}"
            )
        return self.loss(theta)

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """Closed form ``2 Wᵀ(Wθ − y)``, same shape as ``theta`` (for oracles and fast paths)."""
        r = (self.W @ theta.unsqueeze(-1)).squeeze(-1) - self.y
        return 2.0 * (self.W.transpose(-1, -2) @ r.unsqueeze(-1)).squeeze(-1)

    def init_params(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh ``θ ~ N(0, init_std²)`` shaped like ``theta0``, drawn from ``generator``."""
        noise = torch.randn(self.theta0.shape, generator=generator, dtype=self.theta0.dtype).to(
            self.theta0.device
        )
        return noise * self.init_std

    def solution(self) -> torch.Tensor:
        """A least-squares minimiser ``argmin_θ f(θ)`` (``[d]`` or ``[T, d]``)."""
        return torch.linalg.lstsq(self.W, self.y.unsqueeze(-1)).solution.squeeze(-1)

    def to(self, device: Any) -> QuadraticProblem:
        return QuadraticProblem(
            self.W.to(device), self.y.to(device), self.theta0.to(device), self.init_std
        )

    def __getitem__(self, i: int | slice) -> QuadraticProblem:
        if not self.batched:
            raise TypeError("indexing needs a stacked problem")
        return QuadraticProblem(self.W[i], self.y[i], self.theta0[i], self.init_std)

    @staticmethod
    def stack(problems: Sequence[QuadraticProblem]) -> QuadraticProblem:
        return QuadraticProblem(
            torch.stack([p.W for p in problems]),
            torch.stack([p.y for p in problems]),
            torch.stack([p.theta0 for p in problems]),
            problems[0].init_std,
        )


@dataclasses.dataclass(frozen=True, repr=False)
class QuadraticFamily(OptimizationFamily):
    """Quadratics ``||Wθ − y||²`` with i.i.d. entries of ``W [dim, dim]`` and ``y [dim]``."""

    dim: int = 10
    """Dimension d of θ (the paper: 10)."""
    distribution: str = "uniform"
    """Entries of W and y: "uniform" U[0, 1) (the released code) or "normal" N(0, 1) (the text)."""
    init_std: float = 0.01
    """Standard deviation of the starting point θ0 ~ N(0, init_std²)."""

    name = "quadratic"
    description = "f(θ) = ||Wθ − y||²; the learned-optimizer benchmark of Andrychowicz et al. 2016"

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {self.dim!r}")
        if self.distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {', '.join(_DISTRIBUTIONS)}, "
                f"got {self.distribution!r}"
            )
        if not self.init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {self.init_std!r}")
        object.__setattr__(self, "init_std", float(self.init_std))

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "distribution": self.distribution, "init_std": self.init_std}

    def sample_params(self, rng: np.random.Generator, split: Split) -> dict[str, Any]:
        # W, y and θ0 are d² + 2d numbers: they derive from the seed in build() rather than
        # travel in the spec, which stays a few bytes however large d is.
        return {}

    def build(self, spec: TaskSpec) -> QuadraticProblem:
        """The spec's problem: ``W [d, d]``, ``y [d]``, ``theta0 [d]``, float32."""
        rng = np.random.default_rng([spec.seed, 1])
        d = self.dim
        if self.distribution == "uniform":
            w, y = rng.uniform(size=(d, d)), rng.uniform(size=d)
        else:
            w, y = rng.standard_normal((d, d)), rng.standard_normal(d)
        theta0 = rng.standard_normal(d) * self.init_std
        f32 = torch.float32
        return QuadraticProblem(
            torch.as_tensor(w, dtype=f32),
            torch.as_tensor(y, dtype=f32),
            torch.as_tensor(theta0, dtype=f32),
            self.init_std,
        )

    def build_batch(self, specs: Sequence[TaskSpec], device: Any = "cpu") -> QuadraticProblem:
        """``W [T, d, d]``, ``y [T, d]``, ``theta0 [T, d]`` for ``T = len(specs)``."""
        return QuadraticProblem.stack([self.build(s) for s in specs]).to(device)

    def describe(self) -> dict[str, Any]:
        dist = "U[0, 1)" if self.distribution == "uniform" else "N(0, 1)"
        return super().describe() | {
            "params": f"W [{self.dim}, {self.dim}], y [{self.dim}] i.i.d. {dist}, from the seed",
            "init": f"theta0 ~ N(0, {self.init_std}^2)",
        }

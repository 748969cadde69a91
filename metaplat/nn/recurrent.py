"""RL²'s recurrent policy: a GRU over ``(obs, previous action, previous reward, done)``
with policy and value heads, used as pure functions of a parameter dict.

The module only fixes shapes; every call goes through :func:`torch.func.functional_call`
with explicit ``params``, so the learner differentiates a plain function and workers run
the same function on broadcast parameters. Rollouts (one step at a time) and the PPO
update (a whole trial at once) both call :meth:`GRUPolicy.unroll`, so they compute the
same numbers.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.func import functional_call


@dataclasses.dataclass(frozen=True)
class GRUPolicy:
    """Shapes of the policy; ``input_size = obs_dim + num_actions + 2``.

    Attributes:
        obs_dim: flat observation size.
        num_actions: discrete actions.
        hidden_size: GRU units (256 in the paper).
    """

    obs_dim: int
    num_actions: int
    hidden_size: int = 256

    def __post_init__(self) -> None:
        for f in ("obs_dim", "num_actions", "hidden_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")

    @property
    def input_size(self) -> int:
        return self.obs_dim + self.num_actions + 2

    def module(self) -> _Net:
        return _net(self.input_size, self.hidden_size, self.num_actions)

    def init_params(self, seed: int) -> dict[str, torch.Tensor]:
        """Fresh parameters from ``seed``: PyTorch's GRU init, orthogonal heads with gains
        0.01 (policy: near-uniform start) and 1 (value), zero biases."""
        gen = torch.Generator().manual_seed(seed)
        h = self.hidden_size
        bound = h**-0.5

        def unif(*shape: int) -> torch.Tensor:
            return (torch.rand(*shape, generator=gen) * 2 - 1) * bound

        def ortho(rows: int, cols: int, gain: float) -> torch.Tensor:
            q, r = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=gen))
            q = q * torch.sign(torch.diagonal(r))
            return gain * (q if rows >= cols else q.T)[:rows, :cols].contiguous()

        return {
            "gru.weight_ih_l0": unif(3 * h, self.input_size),
            "gru.weight_hh_l0": unif(3 * h, h),
            "gru.bias_ih_l0": unif(3 * h),
            "gru.bias_hh_l0": unif(3 * h),
            "pi.weight": ortho(self.num_actions, h, 0.01),
            "pi.bias": torch.zeros(self.num_actions),
            "v.weight": ortho(1, h, 1.0),
            "v.bias": torch.zeros(1),
        }

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Zeros ``[B, H]``: the hidden state at the start of every trial."""
        return torch.zeros(batch, self.hidden_size, device=device)

    def inputs(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        done: torch.Tensor,
    ) -> torch.Tensor:
        """``obs ⊕ one_hot(prev_action) ⊕ prev_reward ⊕ done`` -> ``[..., input_size]``;
        ``prev_action = -1`` (trial start) gives an all-zero one-hot."""
        a = torch.nn.functional.one_hot(prev_action.clamp(min=0), self.num_actions).float()
        a = a * (prev_action >= 0).unsqueeze(-1).float()
        return torch.cat(
            [obs.float(), a, prev_reward.float().unsqueeze(-1), done.float().unsqueeze(-1)], -1
        )

    def unroll(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, h0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the GRU over ``x [T, B, input_size]`` from ``h0 [B, H]``.

        Returns ``(logits [T, B, A], values [T, B], h_T [B, H])``. Gradients flow through
        the whole sequence (full backprop through the trial; trials here are <= 1000
        steps, so no truncation is needed).
        """
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = functional_call(
            self.module(), params, (x, h0)
        )
        return out


class _Net(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_actions: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size)
        self.pi = nn.Linear(hidden_size, num_actions)
        self.v = nn.Linear(hidden_size, 1)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hs, h_t = self.gru(x, h0.unsqueeze(0))
        return self.pi(hs), self.v(hs).squeeze(-1), h_t.squeeze(0)


_NETS: dict[tuple[int, int, int], _Net] = {}


def _net(input_size: int, hidden_size: int, num_actions: int) -> _Net:
    """One shape-holder module per shape (its own parameters are never used)."""
    key = (input_size, hidden_size, num_actions)
    if key not in _NETS:
        _NETS[key] = _Net(*key).to("meta")
    return _NETS[key]

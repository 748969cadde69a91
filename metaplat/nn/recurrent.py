"""RL²'s recurrent policy: a GRU over ``(obs, previous action, previous reward, done)``
with a policy head and a value head, used as pure functions of a parameter dict.

Two policy heads, picked from the environment by :meth:`GRUPolicy.for_env`:

* discrete actions (``num_actions`` set): a categorical over ``num_actions`` logits;
* continuous actions (``action_dim`` set): a diagonal Gaussian with a state-independent,
  learned log-std (``params["log_std"]``). The Gaussian lives in *policy units*, the env's
  box ``[-max_action, max_action]^action_dim`` rescaled to ``[-1, 1]``, so the same
  initial spread suits any bound. A sample ``u`` is clipped only to step the env
  (``max_action * clip(u, -1, 1)``); its log-probability (and PPO's ratio) is computed on
  the unclipped ``u``, which keeps the density exact and the gradient non-zero at the bounds.

The module only fixes shapes; every call goes through :func:`torch.func.functional_call`
with explicit ``params``, so the learner differentiates a plain function and workers run
the same function on broadcast parameters. Rollouts (one step at a time) and the PPO
update (a whole trial at once) both call :meth:`GRUPolicy.unroll`, so they compute the
same numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from environments.noise import normal, uniform
from metaplat.inner.rl import categorical_logp_entropy, gaussian_logp_entropy

CELLS = ("gru", "lngru")
"""Recurrent cells of :class:`GRUPolicy`: ``"gru"``, PyTorch's GRU (tanh candidate, the
paper's cell); ``"lngru"``, a GRU with layer-normalised gate pre-activations, a ReLU
candidate and an update gate biased towards keeping the state (:class:`LNGRU`)."""


@dataclasses.dataclass(frozen=True)
class GRUPolicy:
    """Shapes of the policy; ``input_size = obs_dim + head_size + 2`` (``+ 2`` more with
    ``time_inputs``).

    Attributes:
        obs_dim: flat observation size.
        num_actions: discrete actions, or None for a continuous (Gaussian) policy.
        hidden_size: GRU units (256 in the paper).
        action_dim: continuous action size (None for a discrete policy).
        max_action: the continuous env's per-coordinate bound (actions lie in
            ``[-max_action, max_action]``); unused by a discrete policy.
        time_inputs: also feed the step within the episode and within the trial, each
            as a fraction in ``[0, 1)`` (not in the paper; helps the value head, whose
            target depends on the steps left in the trial).
        cell: the recurrent cell, one of :data:`CELLS`.
    """

    obs_dim: int
    num_actions: int | None
    hidden_size: int = 256
    action_dim: int | None = None
    max_action: float = 1.0
    time_inputs: bool = False
    cell: str = "gru"

    def __post_init__(self) -> None:
        if (self.num_actions is None) == (self.action_dim is None):
            raise ValueError(
                "exactly one of num_actions (discrete) and action_dim (continuous) must be "
                f"set, got num_actions={self.num_actions}, action_dim={self.action_dim}"
            )
        for f in ("obs_dim", "num_actions", "hidden_size", "action_dim"):
            value = getattr(self, f)
            if value is not None and value < 1:
                raise ValueError(f"{f} must be >= 1, got {value}")
        if not self.max_action > 0:
            raise ValueError(f"max_action must be > 0, got {self.max_action}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {list(CELLS)}, got {self.cell!r}")

    @classmethod
    def for_env(
        cls, env: Any, hidden_size: int, time_inputs: bool = False, cell: str = "gru"
    ) -> GRUPolicy:
        """The policy for a batched env: categorical if ``env.num_actions`` is set, else a
        Gaussian over ``env.action_dim`` coordinates bounded by ``env.max_action``."""
        if env.num_actions is not None:
            return cls(
                env.obs_dim, env.num_actions, hidden_size, time_inputs=time_inputs, cell=cell
            )
        if getattr(env, "max_action", None) is None:
            raise ValueError(f"{type(env).__name__} has continuous actions but no max_action bound")
        return cls(
            env.obs_dim,
            None,
            hidden_size,
            env.action_dim,
            float(env.max_action),
            time_inputs,
            cell,
        )

    @property
    def continuous(self) -> bool:
        return self.action_dim is not None

    @property
    def head_size(self) -> int:
        """Policy-head outputs: logits (discrete) or Gaussian means (continuous)."""
        return int(self.action_dim or self.num_actions or 0)

    @property
    def input_size(self) -> int:
        return self.obs_dim + self.head_size + 2 + (2 if self.time_inputs else 0)

    def module(self) -> _Net:
        return _net(self.input_size, self.hidden_size, self.head_size, self.cell)

    def init_params(self, seed: int) -> dict[str, torch.Tensor]:
        """Fresh parameters from ``seed``: PyTorch's GRU init (``lngru``: the same weights,
        unit layer-norm gains and zero shifts instead of biases), orthogonal heads with gains
        0.01 (policy: near-uniform / near-zero-mean start) and 1 (value), zero biases; a
        Gaussian policy adds ``log_std = 0`` (std 1 in policy units: the whole box)."""
        gen = torch.Generator().manual_seed(seed)
        h = self.hidden_size
        bound = h**-0.5

        def unif(*shape: int) -> torch.Tensor:
            return (torch.rand(*shape, generator=gen) * 2 - 1) * bound

        def ortho(rows: int, cols: int, gain: float) -> torch.Tensor:
            q, r = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=gen))
            q = q * torch.sign(torch.diagonal(r))
            return gain * (q if rows >= cols else q.T)[:rows, :cols].contiguous()

        if self.cell == "gru":
            params = {
                "gru.weight_ih_l0": unif(3 * h, self.input_size),
                "gru.weight_hh_l0": unif(3 * h, h),
                "gru.bias_ih_l0": unif(3 * h),
                "gru.bias_hh_l0": unif(3 * h),
            }
        else:
            params = {
                "gru.weight_ih": unif(3 * h, self.input_size),
                "gru.weight_hh": unif(3 * h, h),
                "gru.ln_ih_weight": torch.ones(3, h),
                "gru.ln_ih_bias": torch.zeros(3, h),
                "gru.ln_hh_weight": torch.ones(3, h),
                "gru.ln_hh_bias": torch.zeros(3, h),
            }
        params |= {
            "pi.weight": ortho(self.head_size, h, 0.01),
            "pi.bias": torch.zeros(self.head_size),
            "v.weight": ortho(1, h, 1.0),
            "v.bias": torch.zeros(1),
        }
        if self.continuous:
            params["log_std"] = torch.zeros(self.head_size)
        return params

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Zeros ``[B, H]``: the hidden state at the start of every trial."""
        return torch.zeros(batch, self.hidden_size, device=device)

    def inputs(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        done: torch.Tensor,
        time: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """``obs ⊕ action code ⊕ prev_reward ⊕ done`` (``⊕ time`` with ``time_inputs``:
        ``(step in episode / horizon, step in trial / trial length)``, the same for every
        row) -> ``[..., input_size]``.

        Discrete: the code is ``one_hot(prev_action)``, all zeros for ``prev_action = -1``
        (trial start). Continuous: the executed previous action ``[..., action_dim]`` in
        policy units (``prev_action / max_action``, in ``[-1, 1]``; zeros at trial start).
        """
        if self.continuous:
            a = prev_action.float() / self.max_action
        else:
            a = torch.nn.functional.one_hot(prev_action.clamp(min=0), self.head_size).float()
            a = a * (prev_action >= 0).unsqueeze(-1).float()
        parts = [obs.float(), a, prev_reward.float().unsqueeze(-1), done.float().unsqueeze(-1)]
        if self.time_inputs:
            if time is None:
                raise ValueError("this policy has time_inputs; pass time=(episode, trial)")
            parts.append(
                torch.tensor(time, dtype=torch.float32, device=obs.device).expand(
                    *obs.shape[:-1], 2
                )
            )
        return torch.cat(parts, -1)

    def unroll(
        self,
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        h0: torch.Tensor,
        loop: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the GRU over ``x [T, B, input_size]`` from ``h0 [B, H]``.

        Returns ``(head [T, B, head_size], values [T, B], h_T [B, H])``, ``head`` being the
        logits (discrete) or the Gaussian means (continuous). Gradients flow through the
        whole sequence (full backprop through the trial; trials here are <= 1000 steps, so
        no truncation is needed).

        ``loop``: the plain GRU as a Python loop over the steps (:func:`gru_loop`, the same
        function as ``nn.GRU``) instead of PyTorch's GRU op, so that ``torch.compile`` can
        fuse each step's element-wise work (the LN-GRU is such a loop already).
        """
        weights = {k: v for k, v in params.items() if k != "log_std"}
        if loop and self.cell == "gru":
            hs, h_t = gru_loop(weights, x, h0)
            return _heads(weights, hs) + (h_t,)
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = functional_call(
            self.module(), weights, (x, h0)
        )
        return out

    def log_prob_entropy(
        self, params: dict[str, torch.Tensor], head: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``sample`` (int64 ``[...]`` or unclipped ``[..., action_dim]``
        in policy units) under the head's distribution, and its entropy; both ``[...]``."""
        if self.continuous:
            return gaussian_logp_entropy(head, params["log_std"], sample)
        return categorical_logp_entropy(head, sample)

    def sample(
        self,
        params: dict[str, torch.Tensor],
        head: torch.Tensor,
        keys: torch.Tensor,
        counter: int,
    ) -> torch.Tensor:
        """One draw per row of ``head [B, head_size]`` from counter-based noise on ``keys
        [B]`` (so a row's draw does not depend on the batch it is in): inverse CDF on a
        float64 uniform (discrete, int64 ``[B]``) or ``mean + std * normal`` with one
        normal per coordinate (continuous, unclipped ``[B, action_dim]``)."""
        if self.continuous:
            d = self.head_size
            counters = counter * d + torch.arange(d, device=keys.device)
            eps = normal(keys.unsqueeze(-1), counters, head.dtype)
            return head + torch.exp(params["log_std"]) * eps
        u = uniform(keys, counter, torch.float64)
        cdf = torch.cumsum(torch.log_softmax(head, dim=-1).double().exp(), -1)
        return (u.unsqueeze(-1) >= cdf).sum(-1).clamp(max=self.head_size - 1)

    def mode(self, head: torch.Tensor) -> torch.Tensor:
        """The greedy draw: the most likely action, or the Gaussian mean."""
        return head if self.continuous else head.argmax(-1)

    def env_action(self, sample: torch.Tensor) -> torch.Tensor:
        """What the env is stepped with: discrete actions as they are; continuous samples
        clipped to ``[-1, 1]`` and scaled to ``[-max_action, max_action]``."""
        if self.continuous:
            return sample.clamp(-1.0, 1.0) * self.max_action
        return sample


def gru_loop(
    params: dict[str, torch.Tensor], x: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.GRU``'s function (one layer, PyTorch's gate order: reset, update, candidate) as
    a loop over ``x [T, B, I]`` from ``h0 [B, H]`` on the ``gru.*_l0`` entries of
    ``params``: ``(hs [T, B, H], h_T [B, H])``."""
    w_hh, b_hh = params["gru.weight_hh_l0"], params["gru.bias_hh_l0"]
    gi = x @ params["gru.weight_ih_l0"].T + params["gru.bias_ih_l0"]
    h, out = h0, []
    for i in gi.unbind(0):  # unbind, not gi[t]: see LNGRU.forward
        i_r, i_z, i_n = i.chunk(3, -1)
        g_r, g_z, g_n = (h @ w_hh.T + b_hh).chunk(3, -1)
        r = torch.sigmoid(i_r + g_r)
        z = torch.sigmoid(i_z + g_z)
        n = torch.tanh(i_n + r * g_n)
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out), h


def _heads(params: dict[str, torch.Tensor], hs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy head and the value head on hidden states ``hs [..., H]``, in float32."""
    hs = hs.float()
    with torch.autocast(hs.device.type, enabled=False):
        head = nn.functional.linear(hs, params["pi.weight"], params["pi.bias"])
        value = nn.functional.linear(hs, params["v.weight"], params["v.bias"])
    return head, value.squeeze(-1)


class LNGRU(nn.Module):
    """A GRU cell with layer-normalised gate pre-activations (each of the reset, update and
    candidate blocks of the input and the recurrent projection normalised on its own), a
    ReLU candidate and an update gate biased by +1 towards keeping the state:

        i = LN(W_i x),  g = LN(W_h h)               (both [3, H]: reset, keep, candidate)
        r = σ(i_r + g_r),  k = σ(i_k + g_k + 1),  n = relu(i_n + r * g_n)
        h' = (1 - k) * n + k * h

    A tanh candidate bounds every unit to [-1, 1]; a ReLU one lets a unit add up evidence
    over many steps (counts and sums of rewards), which is what a belief over a bandit or
    an MDP is made of. The layer norms keep the growing state's projections at unit scale.
    The design follows the GRU in the repository of the public PPO reproduction named in
    REFERENCES.md (whose reported runs used an LSTM). Same call as ``nn.GRU`` (one layer):
    ``(x [T, B, I], h0 [1, B, H]) -> (hs [T, B, H], h_T [1, B, H])``."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        h = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * h, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * h, h))
        self.ln_ih_weight = nn.Parameter(torch.empty(3, h))
        self.ln_ih_bias = nn.Parameter(torch.empty(3, h))
        self.ln_hh_weight = nn.Parameter(torch.empty(3, h))
        self.ln_hh_bias = nn.Parameter(torch.empty(3, h))

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = h0[0]
        width = h.shape[-1]

        def norm(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            z = z.unflatten(-1, (3, width))
            return nn.functional.layer_norm(z, (width,)) * weight + bias

        # the input projection of every step at once; only the recurrence loops
        gi = norm(x @ self.weight_ih.T, self.ln_ih_weight, self.ln_ih_bias)
        out = []
        # unbind, not gi[t]: the backward of each gi[t] writes a zero gradient the size of all
        # of gi, which made the backward quadratic in the trial length (forward and backward of
        # 500 steps x 128 trials, H=128, one CPU thread: 22.2 s with gi[t], 0.9 s with unbind;
        # benchmarks/rl2_cells.py prints the cost per step at 500 vs 100 steps)
        for i in gi.unbind(0):
            g = norm(h @ self.weight_hh.T, self.ln_hh_weight, self.ln_hh_bias)
            r = torch.sigmoid(i[..., 0, :] + g[..., 0, :])
            keep = torch.sigmoid(i[..., 1, :] + g[..., 1, :] + 1.0)
            n = torch.relu(i[..., 2, :] + r * g[..., 2, :])
            h = (1 - keep) * n + keep * h.to(n.dtype)
            out.append(h)
        return torch.stack(out), h.unsqueeze(0)


class _Net(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, head_size: int, cell: str = "gru"):
        super().__init__()
        self.gru: nn.Module = (
            nn.GRU(input_size, hidden_size) if cell == "gru" else LNGRU(input_size, hidden_size)
        )
        self.pi = nn.Linear(hidden_size, head_size)
        self.v = nn.Linear(hidden_size, 1)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hs, h_t = self.gru(x, h0.unsqueeze(0))
        # under a bfloat16 autocast (RL2Config.learner_dtype) the GRU runs in bfloat16 but
        # the heads stay float32, so log-probabilities compare with the rollout's (the casts
        # are no-ops on CPU, whose autocast GRU returns float32; cuDNN's returns bfloat16)
        heads = {
            "pi.weight": self.pi.weight,
            "pi.bias": self.pi.bias,
            "v.weight": self.v.weight,
            "v.bias": self.v.bias,
        }
        return _heads(heads, hs) + (h_t.float().squeeze(0),)


_NETS: dict[tuple[int, int, int, str], _Net] = {}


def _net(input_size: int, hidden_size: int, head_size: int, cell: str) -> _Net:
    """One shape-holder module per shape (its own parameters are never used)."""
    key = (input_size, hidden_size, head_size, cell)
    if key not in _NETS:
        _NETS[key] = _Net(*key).to("meta")
    return _NETS[key]

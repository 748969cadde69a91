"""Seconds per outer iteration of the gradient-based methods: vectorised vs a per-task loop.

Baseline: the straightforward implementation of the same math that learn2learn / higher /
torchopt users write -- ``for task in batch:`` adapt with ``torch.autograd.grad``
(``create_graph=True`` for second order), query loss, ``backward()``, then ``torch.optim.Adam``.
Here the baseline's network is written with ``F.linear`` directly (cheaper per call than
``functional_call`` or module patching), so the ratio is not flattered.

Both sides use the same pre-built episodes, the same initial weights and the same outer
optimizer. Three vectorised kernels are timed: ``vmap`` (``vmap(functional_call)`` + autograd,
works for any model), ``bmm+ag`` (hand-batched forward and inner gradient, autograd for the
meta-gradient) and ``bmm`` (the default for MLPs: the whole meta-gradient written out, with
hand Hessian-vector products and no autograd; see ``metaplat/inner/kernels.py``). The timed
region is one full meta-gradient + outer update. Medians over
iterations after a warm-up. Then both train MAML for the same iterations with the same seed
and are scored on the same fresh tasks (equal-MSE check).

    PYTHONPATH=. python benchmarks/maml_speed.py [--iters 30] [--train-iters 500] [--threads 1]
        [--no-compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metaplat.estimators.backprop import LR_PREFIX, Kernel, MetaGradJob, ModelSpec, make_kernels
from metaplat.inner.adapt import InnerRule, Params
from metaplat.optim.functional import adam_init, adam_update, sgd_update
from metaplat.tasks.base import Episode, Split
from metaplat.tasks.registry import make_family

MODEL = ModelSpec(kind="mlp", in_shape=(1,), out_dim=1, hidden=(40, 40))
HEAD = MODEL.head_names()
META_BATCH, INNER_LR, OUTER_LR = 25, 0.01, 1e-3


# -- the per-task-loop baseline ---------------------------------------------------------
def net(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(F.linear(x, p["0.weight"], p["0.bias"]))
    h = torch.relu(F.linear(h, p["2.weight"], p["2.bias"]))
    return F.linear(h, p["4.weight"], p["4.bias"])


MODULE = MODEL.build()


def module_net(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The same network through ``torch.func.functional_call`` on the ``nn.Sequential``."""
    return functional_call(MODULE, p, (x,))


def loop_step(
    method: str,
    steps: int,
    theta: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    ep: Episode,
    net: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor] = net,
) -> None:
    """One outer iteration, one task at a time (theta are leaf tensors owned by ``opt``)."""
    opt.zero_grad()
    t_num = ep.support_x.shape[0]
    weights = {k: v for k, v in theta.items() if not k.startswith(LR_PREFIX)}
    if method == "reptile":
        x, y = torch.cat([ep.support_x, ep.query_x], 1), torch.cat([ep.support_y, ep.query_y], 1)
        for t in range(t_num):
            p = {k: v.detach().clone().requires_grad_() for k, v in weights.items()}
            for _ in range(steps):
                g = torch.autograd.grad(F.mse_loss(net(p, x[t]), y[t]), list(p.values()))
                p = {
                    k: (v - INNER_LR * gi).detach().requires_grad_()
                    for (k, v), gi in zip(p.items(), g, strict=True)
                }
            for k, v in weights.items():
                v.grad = (0 if v.grad is None else v.grad) + (v.detach() - p[k].detach()) / t_num
        opt.step()
        return
    second = method in ("maml", "metasgd", "anil")
    names = list(HEAD) if method == "anil" else list(weights)
    for t in range(t_num):
        p = dict(weights)
        for _ in range(steps):
            loss = F.mse_loss(net(p, ep.support_x[t]), ep.support_y[t])
            g = torch.autograd.grad(loss, [p[n] for n in names], create_graph=second)
            p = dict(p)
            for n, gi in zip(names, g, strict=True):
                lr = theta[LR_PREFIX + n] if method == "metasgd" else INNER_LR
                p[n] = p[n] - lr * gi
                if not second:
                    p[n] = p[n].detach().requires_grad_()
        q = F.mse_loss(net(p, ep.query_x[t]), ep.query_y[t]) / t_num
        if second:
            q.backward()
        else:
            for n, gi in zip(names, torch.autograd.grad(q, [p[n] for n in names]), strict=True):
                prev = weights[n].grad
                weights[n].grad = gi if prev is None else prev + gi
    opt.step()


# -- the vectorised implementation (metaplat's job, called in-process) ------------------
class Vectorised:
    def __init__(
        self,
        method: str,
        steps: int,
        params: Params,
        kernel: Kernel = "auto",
        by_hand: bool = True,
        compile: bool = False,
    ):
        kind = {
            "maml": "second_order",
            "metasgd": "second_order",
            "anil": "second_order",
            "fomaml": "first_order",
            "reptile": "reptile",
        }[method]
        rule = InnerRule(steps=steps, lr=INNER_LR, names=HEAD if method == "anil" else None)
        self.job = MetaGradJob(MODEL, rule, kind, kernel, compile=compile)  # type: ignore[arg-type]
        self.kernels = make_kernels(MODEL, kernel, torch.device("cpu"), compile)
        if not by_hand:  # the bmm forward and inner gradient, autograd for the meta-gradient
            self.kernels = dataclasses.replace(self.kernels, meta_grad=None)
        self.params = dict(params)
        self.reptile = method == "reptile"
        self.opt = adam_init(self.params)

    def step(self, ep: Episode) -> None:
        r = self.job.compute(self.params, ep, self.kernels)
        g = {k: v / r.num_ok for k, v in r.grad_sum.items()}
        if self.reptile:
            self.params = sgd_update(self.params, g, 1.0)
        else:
            self.params, self.opt = adam_update(self.params, g, self.opt, OUTER_LR)


def initial(method: str, seed: int) -> Params:
    p = MODEL.init_params(seed)
    if method == "metasgd":
        p |= {LR_PREFIX + k: torch.full_like(v, INNER_LR) for k, v in p.items()}
    return p


def episodes(n: int, seed: int, split: Split = "train") -> list[Episode]:
    fam = make_family("sinusoid", {"num_support": 10, "num_query": 10})
    rng = np.random.default_rng(seed)
    return [fam.build_batch(fam.sample(rng, split, META_BATCH)) for _ in range(n)]  # type: ignore[attr-defined]


def median_times(
    fns: list[Callable[[Episode], None]], eps: list[Episode], warmup: int = 3
) -> list[float]:
    """Median CPU seconds (``time.process_time``; one torch thread, so this is the wall time of
    an idle core) per call of each function. Calls are interleaved episode by episode and CPU
    time is used because the machine may be shared: other processes' load hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for i, ep in enumerate(eps):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.process_time()
            fn(ep)
            if i >= warmup:
                ts.append(time.process_time() - t0)
    return [statistics.median(ts) for ts in times]


def post_mse(params: Params, eval_eps: list[Episode], steps: int) -> tuple[float, float]:
    """Mean query MSE before and after ``steps`` inner SGD steps (per task, plain loop)."""
    pre, post = [], []
    for ep in eval_eps:
        for t in range(ep.support_x.shape[0]):
            p = {
                k: v.detach().clone().requires_grad_()
                for k, v in params.items()
                if not k.startswith(LR_PREFIX)
            }
            pre.append(float(F.mse_loss(net(p, ep.query_x[t]), ep.query_y[t]).detach()))
            for _ in range(steps):
                g = torch.autograd.grad(
                    F.mse_loss(net(p, ep.support_x[t]), ep.support_y[t]), list(p.values())
                )
                p = {
                    k: (v - INNER_LR * gi).detach().requires_grad_()
                    for (k, v), gi in zip(p.items(), g, strict=True)
                }
            post.append(float(F.mse_loss(net(p, ep.query_x[t]), ep.query_y[t]).detach()))
    return float(np.mean(pre)), float(np.mean(post))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=30, help="timed outer iterations per cell")
    ap.add_argument(
        "--train-iters", type=int, default=500, help="iterations of the equal-MSE check (0: skip)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="maml,fomaml,reptile,metasgd,anil")
    ap.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile'd kernel (bmm-c)"
    )
    args = ap.parse_args()
    compiled = not args.no_compile
    torch.set_num_threads(args.threads)
    eps = episodes(args.iters + 3, seed=0)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); meta-batch {META_BATCH}, K=10, "
        f"1-40-40-1 MLP;"
        f" median CPU s/iter over {args.iters} iterations"
    )
    print(
        "baselines: 'loop' = per-task loop with F.linear; 'loop-module' = per-task loop through\n"
        "functional_call on the nn.Sequential (what module-based libraries pay per call).\n"
        "speed-ups are relative to 'loop', the faster baseline.\n"
        "'bmm-c' = bmm through torch.compile (its one-off compile time in the last column)."
    )
    print(
        f"{'method':8} {'steps':>5} {'loop':>8} {'loop-module':>11} {'vmap':>8} {'bmm+ag':>8} "
        f"{'bmm':>8} {'bmm-c':>8} {'vmap x':>7} {'bmm+ag x':>8} {'bmm x':>7} {'bmm-c x':>7} "
        f"{'compile':>7}"
    )
    for method in args.methods.split(","):
        for steps in (1, 5):

            def make_opt(theta: dict[str, torch.Tensor]) -> torch.optim.Optimizer:
                return (
                    torch.optim.SGD(theta.values(), lr=1.0)
                    if method == "reptile"  # noqa: B023
                    else torch.optim.Adam(theta.values(), lr=OUTER_LR)
                )

            theta = {k: v.clone().requires_grad_() for k, v in initial(method, 0).items()}
            theta2 = {k: v.clone().requires_grad_() for k, v in initial(method, 0).items()}
            opt, opt2 = make_opt(theta), make_opt(theta2)
            vmap = Vectorised(method, steps, initial(method, 0), "vmap")
            bmm_ag = Vectorised(method, steps, initial(method, 0), "bmm", by_hand=False)
            bmm = Vectorised(method, steps, initial(method, 0), "bmm")
            fns: list[Callable[[Episode], None]] = [
                lambda ep: loop_step(method, steps, theta, opt, ep),  # noqa: B023
                lambda ep: loop_step(method, steps, theta2, opt2, ep, module_net),  # noqa: B023
                vmap.step,
                bmm_ag.step,
                bmm.step,
            ]
            t_compile = math.nan
            if compiled:
                bmm_c = Vectorised(method, steps, initial(method, 0), "bmm", compile=True)
                t0 = time.perf_counter()
                bmm_c.step(eps[0])  # compiles (same parameters as the others' warm-up step)
                bmm_c = Vectorised(method, steps, initial(method, 0), "bmm", compile=True)
                t_compile = time.perf_counter() - t0
                fns.append(bmm_c.step)
            times = median_times(fns, eps)
            base, mod, tv, ta, tb = times[:5]
            tc = times[5] if compiled else math.nan
            print(
                f"{method:8} {steps:>5} {base:>8.4f} {mod:>11.4f} {tv:>8.4f} {ta:>8.4f} "
                f"{tb:>8.4f} {tc:>8.4f} {base / tv:>6.1f}x {base / ta:>7.1f}x {base / tb:>6.1f}x "
                f"{base / tc:>6.1f}x {t_compile:>6.1f}s",
                flush=True,
            )
    if args.train_iters:
        n, steps = args.train_iters, 5
        print(
            f"\nequal-MSE check: second-order MAML, {n} iterations, {steps} inner steps, "
            "same seed and tasks"
        )
        train = episodes(n, seed=1)
        theta = {k: v.clone().requires_grad_() for k, v in initial("maml", 0).items()}
        opt = torch.optim.Adam(theta.values(), lr=OUTER_LR)
        t0 = time.perf_counter()
        for ep in train:
            loop_step("maml", steps, theta, opt, ep)
        t_loop = time.perf_counter() - t0
        rows = [("per-task loop", theta, t_loop)]
        for label, compile in (("vectorised", False), ("vec. compiled", True))[: 1 + compiled]:
            vec = Vectorised("maml", steps, initial("maml", 0), compile=compile)
            t0 = time.perf_counter()
            for ep in train:
                vec.step(ep)
            rows.append((label, vec.params, time.perf_counter() - t0))
        test = episodes(24, seed=2, split="test")  # 600 fresh tasks
        for label, params, secs in rows:
            pre, post = post_mse(params, test, steps)
            print(
                f"{label:14} train {secs:7.1f} s   test MSE pre {pre:.3f}  "
                f"post({steps} steps) {post:.3f}"
            )
        for label, params, _ in rows[1:]:
            diff = max(float((theta[k].detach() - params[k]).abs().max()) for k in params)
            print(f"max |param difference| loop vs {label} after training: {diff:.2e}")


if __name__ == "__main__":
    main()

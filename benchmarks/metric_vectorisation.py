"""Meta-gradient time of one shard: vmap over all tasks vs vmap one task at a time vs a loop.

    PYTHONPATH=. python benchmarks/metric_vectorisation.py [--device cuda] [--tasks 8]

ProtoNets with the Conv4 embedding on 5-way 1-shot, 15-query episodes of 28x28 images
(synthetic clusters, so no data set is needed). Prints the median of ``--repeats`` timings of
each path and its ratio to the per-task Python loop (the baseline), from one run. This is
what picks ``auto_chunk``'s CPU default.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.func import functional_call, grad

from metaplat.outer._metric_common import EmbeddingSpec, episode_loss
from metaplat.outer.protonet import ProtoNetSpec
from metaplat.tasks.base import Episode


def synthetic_batch(tasks: int, ways: int, shots: int, query: int, device: torch.device) -> Episode:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(tasks, ways, 1, 28, 28, generator=g)

    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(ways).repeat_interleave(k).expand(tasks, -1)
        x = centres[torch.arange(tasks)[:, None], y] + 0.5 * torch.randn(
            tasks, ways * k, 1, 28, 28, generator=g
        )
        return x, y

    sx, sy = draw(shots)
    qx, qy = draw(query)
    return Episode(sx, sy, qx, qy).to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    model = ProtoNetSpec(EmbeddingSpec("conv4", (1, 28, 28), 64, 64)).build().to(dev)
    params = {k: v.detach() for k, v in model.named_parameters()}
    ep = synthetic_batch(a.tasks, 5, 1, 15, dev)

    def vmapped(chunk: int | None) -> None:
        grad(lambda p: episode_loss(model, p, ep, 5, chunk)[0].sum())(params)

    def loop() -> None:
        def total(p: dict[str, torch.Tensor]) -> torch.Tensor:
            out = torch.zeros(())
            for t in range(a.tasks):
                logits = functional_call(
                    model, p, (ep.support_x[t], ep.support_y[t], ep.query_x[t]), {"num_ways": 5}
                )
                out = out + torch.nn.functional.cross_entropy(logits, ep.query_y[t])
            return out

        grad(total)(params)

    def timed(f: object) -> float:
        f()  # type: ignore[operator]
        times = []
        for _ in range(a.repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            f()  # type: ignore[operator]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    base = timed(loop)
    print(
        f"ProtoNet Conv4 meta-gradient, {a.tasks} tasks of 5w1s/15q, {dev}, "
        f"{a.threads} thread(s); median of {a.repeats}"
    )
    print(f"{'path':<26}{'seconds':>10}{'vs loop':>10}")
    print(f"{'per-task loop (baseline)':<26}{base:>10.3f}{1.0:>10.2f}")
    for name, chunk in (
        ("vmap, all tasks", None),
        ("vmap, chunk_size=4", 4),
        ("chunk_size=1 (loop)", 1),
    ):
        t = timed(lambda c=chunk: vmapped(c))
        print(f"{name:<26}{t:>10.3f}{t / base:>10.2f}")


if __name__ == "__main__":
    main()

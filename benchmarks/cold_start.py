"""Cold start: seconds from launching ``metaplat run SPEC`` to the sweep's first result.

Target: < 30 s on a laptop. Baseline, measured in the same run: the floor any embedded-Ray
program pays (a fresh ``python -c "import ray; ray.init(...); ray.shutdown()"``), so the
ratio shows what metaplat + Tune add on top of Ray's own start.

    python benchmarks/cold_start.py [SPEC] [--repeats 3] [--toy] [--dashboard]

SPEC defaults to tune_specs/quickstart.yaml. With ``--toy`` (or when SPEC does not exist)
it runs a one-trial toy spec (``tests/toy_outer.py``: a scalar fitted by gradient descent on
sinusoid tasks) from a temp dir, so the launch path is measured before any real method
exists. Each run uses a fresh storage folder and is interrupted (SIGINT, Tune stops
gracefully) as soon as the first result line appears.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "first result"  # metaplat.tuning.callbacks.FIRST_RESULT_MARKER (not imported: no Ray here)
TARGET_S = 30.0

TOY_SPEC = textwrap.dedent(
    """
    name: cold_start_toy
    task: {family: sinusoid, config: {num_support: 10}}
    method: {name: "toy_outer:ToyLoop", config: {lr: 0.1, meta_batch: 4}}
    workers: {num_workers: 0}
    train: {iterations: 50, eval_every: 10, eval_tasks: 8, checkpoint_every: 10}
    tune: {metric: val/loss, mode: min, num_samples: 1}
    """
)


def env() -> dict[str, str]:
    e = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "tests"), e.get("PYTHONPATH", "")]
    e["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    e.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return e


def time_to_first_result(spec: Path, dashboard: bool, timeout: float) -> float:
    """Seconds from ``Popen`` to the first-result log line (``inf`` if it never came)."""
    with tempfile.TemporaryDirectory() as storage:
        cmd = [sys.executable, "-m", "metaplat.cli", "run", str(spec), "--storage-path", storage]
        if not dashboard:
            cmd.append("--no-dashboard")
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        elapsed, tail = float("inf"), list[str]()
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line])[-20:]
            if MARKER in line:
                elapsed = time.perf_counter() - start
                proc.send_signal(signal.SIGINT)  # graceful: Tune saves state, Ray shuts down
                break
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        killer.cancel()
        if elapsed == float("inf"):
            print("".join(tail), file=sys.stderr)
        return elapsed


def ray_floor(dashboard: bool) -> float:
    """Seconds for a fresh process to import Ray, start it embedded and shut it down."""
    code = (
        f"import ray; ray.init(include_dashboard={dashboard!r}, dashboard_host='127.0.0.1'); "
        "ray.shutdown()"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env(), check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("spec", nargs="?", default=str(ROOT / "tune_specs" / "quickstart.yaml"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--toy", action="store_true", help="use the built-in toy spec")
    p.add_argument("--dashboard", action="store_true", help="start the dashboard too")
    p.add_argument("--timeout", type=float, default=180.0)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(args.spec)
        if args.toy or not spec.exists():
            if not args.toy:
                print(f"{spec} not found; using the toy spec")
            spec = Path(tmp) / "toy.yaml"
            spec.write_text(TOY_SPEC)
        runs, floors = [], []
        for i in range(args.repeats):
            runs.append(time_to_first_result(spec, args.dashboard, args.timeout))
            floors.append(ray_floor(args.dashboard))
            print(f"run {i + 1}: first result {runs[-1]:.1f} s; ray.init floor {floors[-1]:.1f} s")
    med, floor = statistics.median(runs), statistics.median(floors)
    print(
        f"\nspec: {args.spec if not args.toy and Path(args.spec).exists() else 'toy'}  "
        f"dashboard: {'on' if args.dashboard else 'off'}  repeats: {args.repeats}"
    )
    print(f"{'':28}{'median s':>10}")
    print(f"{'metaplat run -> 1st result':28}{med:>10.1f}")
    print(f"{'baseline: ray.init+shutdown':28}{floor:>10.1f}")
    print(f"{'ratio':28}{med / floor:>10.2f}x")
    print(f"{'target':28}{TARGET_S:>10.1f}   {'MET' if med < TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()

"""``metaplat`` command line: run | validate | tasks | report. Thin: parsing and printing only.

    metaplat run SPEC [--address ADDR] [--resume] [--storage-path P] [--name N]
                      [--num-samples N] [--iterations N] [--set key=value ...] [--no-dashboard]
    metaplat validate SPEC [SPEC ...] [--set key=value ...]
    metaplat tasks list
    metaplat tasks show NAME [--config key=value ...]
    metaplat report RESULTS_DIR [--metric M] [--mode min|max] [--plot OUT.png] [--csv OUT.csv]

Exit status: 0 success; 1 invalid spec or input; 2 the sweep ran but some trials errored.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from metaplat.specs.typecheck import SpecError


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from metaplat.specs.loader import parse_override

    out = dict(parse_override(s) for s in getattr(args, "set", None) or [])
    for flag, key in (
        ("storage_path", "storage_path"),
        ("name", "name"),
        ("num_samples", "tune.num_samples"),
        ("iterations", "train.iterations"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    from metaplat.specs.loader import load_spec, summary, validate_spec

    status = 0
    for path in args.specs:
        try:
            spec = load_spec(path, _overrides(args))
            validate_spec(spec)
            print(f"OK: {path}: {summary(spec)}")
        except SpecError as e:
            status = 1
            print(f"INVALID: {path}", file=sys.stderr)
            for line in e.errors:
                print(f"  {line}", file=sys.stderr)
    return status


def cmd_run(args: argparse.Namespace) -> int:
    from metaplat.specs.loader import load_spec, summary
    from metaplat.tuning.runner import experiment_path, run_experiment

    try:
        spec = load_spec(args.spec, _overrides(args))
        print(f"metaplat: {summary(spec)}", flush=True)
        results = run_experiment(
            spec, resume=args.resume, address=args.address, dashboard=not args.no_dashboard
        )
    except SpecError as e:
        print(f"metaplat run {args.spec}: not started:", file=sys.stderr)
        for line in e.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    path = experiment_path(spec)
    errors = len(results.errors)
    print(f"metaplat: {len(results)} trials, {errors} errored; results in {path}")
    if len(results) and errors < len(results):
        best = results.get_best_result()
        shown = {k: v for k, v in best.config.items() if k != "spec_hash"}
        print(f"metaplat: best {spec.tune.metric} = {best.metrics.get(spec.tune.metric)} {shown}")
    print(f"metaplat: see `metaplat report {path}`")
    return 2 if errors else 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from metaplat.tasks.registry import FAMILIES

    rows: list[tuple[str, str, str]] = []
    for name in FAMILIES.names():
        try:
            cls = FAMILIES.get(name)
            rows.append((name, cls.kind, cls.description))
        except Exception as e:  # a family whose module (or dependency) is missing
            rows.append((name, "?", f"(unavailable: {type(e).__name__}: {e})"))
    _print_table(("name", "kind", "description"), rows)
    return 0


def cmd_tasks_show(args: argparse.Namespace) -> int:
    from metaplat.specs.loader import build_family, parse_override

    try:
        config = dict(parse_override(s) for s in args.config or [])
        family = build_family(args.name, config, path="")
    except SpecError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return 1
    described = json.loads(json.dumps(family.describe(), default=str))  # plain YAML types
    print(yaml.safe_dump(described, sort_keys=False, default_flow_style=None).rstrip())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from metaplat.tuning import report

    try:
        table = report.trials_table(args.results_dir, args.metric, args.mode)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    spec = report.load_spec_dict(args.results_dir) or {}
    metric = args.metric or spec.get("tune", {}).get("metric")
    levels = None
    if args.baselines:
        levels = report.rl2_baseline_levels(args.results_dir, args.baseline_tasks)
        if levels is None:
            print(
                "--baselines: only for rl2 / rl2_rllib experiments on bandit or tabular_mdp",
                file=sys.stderr,
            )
            return 1
        print(f"\nbaselines on the same {args.baseline_tasks} meta-val tasks (mean ± 95% CI):")
        _print_table(
            ["baseline", "setting", "trial return"],
            [
                (k, s or "-", f"{m:.2f} ± {h:.2f}")
                for k, (m, h, s) in sorted(levels.items(), key=lambda kv: -kv[1][0])
            ],
        )
        curve = report.curve_vs_levels(report.curves(args.results_dir), metric, levels)
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(f"\nlearning curve vs the best baseline:\n{curve.to_string(index=False)}")
    if args.plot:
        try:
            runs = report.curves(args.results_dir)
            out = report.PLOTS[args.plot_kind](runs, metric, args.plot, levels=levels)
            print(f"wrote {out}")
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib); skipped", file=sys.stderr)
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metaplat", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def add_set(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a spec field, e.g. train.iterations=5 (repeatable)",
        )

    run = sub.add_parser("run", help="run (or --resume) the sweep a spec describes")
    run.add_argument("spec")
    run.add_argument(
        "--address", help="Ray cluster to join (default: RAY_ADDRESS, else an embedded local Ray)"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue <storage_path>/<name>: keep finished trials, resume the rest",
    )
    run.add_argument("--storage-path", help="override storage_path (dir, s3://, gs://)")
    run.add_argument("--name", help="override the experiment name")
    run.add_argument("--num-samples", type=int, help="override tune.num_samples")
    run.add_argument("--iterations", type=int, help="override train.iterations")
    run.add_argument(
        "--no-dashboard",
        action="store_true",
        help="embedded Ray without the dashboard (faster start)",
    )
    add_set(run)
    run.set_defaults(fn=cmd_run)

    val = sub.add_parser("validate", help="check specs without running them")
    val.add_argument("specs", nargs="+")
    add_set(val)
    val.set_defaults(fn=cmd_validate)

    tasks = sub.add_parser("tasks", help="the task-family registry")
    tsub = tasks.add_subparsers(dest="tasks_command", required=True)
    tsub.add_parser("list", help="registered families").set_defaults(fn=cmd_tasks_list)
    show = tsub.add_parser("show", help="describe one family")
    show.add_argument("name")
    show.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="family constructor argument (repeatable)",
    )
    show.set_defaults(fn=cmd_tasks_show)

    rep = sub.add_parser("report", help="table of an experiment's trials")
    rep.add_argument("results_dir")
    rep.add_argument("--metric", help="default: the spec's tune.metric")
    rep.add_argument("--mode", choices=("min", "max"), help="default: the spec's tune.mode")
    rep.add_argument("--csv", help="also write the table as CSV")
    rep.add_argument("--plot", help="write learning curves to this image (needs matplotlib)")
    rep.add_argument("--plot-kind", default="curves", help="a name in metaplat.tuning.report.PLOTS")
    rep.add_argument(
        "--baselines",
        action="store_true",
        help="RL² on bandit/tabular_mdp: score every baseline on the same "
        "meta-val tasks and print the learning curve against them",
    )
    rep.add_argument(
        "--baseline-tasks", type=int, default=500, help="meta-val tasks per baseline (default 500)"
    )
    rep.set_defaults(fn=cmd_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())

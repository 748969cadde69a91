"""One table of every supervised meta-learning method x every few-shot setting.

Each available method (any of :data:`METHOD_NAMES` whose module imports) is meta-trained with
the same small :class:`Budget` on each :class:`Setting` (glyphs N-way K-shot classification,
sinusoid K-shot regression), in-process through a :class:`~metaplat.workers.base.LocalPool`,
then scored on ``budget.eval_tasks`` meta-test episodes with a 95% CI
(:func:`metaplat.evaluation.evaluate_method`). The published figure sits in the column next
to ours. Methods that are missing, or that do not apply to a setting (ProtoNets on
regression), get a note instead of a number; nothing here fails the whole table.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from metaplat.evaluation import DEFAULT_NUM_TASKS, evaluate_method
from metaplat.outer.base import METHODS
from metaplat.stats import format_ci
from metaplat.tasks.registry import make_family
from metaplat.workers.base import LocalPool

log = logging.getLogger(__name__)

METHOD_NAMES = ("maml", "fomaml", "reptile", "metasgd", "anil", "protonet", "matchingnet")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One column group of the table: a task family configuration and its score."""

    key: str
    """Column label, e.g. ``"5w1s"``."""
    family: str
    """Registered task family name."""
    config: Mapping[str, Any]
    """The family's config."""
    metric: Literal["acc", "mse"]
    """``acc``: query accuracy in %, higher is better; ``mse``: query MSE, lower is better."""


SETTINGS: tuple[Setting, ...] = (
    Setting("5w1s", "glyphs", {"num_ways": 5, "num_shots": 1, "num_query": 15}, "acc"),
    Setting("5w5s", "glyphs", {"num_ways": 5, "num_shots": 5, "num_query": 15}, "acc"),
    Setting("20w1s", "glyphs", {"num_ways": 20, "num_shots": 1, "num_query": 5}, "acc"),
    Setting("20w5s", "glyphs", {"num_ways": 20, "num_shots": 5, "num_query": 5}, "acc"),
    Setting("sin K=5", "sinusoid", {"num_support": 5, "num_query": 10}, "mse"),
    Setting("sin K=10", "sinusoid", {"num_support": 10, "num_query": 10}, "mse"),
)

# Published figures (REFERENCES.md): Omniglot accuracy (%) for the glyph columns -- glyphs are
# rendered kanji, not Omniglot, so they are a yardstick, not a target -- and sinusoid MSE.
_OMNIGLOT = {
    "maml": (98.7, 99.9, 95.8, 98.9),
    "fomaml": (98.3, 99.2, 89.4, 97.9),
    "reptile": (97.7, 99.5, 89.4, 97.1),
    "metasgd": (99.5, 99.9, 95.9, 99.0),
    "anil": (None, None, 96.2, 98.0),
    "protonet": (98.8, 99.7, 96.0, 98.9),
    # Vinyals et al. 2016 Table 1 (no fine-tuning); recalled, not in REFERENCES.md.
    "matchingnet": (98.1, 98.9, 93.8, 98.5),
}
REFERENCES: dict[tuple[str, str], float] = {
    (m, k): v
    for m, vals in _OMNIGLOT.items()
    for k, v in zip(("5w1s", "5w5s", "20w1s", "20w5s"), vals, strict=True)
    if v is not None
}
# Meta-SGD paper's 10-shot sinusoid table (recalled in REFERENCES.md).
REFERENCES |= {("maml", "sin K=10"): 0.77, ("metasgd", "sin K=10"): 0.53}
REFERENCE_NOTE = (
    "paper: Omniglot accuracy % (Finn 2017, Nichol 2018, Li 2017, Raghu 2020, Snell 2017; "
    "Matching Nets: Vinyals 2016, recalled); sinusoid K=10 MSE from the Meta-SGD paper (recalled)"
)

# Per-method settings from the papers, keyed by (method, family) and then (method, setting
# key), the latter winning; applied only to fields the method's Config has.
# Glyphs: the 4-block conv net (64 filters) for every gradient-based method; MAML's Omniglot
# settings (one inner step of 0.4 in training, three at test) for MAML, FOMAML, ANIL and as
# Meta-SGD's initial rate; Reptile takes five SGD steps of 0.1.
_GRADIENT = ("maml", "fomaml", "reptile", "metasgd", "anil")
SETTING_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    **{
        (m, "glyphs"): {"model": "conv4", "inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}
        for m in _GRADIENT
    },
    ("reptile", "glyphs"): {
        "model": "conv4",
        "inner_lr": 0.1,
        "inner_steps": 5,
        "eval_inner_steps": 5,
    },
    **{
        (m, k): {"inner_lr": 0.1, "inner_steps": 5}
        for m in ("maml", "fomaml", "anil")
        for k in ("20w1s", "20w5s")
    },
    **{(m, "sinusoid"): {"inner_lr": 0.01, "inner_steps": 1} for m in ("maml", "fomaml")},
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much every (method, setting) cell is trained and evaluated."""

    iterations: int = 300
    """Outer iterations of meta-training."""
    meta_batch_size: int = 4
    """Tasks per outer iteration (set on every method whose Config has the field)."""
    eval_tasks: int = DEFAULT_NUM_TASKS
    """Meta-test episodes per cell."""
    num_workers: int = 1
    """LocalPool shards (changes sharding only; results do not depend on it)."""
    seed: int = 0
    """Run seed of every cell."""

    def __post_init__(self) -> None:
        for f in ("iterations", "meta_batch_size", "eval_tasks", "num_workers"):
            if getattr(self, f) < (0 if f == "iterations" else 1):
                raise ValueError(f"budget field {f!r} = {getattr(self, f)!r} is too small")

    def describe(self) -> str:
        return (
            f"{self.iterations} outer iterations x {self.meta_batch_size} tasks, "
            f"{self.eval_tasks} meta-test episodes, seed {self.seed}, in-process"
        )


QUICK = Budget(iterations=3, meta_batch_size=2, eval_tasks=20)
"""Smoke-test budget (numbers are meaningless)."""


@dataclasses.dataclass
class Cell:
    """One method x setting result (``mean`` in table units) or the reason there is none."""

    mean: float = math.nan
    ci95: float = math.nan
    note: str = ""
    seconds: float = 0.0

    def text(self) -> str:
        if self.note:
            return self.note
        return format_ci(self.mean, self.ci95 if not math.isnan(self.ci95) else 0.0, 2) + (
            "" if not math.isnan(self.ci95) else " (no CI)"
        )


@dataclasses.dataclass
class Table:
    budget: Budget
    settings: tuple[Setting, ...]
    rows: dict[str, dict[str, Cell]]
    notes: list[str]


def available_methods(names: Sequence[str] = METHOD_NAMES) -> tuple[list[str], list[str]]:
    """``(importable method names, notes on the missing ones)``."""
    ok, notes = [], []
    for name in names:
        try:
            METHODS.get(name)
            ok.append(name)
        except (ImportError, AttributeError, KeyError) as e:
            notes.append(f"{name}: skipped ({type(e).__name__}: {e})")
    return ok, notes


def method_config(name: str, setting: Setting, budget: Budget) -> Any:
    """The method's default Config with the budget's meta-batch and the paper's settings."""
    cls = METHODS.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    kw = {"meta_batch_size": budget.meta_batch_size}
    kw |= SETTING_OVERRIDES.get((name, setting.family), {})
    kw |= SETTING_OVERRIDES.get((name, setting.key), {})
    return cls.Config(**{k: v for k, v in kw.items() if k in fields})


_METRIC_KEYS = {"acc": ("test/post_acc",), "mse": ("test/post_mse", "test/post_loss")}


def run_cell(name: str, setting: Setting, budget: Budget) -> Cell:
    """Meta-train ``name`` on ``setting`` with ``budget`` and score it on meta-test episodes."""
    start = time.perf_counter()
    family = make_family(setting.family, dict(setting.config))
    cls = METHODS.get(name)
    pool = LocalPool(budget.num_workers)
    try:
        method = cls(method_config(name, setting, budget), family, pool, budget.seed)
    except ValueError as e:  # e.g. a classification-only method on regression
        log.info("%s on %s: %s", name, setting.key, e)
        return Cell(note="n/a")
    try:
        state = method.init()
        for _ in range(budget.iterations):
            state, _ = method.step(state)
        metrics = evaluate_method(method, state, "test", budget.eval_tasks)
    except Exception as e:  # a broken cell must not cost the rest of the table
        log.exception("%s on %s failed", name, setting.key)
        return Cell(note=f"error: {type(e).__name__}")
    finally:
        pool.close()
    for key in _METRIC_KEYS[setting.metric]:
        if key in metrics:
            scale = 100.0 if setting.metric == "acc" else 1.0
            return Cell(
                metrics[key] * scale,
                metrics[f"{key}_ci95"] * scale,
                seconds=time.perf_counter() - start,
            )
    return Cell(note="no metric", seconds=time.perf_counter() - start)


def build_table(
    budget: Budget,
    methods: Sequence[str] = METHOD_NAMES,
    settings: Sequence[Setting] = SETTINGS,
) -> Table:
    """Run every available method on every setting (sequentially, in this process)."""
    names, notes = available_methods(methods)
    missing: set[str] = set()
    for s in settings:
        try:
            make_family(s.family, dict(s.config))
        except (ImportError, AttributeError, ValueError) as e:
            if s.family not in missing:
                notes.append(f"family {s.family!r}: not available ({type(e).__name__}: {e})")
            missing.add(s.family)
    rows: dict[str, dict[str, Cell]] = {}
    for name in names:
        rows[name] = {}
        for s in settings:
            if s.family in missing:
                rows[name][s.key] = Cell(note="no family")
                continue
            log.info("training %s on %s", name, s.key)
            rows[name][s.key] = run_cell(name, s, budget)
    return Table(budget, tuple(settings), rows, notes)


def format_table(table: Table) -> str:
    """Markdown: one row per method, for each setting our figure and the paper's beside it."""
    header = ["method"]
    for s in table.settings:
        unit = "acc %" if s.metric == "acc" else "MSE"
        header += [f"{s.key} ({unit})", "paper"]
    header.append("train+eval s")
    lines = [
        f"Few-shot table -- budget: {table.budget.describe()}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, cells in table.rows.items():
        row = [name]
        for s in table.settings:
            ref = REFERENCES.get((name, s.key))
            row += [cells[s.key].text(), "–" if ref is None else f"{ref:g}"]
        row.append(f"{sum(c.seconds for c in cells.values()):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Figures: mean ± 95% CI half-width over meta-test episodes; {REFERENCE_NOTE}."]
    lines += [f"Note: {n}" for n in table.notes]
    return "\n".join(lines)

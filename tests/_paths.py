"""Paths into the repository that the tests read (specs, shipped checkpoints, the tree)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository root."""

SPECS = ROOT / "tune_specs"
"""The shipped experiment specs."""

"""Lint, format and type checks as part of the test run, so CI (which runs exactly the
README's test command) gates on them. The tools are pinned in the ``test`` extra, so a new
release of either cannot turn a clean tree red."""

from __future__ import annotations

import subprocess
import sys

import pytest
from _paths import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("check", [("check", "."), ("format", "--check", ".")])
def test_ruff(check: tuple[str, ...]) -> None:
    pytest.importorskip("ruff", reason="ruff comes with the test extra: pip install -e '.[test]'")
    out = _run("ruff", *check)
    assert out.returncode == 0, f"ruff {' '.join(check)}:\n{out.stdout}{out.stderr}"


def test_mypy() -> None:
    pytest.importorskip("mypy", reason="mypy comes with the test extra: pip install -e '.[test]'")
    # mypy's own cache (.mypy_cache, git-ignored): cold on a fresh clone (about 40 s), a few
    # seconds on a re-run, and it re-checks whatever changed
    # the benchmark scripts too, each named as a file: pool_overhead.py also imports itself
    # as ``benchmarks.pool_overhead``, which mypy would otherwise count as a second module;
    # --explicit-package-bases names every file by its path from the root
    paths = ("metaplat", "environments", *sorted(map(str, (ROOT / "benchmarks").glob("*.py"))))
    out = _run("mypy", "--explicit-package-bases", *paths)
    assert out.returncode == 0, f"mypy {' '.join(paths)}:\n{out.stdout}{out.stderr}"

"""A tiny lazy registry: names map to ``"module:attribute"`` paths, imported on first use.

Nothing is imported at package import time (no import-time side effects), and an unknown
name fails with the list of known names and the closest match.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """``unknown task family 'sinusiod'; did you mean 'sinusoid'? known: ...``."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} known: {', '.join(sorted(known))}"


class LazyRegistry(Generic[T]):
    """Name -> object, resolved from an import path on first lookup."""

    def __init__(self, kind: str, paths: dict[str, str]):
        self.kind = kind
        self._paths = dict(paths)
        self._cache: dict[str, T] = {}

    def register(self, name: str, target: str | T) -> None:
        """Add ``name``; ``target`` is an object or a ``"module:attribute"`` path."""
        if name in self._paths or name in self._cache:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if isinstance(target, str):
            self._paths[name] = target
        else:
            self._cache[name] = target
            self._paths[name] = f"<object {target!r}>"

    def names(self) -> list[str]:
        return sorted(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        if name not in self._paths:
            raise KeyError(unknown_name_message(self.kind, name, self.names()))
        if name not in self._cache:
            module, _, attr = self._paths[name].partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._cache[name] = obj
        return self._cache[name]

"""Parse plain YAML data into typed frozen dataclasses, with errors that name the field.

One small checker serves the spec schema, method ``Config`` classes and dataclass task
families alike: it reads a dataclass's type hints, rejects unknown keys (naming the full
dotted path, the bad key, the closest allowed key and all allowed keys), checks and coerces
value types (``int`` -> ``float``, ``list`` -> ``tuple``), and collects every problem it finds
into one :class:`SpecError` instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class SpecError(ValueError):
    """One or more problems in a spec; ``errors`` lists them, each naming its field."""

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def join(path: str, key: str) -> str:
    """``join("tune", "metric") == "tune.metric"``; keys with dots are quoted."""
    part = repr(key) if "." in key else key
    if not path:
        return part
    return f"{path}[{part}]" if "." in key else f"{path}.{part}"


def unknown_key_message(path: str, key: str, allowed: list[str]) -> str:
    """``train: unknown key 'iteration'; did you mean 'iterations'? allowed: ...``."""
    # a truncated name first ("grace" for "grace_period"), then spelling
    close = [a for a in sorted(allowed) if a.startswith(key) or key.startswith(a)][:1]
    close = close or difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = path or "spec"
    return f"{where}: unknown key {key!r}{hint} allowed: {', '.join(sorted(allowed)) or '(none)'}"


def type_name(tp: Any) -> str:
    """A readable name for a type hint: ``int``, ``float | None``, ``list[int]``."""
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(tp, "__name__", str(tp))


def hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's init fields (``Any`` where unresolvable)."""
    try:
        resolved = typing.get_type_hints(cls)
    except Exception:  # a hint naming something not importable here: check nothing
        resolved = {}
    return {f.name: resolved.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def check_value(value: Any, tp: Any, path: str) -> Any:
    """``value`` coerced to ``tp``; raises :class:`SpecError` naming ``path``, value and type."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        failures: list[SpecError] = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(value, a, path)
            except SpecError as e:
                failures.append(e)
        if len(failures) == 1:
            raise failures[0]
        raise SpecError(f"{path}: got {value!r}, expected {type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise SpecError(
            f"{path}: got {value!r}, expected one of {', '.join(repr(a) for a in args)}"
        )
    if tp is type(None):
        if value is None:
            return None
        raise SpecError(f"{path}: got {value!r}, expected null")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return parse_dataclass(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        if isinstance(value, Mapping):
            kt, vt = args if args else (Any, Any)
            out: dict[Any, Any] = {}
            errors: list[str] = []
            for k, v in value.items():
                try:
                    out[check_value(k, kt, path)] = check_value(v, vt, join(path, str(k)))
                except SpecError as e:
                    errors += e.errors
            if errors:
                raise SpecError(errors)
            return out
    elif origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (list, tuple)):
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise SpecError(
                        f"{path}: got {value!r} ({len(value)} items), expected {type_name(tp)}"
                    )
                items = [
                    check_value(v, a, f"{path}[{i}]")
                    for i, (v, a) in enumerate(zip(value, args, strict=True))
                ]
            else:
                item_tp = args[0] if args else Any
                items = [check_value(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if (origin or tp) is tuple else items
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:  # an exotic hint (TypeVar, Callable, ...): leave it to the class's own validation
        return value
    raise SpecError(f"{path}: got {value!r} ({type(value).__name__}), expected {type_name(tp)}")


def check_fields(cls: type, data: Any, path: str, *, extra_ok: bool = False) -> dict[str, Any]:
    """``data`` checked against ``cls``'s fields: unknown keys, missing required keys, types.

    Returns the coerced keyword arguments (only the keys present in ``data``).
    """
    if not isinstance(data, Mapping):
        raise SpecError(
            f"{path or 'spec'}: got {data!r} ({type(data).__name__}), expected a mapping "
            f"with keys {', '.join(hints(cls))}"
        )
    fields = hints(cls)
    errors: list[str] = []
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in fields:
            if not extra_ok:
                errors.append(unknown_key_message(path, str(key), list(fields)))
            continue
        try:
            out[key] = check_value(value, fields[key], join(path, key))
        except SpecError as e:
            errors += e.errors
    for f in dataclasses.fields(cls):
        missing_default = (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        if f.init and missing_default and f.name not in data:
            errors.append(f"{join(path, f.name)}: required, expected {type_name(fields[f.name])}")
    if errors:
        raise SpecError(errors)
    return out


def parse_dataclass(cls: type[T], data: Any, path: str) -> T:
    """Build ``cls`` from ``data``; a class may define ``from_yaml(data, path)`` to parse itself.

    Errors raised by the class's own ``__post_init__`` are re-raised naming ``path``.
    """
    custom = getattr(cls, "from_yaml", None)
    if custom is not None:
        return custom(data, path)  # type: ignore[no-any-return]
    kwargs = check_fields(cls, data, path)
    return construct(cls, kwargs, path)


def construct(cls: type[T], kwargs: dict[str, Any], path: str) -> T:
    """``cls(**kwargs)``, with its validation errors prefixed by ``path``."""
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except (ValueError, TypeError) as e:
        raise SpecError(f"{path or 'spec'}: {e}") from None

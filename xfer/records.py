"""Typed records that cross a stage, and their JSON form.

What one stage hands the next (a training result, a bench report, a study)
is a dataclass deriving from ``Record``: readers use attributes, and a typo is
an ``AttributeError`` at the line that made it, not a ``KeyError`` three
modules later. ``to_json`` / ``from_json`` keep the files on disk as they were:
nested records, lists and dicts of records round-trip, and optional fields
that are ``None`` are left out of the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, TypeVar, Union

R = TypeVar("R", bound="Record")
JSONValue = Any  # what json.dumps takes: the plain containers, numbers, strings, bools and None
# A JSON object as such, not a record in disguise: a message across the process boundary, a settings
# fingerprint compared with one read back from a file.
JSONObject = dict[str, JSONValue]


@cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, value: JSONValue) -> Any:
    """``value`` (from JSON) as type ``tp``: records are rebuilt, containers of records too, the rest passes."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(inner[0], value) if len(inner) == 1 else value
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(value)
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return [_decode(arg, v) for v in value]
    if origin is tuple:
        args = typing.get_args(tp)
        each = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        return tuple(_decode(a, v) for a, v in zip(each, value))
    if origin is dict:
        _, arg = typing.get_args(tp) or (Any, Any)
        return {k: _decode(arg, v) for k, v in value.items()}
    return value


def _encode(value: Any) -> JSONValue:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


class Record:
    """Base of the typed records: ``to_json`` drops ``None`` optionals; ``from_json`` rebuilds nested records."""

    OMIT_NONE: typing.ClassVar[bool] = True

    def to_json(self) -> dict[str, JSONValue]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is None and self.OMIT_NONE and f.default is None:
                continue
            out[f.name] = _encode(v)
        return out

    @classmethod
    def from_json(cls: type[R], data: dict[str, JSONValue]) -> R:
        hints = _hints(cls)  # type: ignore[arg-type]
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: _decode(hints[k], v) for k, v in data.items() if k in names})

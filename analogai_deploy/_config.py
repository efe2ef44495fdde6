"""Typed configs: dataclasses that refuse unknown keys and round-trip through plain dicts.

Serialised form (torchao style): {"_type": "AnalogConfig", "_version": 1, "_data": {...}}: config.json's typed
sections are written in it and read by `read_section`, the one reader, which builds only the class its caller
names (never one the file names).
"""
from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from typing import Any, TypeVar

from .errors import PackageError, UsageError, closest, unknown
from .provenance import sha256_json

T = TypeVar("T", bound="StrictConfig")
S = TypeVar("S")  # a config.json section's type: a StrictConfig, or a record with `_version` and `from_dict`


class StrictConfig:
    """Mixin for dataclass configs. Subclasses set `_version` and call `validate()` checks in `__post_init__`."""

    _version: typing.ClassVar[int] = 1

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
        """Build from a plain dict, recursively; unknown keys fail and name the valid ones."""
        if data is not None and not isinstance(data, dict):
            raise UsageError(f"{where.rstrip('.') or cls.__name__} must be a mapping of keys, got {_show(data)}",
                             f"valid keys: {', '.join(sorted(f.name for f in dataclasses.fields(cls)))}")
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key not in fields:
                path = f"{where}{key}"
                hint = closest(key, fields) or ""
                valid = ", ".join(sorted(fields))
                raise UsageError(
                    f"unknown key {path!r} in {cls.__name__}",
                    (hint + " " if hint else "") + f"valid keys{' under ' + where.rstrip('.') if where else ''}: {valid}",
                )
            kwargs[key] = _coerce(fields[key], value, f"{where}{key}", cls)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def coerce(self, *names: str) -> None:
        """Fields `names` as from_dict would take them ("17" -> 17; a wrong type a UsageError naming the field),
        for a config built by its constructor. For `__post_init__`; frozen configs too."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name in names:
            object.__setattr__(self, name, _coerce(fields[name], getattr(self, name), name, type(self)))

    def serialise(self) -> dict[str, Any]:
        return envelope(self)

    def sha256(self) -> str:
        return sha256_json(self.to_dict())


def expect(config: Any, cls: type[T], name: str = "config") -> T | None:
    """`config` when it is a `cls` or None; anything else (another config, a dict) fails naming what it is."""
    if config is None or isinstance(config, cls):
        return config
    a = f"{'an' if cls.__name__[0] in 'AEIOU' else 'a'} {cls.__name__}"
    hint = (f"{cls.__name__}.from_dict(...) builds one from a dict" if isinstance(config, dict)
            else f"pass {a}, or leave `{name}` out for the defaults")
    raise UsageError(f"`{name}` must be {a}, got {type(config).__name__}", hint)


def envelope(section: Any) -> dict[str, Any]:
    """The stored form of a typed section: its type, its version and its fields."""
    return {"_type": type(section).__name__, "_version": section._version, "_data": section.to_dict()}


def read_section(config: dict[str, Any], key: str, cls: type[S]) -> S | None:
    """config.json section `key` as `cls`, or None where it is absent: the envelope (`serialise`) or the bare
    dict packages were written with before it (version 1 of its type), read as stored, never rewritten, so
    an older package's hashes stay what its certificate recorded."""
    blob = config.get(key)
    if blob is None:
        return None
    data, version = blob, 1
    if isinstance(blob, dict) and "_type" in blob:
        name, version, data = blob.get("_type"), blob.get("_version"), blob.get("_data")
        if name != cls.__name__:  # only the class the key names is ever built (an allow-list of one)
            raise PackageError(f"config.json section {key!r} is of type {_show(name)}, not {cls.__name__}",
                               "the package was edited or written by another tool: convert the model again")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise PackageError(f"config.json section {key!r} has a malformed version {_show(version)}",
                               "the package was edited: fetch it again or convert the model again")
        if version > cls._version:
            raise PackageError(f"config.json section {key!r} is {cls.__name__} version {version}; this toolkit "
                               f"reads up to version {cls._version}", "upgrade analogai-deploy to read this package")
    try:
        return cls.from_dict(data, where=f"{key}.")
    except (UsageError, TypeError) as exc:  # TypeError: a required field is missing
        raise PackageError(f"config.json section {key!r} is malformed: {exc}",
                           "the package was edited: fetch it again or convert the model again") from None


def _show(value: Any, limit: int = 80) -> str:
    """repr for an error message, cut short: a hostile value (a YAML alias bomb) must not become the message."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(field: dataclasses.Field, value: Any, path: str, owner: type) -> Any:
    hints = typing.get_type_hints(owner)
    return _coerce_to(hints[field.name], value, path)


def _coerce_to(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, StrictConfig):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UsageError(f"{path} must be a mapping, got {_show(value)}")
        return tp.from_dict(value, where=path + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce_to(arg, value, path)
            except UsageError as exc:
                errors.append(exc)
        raise errors[0] if errors else UsageError(f"{path}: bad value {_show(value)}")
    if origin is typing.Literal:
        if value not in args:
            raise UsageError(f"{path} must be one of {', '.join(map(repr, args))}, got {_show(value)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{path} must be a list, got {_show(value)}")
        inner = args[0] if args else Any
        return [_coerce_to(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{path} must be a mapping, got {_show(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UsageError(f"{path} must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise UsageError(f"{path} must be an integer, got {_show(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise UsageError(f"{path} must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, bool):
            raise UsageError(f"{path} must be a number, got {_show(value)}")
        if isinstance(value, (int, float)):
            out = float(value)
        else:
            try:
                out = float(str(value))
            except ValueError:
                raise UsageError(f"{path} must be a number, got {_show(value)}") from None
        if out != out or out in (float("inf"), float("-inf")):
            raise UsageError(f"{path} must be a finite number, got {_show(value)}")
        return out
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float, bool)):
                return str(value)
            raise UsageError(f"{path} must be a string, got {_show(value)}")
        return value
    return value


class ChoiceConfig(StrictConfig):
    """A StrictConfig whose `Literal` fields named in `_choices` (field -> what an error calls it) also take
    other spellings (`spelling`, e.g. any case) and refuse an unknown value naming the closest valid one
    (errors.unknown), from a dict and in the constructor alike. Frozen subclasses store the spelling in
    `__post_init__` through `set_choices`."""

    _choices: typing.ClassVar[dict[str, str]] = {}

    @classmethod
    def spelling(cls, name: str, value: Any) -> Any:
        """The spelling field `name` stores for `value` (as given unless a subclass says otherwise)."""
        return value

    @classmethod
    def choice(cls, name: str, value: Any) -> Any:
        """`value` of choice field `name` as stored; an unknown one fails with the valid ones."""
        hint = typing.get_type_hints(cls)[name]
        valid = next(typing.get_args(a) for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Literal)
        if isinstance(value, (int, float)):  # as a string field takes them (`_coerce_to`)
            value = str(value)
        value = cls.spelling(name, value)
        if value not in valid:
            raise unknown(cls._choices[name], value, valid)
        return value

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
        if isinstance(data, dict):
            data = {k: cls.choice(k, v) if k in cls._choices and v is not None else v for k, v in data.items()}
        return super().from_dict(data, where)

    def set_choices(self) -> None:
        for name in self._choices:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, self.choice(name, value))

"""Dataclass configs loaded from YAML, with dotted command-line overrides and clear errors.

A config schema is a (possibly nested) dataclass. :func:`load_config` reads a YAML file (or takes an
already-parsed mapping), applies ``key.sub=value`` overrides to the raw mapping, then validates and
converts it into the dataclass with :func:`from_dict`. The contract:

* Every mistake a user can make raises :class:`~interplay.core.errors.ConfigError` with one readable
  sentence naming the full dotted key (``trainer.max_epochs``, ``model.dims[2]``) and where the value
  came from: the file, or ``<command line>`` for an override. An unknown key also gets the closest
  valid key and the list of valid keys; a wrong type gets the expected type and the value received.
* Supported field types: ``int``, ``float``, ``str``, ``bool``, ``Path``, ``Any``, ``X | None``,
  ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, plain ``dict`` / ``list``, ``Literal[...]``,
  ``Enum`` subclasses (by value or by name), nested dataclasses, and unions of these (the first type
  that validates wins). Annotations may be strings (``from __future__ import annotations``).
* Conversions are few and explicit: ``int`` -> ``float``; a numeric string such as ``"1e-3"`` (which
  YAML 1.1 reads as a string) -> ``float``; ``str`` -> ``Path``; list -> tuple. A ``bool`` is never
  accepted as a number. An empty section (``trainer:`` with nothing under it) means "all defaults".
* ``ValueError`` / ``TypeError`` raised by a dataclass's ``__post_init__`` becomes a ``ConfigError``
  naming the section and the file, with the original message.
* Overrides are parsed with ``yaml.safe_load`` and applied before validation, so they get exactly the
  same checks. Given the schema, an override of a text field keeps its text (``run.name=2024`` is
  ``"2024"``, ``note=yes`` is ``"yes"``), and a new sub-key of a dict field is merged into the field's
  default.

:func:`to_dict` turns a config back into plain YAML-safe data and :func:`save_config` writes it
atomically (temp file in the same directory, then ``os.replace``), so loading a saved config gives
back an equal config.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime
import difflib
import enum
import functools
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

import yaml

from interplay.core.errors import ConfigError

__all__ = ["apply_overrides", "from_dict", "load_config", "parse_override", "save_config", "to_dict"]

T = TypeVar("T")

_COMMAND_LINE = "<command line>"
_DICT_SOURCE = "<dict>"
_MISSING = object()
_LIST_TYPES = (list, collections.abc.Sequence, collections.abc.MutableSequence)
_DICT_TYPES = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_UNION_TYPES = (typing.Union, types.UnionType)
_BOOL_HINT = "; quote it if you meant text (YAML reads yes/no/on/off/true/false as booleans)"


# --------------------------------------------------------------------------------------------- public API


def load_config(schema: type[T], source: str | os.PathLike | Mapping, overrides: Sequence[str] = ()) -> T:
    """Load ``schema`` from a YAML file (or a parsed mapping), apply ``key.sub=value`` overrides, validate."""
    if isinstance(source, Mapping):
        name, data = _DICT_SOURCE, source
    elif isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        data = _read_yaml(name)
    else:
        raise TypeError(f"load_config expects a YAML path or a mapping, got {type(source).__name__}")
    if data is None:  # an empty file: every value takes its default
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config {_where(name)} must be a mapping of keys at the top level, got {_describe(data)}"
        )
    overrides = _as_override_list(overrides)
    keys = tuple(_split_override(text)[0] for text in overrides)
    data = apply_overrides(data, overrides, schema=schema)
    return _build_root(schema, data, _Context(name, keys))


def from_dict(schema: type[T], data: Mapping, *, source: str = _DICT_SOURCE) -> T:
    """Validate an already-parsed mapping against the dataclass ``schema``; errors name ``source``."""
    return _build_root(schema, data, _Context(str(source)))


def apply_overrides(data: Mapping, overrides: Sequence[str], *, schema: type | None = None) -> dict:
    """Return a copy of ``data`` with each ``a.b.c=value`` override set (input is not mutated).

    Intermediate sections are created as needed. With ``schema``, keys are checked against it (an
    unknown key raises the same error as validation would), text fields keep the override's text, and
    a new sub-key of a dict field starts from the field's default.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"cannot apply overrides: the config must be a mapping, got {_describe(data)}")
    result = dict(data)
    for text in _as_override_list(overrides):
        key, raw = _split_override(text)
        _set_override(result, key, _parse_value(key, raw), raw, schema)
    return result


def parse_override(text: str) -> tuple[str, object]:
    """Split ``"a.b.c=value"`` into ``("a.b.c", value)``, the value parsed with ``yaml.safe_load``."""
    key, raw = _split_override(text)
    return key, _parse_value(key, raw)


def to_dict(cfg: Any) -> dict:
    """Plain, YAML-safe dict of a config: nested dataclasses -> dicts, Paths -> str, tuples -> lists."""
    if isinstance(cfg, Mapping) or (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        return _plain(cfg, "")
    raise TypeError(f"to_dict expects a dataclass instance or a mapping, got {type(cfg).__name__}")


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically; on any error the previous file is left untouched."""
    path = Path(path)
    data = to_dict(cfg)
    try:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot write config {path} as YAML: {exc}") from exc
    _atomic_write_text(path, text)


# ------------------------------------------------------------------------------------------ error helpers


def _where(source: str) -> str:
    return f"(from {source})" if source == _COMMAND_LINE else f"in {source}"


@dataclasses.dataclass(frozen=True)
class _Context:
    """Where the raw values came from: the file (or mapping) name and the dotted keys set by overrides."""

    source: str
    overridden: tuple[str, ...] = ()

    def where(self, key: str, *, section: bool = False) -> str:
        for o in self.overridden:
            if key == o or key.startswith(o + ".") or key.startswith(o + "["):
                return _where(_COMMAND_LINE)
        if section and any(not key or o.startswith(key + ".") for o in self.overridden):
            return f"{_where(self.source)} (with overrides from {_COMMAND_LINE})"
        return _where(self.source)


class _Mismatch(Exception):
    """Internal: a value does not fit a type at this level (the caller turns it into a ConfigError)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    if tp is Any or tp is object:
        return "Any"
    if tp is type(None) or tp is None:
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in _UNION_TYPES:
        return " or ".join(_type_name(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a mapping (the {tp.__name__} section)"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if not args:
            return name
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _join(prefix: str, name: Any) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _unknown_key_error(key: str, prefix: str, valid: Sequence[str], where: str) -> ConfigError:
    name = key.rsplit(".", 1)[-1] if prefix else key
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    hint = f"; did you mean '{_join(prefix, close[0])}'?" if close else ""
    if not valid:
        listing = f"'{prefix}' takes no keys" if prefix else "the config takes no keys"
    elif prefix:
        listing = f"valid keys under '{prefix}': {', '.join(valid)}"
    else:
        listing = f"valid top-level keys: {', '.join(valid)}"
    return ConfigError(f"unknown key '{key}' {where}{hint} ({listing})")


# ----------------------------------------------------------------------------------------- reading YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(name: str) -> Any:
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {name}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {name} is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {name} is not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {name}: {exc.strerror or exc}") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse YAML in {name}{_yaml_location(exc)}: {_yaml_problem(exc)}") from exc


def _yaml_location(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return ""
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else " ".join(str(exc).split())


# ------------------------------------------------------------------------------------------- overrides


def _as_override_list(overrides: Sequence[str] | str) -> list:
    if isinstance(overrides, str):  # a single "a=b" passed by mistake would otherwise iterate characters
        return [overrides]
    return list(overrides)


def _split_override(text: Any) -> tuple[str, str]:
    if not isinstance(text, str):
        raise ConfigError(f"an override must be text like trainer.max_epochs=10, got {_describe(text)}")
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(
            f"invalid override '{text}' {_where(_COMMAND_LINE)}: expected key=value, "
            "e.g. trainer.max_epochs=10"
        )
    parts = [part.strip() for part in key.split(".")]
    if not all(parts):
        raise ConfigError(
            f"invalid override '{text}' {_where(_COMMAND_LINE)}: '{key.strip()}' is not a dotted key "
            "like trainer.max_epochs"
        )
    return ".".join(parts), raw


def _parse_value(key: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"cannot parse the value of '{key}' {_where(_COMMAND_LINE)}: {_yaml_problem(exc)} "
            f"(got {raw!r}; quote it if it is meant as text)"
        ) from exc


def _set_override(result: dict, key: str, value: Any, raw: str, schema: Any) -> None:
    parts = key.split(".")
    node, tp = result, schema
    for i, part in enumerate(parts):
        prefix, dotted = ".".join(parts[:i]), ".".join(parts[: i + 1])
        field, child_tp = None, None
        cls = _as_dataclass(tp)
        if cls is not None:
            fields = _init_fields(cls)
            if part not in fields:
                raise _unknown_key_error(dotted, prefix, list(fields), _where(_COMMAND_LINE))
            field, child_tp = fields[part], _hints(cls)[part]
        else:
            child_tp = _mapping_value_type(tp)
        if i == len(parts) - 1:
            if _wants_text(child_tp) and _is_plain_scalar(value):
                value = raw.strip()
            node[part] = value
            return
        child = node.get(part, _MISSING)
        if child is _MISSING:
            child = _default_mapping(field)
        elif child is None:
            child = {}
        elif isinstance(child, Mapping):
            child = dict(child)  # copy on the way down: the caller's mapping is never mutated
        else:
            how = f"; set the whole list instead, e.g. {dotted}=[...]" if isinstance(child, list) else ""
            raise ConfigError(
                f"cannot set '{key}' {_where(_COMMAND_LINE)}: '{dotted}' holds {_describe(child)}, "
                f"not a section{how}"
            )
        node[part] = child
        node, tp = child, child_tp


def _is_plain_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | datetime.date)


def _default_mapping(field: dataclasses.Field | None) -> dict:
    if field is not None:
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        if isinstance(default, Mapping):
            return dict(default)
    return {}


# ---------------------------------------------------------------------------------------- schema helpers


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # a bug in the schema, not in the user's config
        raise TypeError(
            f"cannot resolve the type annotations of config class {cls.__qualname__}: {exc}"
        ) from exc


@functools.cache
def _init_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in _UNION_TYPES:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _as_dataclass(tp: Any) -> type | None:
    tp = _strip_optional(tp)
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _mapping_value_type(tp: Any) -> Any:
    tp = _strip_optional(tp)
    if typing.get_origin(tp) in _DICT_TYPES:
        args = typing.get_args(tp)
        return args[1] if len(args) == 2 else None
    return None


def _wants_text(tp: Any) -> bool:
    tp = _strip_optional(tp)
    if tp is str or tp is Path:
        return True
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return all(isinstance(member.value, str) for member in tp)
    return False


# ------------------------------------------------------------------------------------------- validation


def _build_root(schema: type[T], data: Any, ctx: _Context) -> T:
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"a config schema must be a dataclass type, got {schema!r}")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config {_where(ctx.source)} must be a mapping of keys at the top level, got {_describe(data)}"
        )
    return _build(schema, data, "", ctx)


def _build(cls: type[T], data: Mapping, prefix: str, ctx: _Context) -> T:
    fields, hints = _init_fields(cls), _hints(cls)
    for name in data:
        if name not in fields:
            key = _join(prefix, name)
            raise _unknown_key_error(key, prefix, list(fields), ctx.where(key))
    kwargs = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = _validate(data[name], hints[name], key, ctx)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required value for '{key}' {ctx.where(key)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        what = f"section '{prefix}'" if prefix else "config"
        message = str(exc) or type(exc).__name__
        raise ConfigError(f"invalid {what} {ctx.where(prefix, section=True)}: {message}") from exc


def _validate(value: Any, tp: Any, key: str, ctx: _Context) -> Any:
    try:
        return _convert(value, tp, key, ctx)
    except _Mismatch as exc:
        hint = _BOOL_HINT if isinstance(value, bool) and _wants_text(tp) else ""
        raise ConfigError(
            f"invalid value for '{key}' {ctx.where(key)}: expected {_type_name(tp)}, "
            f"got {_describe(value)}{exc.detail}{hint}"
        ) from None


def _convert(value: Any, tp: Any, key: str, ctx: _Context) -> Any:
    """Check ``value`` against ``tp`` and convert it; ``_Mismatch`` if it does not fit at this level."""
    if tp is Any or tp is object:
        return value
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise _Mismatch()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNION_TYPES:
        return _convert_union(value, args, key, ctx)
    if origin is Literal:
        for allowed in args:
            if type(value) is type(allowed) and value == allowed:
                return allowed
        raise _Mismatch()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _convert_enum(value, tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:  # an empty section ("trainer:" with nothing under it) takes every default
            value = {}
        if not isinstance(value, Mapping):
            raise _Mismatch()
        return _build(tp, value, key, ctx)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch()
    if tp is float:
        return _convert_float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch()
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, str | os.PathLike) and os.fspath(value) != "":
            return tp(value)
        raise _Mismatch(" (an empty path)" if value == "" else "")
    container = origin if origin is not None else tp
    if container in _LIST_TYPES:
        if not isinstance(value, list | tuple):
            raise _Mismatch()
        item = args[0] if args else Any
        return [_validate(v, item, f"{key}[{i}]", ctx) for i, v in enumerate(value)]
    if container is tuple:
        return _convert_tuple(value, args, key, ctx)
    if container in _DICT_TYPES:
        if not isinstance(value, Mapping):
            raise _Mismatch()
        key_tp, value_tp = args if len(args) == 2 else (Any, Any)
        return {
            _convert_key(k, key_tp, _join(key, k), ctx): _validate(v, value_tp, _join(key, k), ctx)
            for k, v in value.items()
        }
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch()
    raise TypeError(f"unsupported type {tp!r} for config field '{key}'")


def _convert_union(value: Any, args: tuple, key: str, ctx: _Context) -> Any:
    if value is None and type(None) in args:
        return None
    nested: list[ConfigError] = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, key, ctx)
        except _Mismatch:
            continue
        except ConfigError as exc:  # the value had the right shape but something inside it is wrong
            nested.append(exc)
    if nested:
        raise nested[0]
    raise _Mismatch()


def _convert_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, tp):
        return value
    by_value_ok = not isinstance(value, bool) or any(isinstance(m.value, bool) for m in tp)
    if by_value_ok:
        with contextlib.suppress(ValueError, TypeError):
            return tp(value)
    if isinstance(value, str) and value in tp.__members__:
        return tp.__members__[value]
    raise _Mismatch()


def _convert_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            pass
    raise _Mismatch()


def _convert_tuple(value: Any, args: tuple, key: str, ctx: _Context) -> tuple:
    if not isinstance(value, list | tuple):
        raise _Mismatch()
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_validate(v, args[0], f"{key}[{i}]", ctx) for i, v in enumerate(value))
    if len(value) != len(args):
        raise _Mismatch(f" with {len(value)} items instead of {len(args)}")
    return tuple(_validate(v, t, f"{key}[{i}]", ctx) for i, (v, t) in enumerate(zip(value, args)))


def _convert_key(k: Any, tp: Any, key: str, ctx: _Context) -> Any:
    try:
        return _convert(k, tp, key, ctx)
    except _Mismatch:
        raise ConfigError(
            f"invalid key '{key}' {ctx.where(key)}: keys must be {_type_name(tp)}, got {_describe(k)}"
        ) from None


# --------------------------------------------------------------------------------------------- writing


def _plain(value: Any, key: str) -> Any:
    if isinstance(value, enum.Enum):
        return _plain(value.value, key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes | datetime.date):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name), _join(key, f.name))
            for f in dataclasses.fields(value)
            if f.init
        }
    if isinstance(value, Mapping):
        return {_plain(k, key): _plain(v, _join(key, k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(
        f"cannot write '{key or 'config'}' as YAML: {type(value).__name__} values are not supported"
    )


def _atomic_write_text(path: Path, text: str) -> None:
    from interplay.core.data import atomic_write

    try:
        with atomic_write(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {path}: {exc.strerror or exc}") from exc

"""YAML configs mapped onto nested dataclasses, with ``--set a.b=value`` overrides.

A schema is a dataclass whose fields are ``int``, ``float``, ``bool``, ``str``, ``Path``, ``Literal[...]``,
``Optional[...]`` / ``X | None``, ``list[...]``, ``tuple[...]``, ``dict[str, ...]``, ``Any``, enums, or
further dataclasses (sections). Loading checks every key against the schema: an unknown key, a missing
required key, a value of the wrong type or a value refused by the schema's ``__post_init__`` raises
:class:`~imf_kg.errors.ConfigError` with one line naming the file, the line, the key path and what was
expected, e.g. ``configs/imf/umls.yaml:7: train.epochs: expected an integer, found string 'ten'``.

Conversions are strict (an integer field refuses ``2.5`` and ``"2"``; a string field refuses ``7``), with
two exceptions: an integer is accepted for a float field, and a string that spells a number is accepted for
a float field, because PyYAML reads ``1e-3`` (no dot) as a string.

A file may start from another with a top-level ``base: other.yaml`` (relative to its folder): the base is
loaded first and the file's keys are laid over it, sections merging key by key (``load_config``; the file
reading, its bounds and the inheritance are in :mod:`imf_kg.config_files`). A variant
of a config then holds only what differs, e.g. ``configs/hgnn_ima/imdb_tuned.yaml``.

Round trip: ``load_config(save_config(cfg, path), type(cfg)) == cfg`` (the saved file is the resolved
config, with no ``base``).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Iterable, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from imf_kg.config_files import MAX_CONFIG_BYTES, KeyPath, check_yaml_bounds, read_config_file
from imf_kg.config_files import describe_value as _describe_value
from imf_kg.config_files import dotted_path as _dotted
from imf_kg.config_files import one_line as _one_line
from imf_kg.errors import ConfigError
from imf_kg.io import atomic_write_text

__all__ = ["apply_overrides", "check_yaml_bounds", "config_from_dict", "config_to_dict", "load_config",
           "parse_override", "save_config"]

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ public
def load_config(path: str | Path, schema: type[T], overrides: Iterable[str] = ()) -> T:
    """Read the YAML file ``path`` into an instance of the dataclass ``schema``, then apply ``overrides``.

    A file may start from another: a top-level ``base: other.yaml`` (a path relative to the file's folder)
    loads ``other.yaml`` first (itself possibly with a base) and lays the file's own keys over it. Sections
    (mappings) merge key by key, at every depth; any other value, lists included, replaces the base's. An
    error in a key names the file and line the key came from, the base file's for an inherited key.
    """
    path = Path(path)
    data, lines = read_config_file(path)
    try:
        instance = config_from_dict({} if data is None else data, schema, source=str(path), lines=lines)
    except RecursionError:
        raise ConfigError(f"{path}: a recursive YAML alias; expected plain values") from None
    return apply_overrides(instance, overrides)


def config_from_dict(data: Any, schema: type[T], source: str = "<config>", lines: dict | None = None) -> T:
    """Check ``data`` (parsed YAML) against ``schema`` and build the instance; ``source`` names it in errors."""
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass type, not {schema!r}")
    return _Converter(source, lines or {}).convert(data, schema, ())


def apply_overrides(instance: T, overrides: Iterable[str]) -> T:
    """A copy of ``instance`` with each ``"a.b.c=value"`` applied in order (``instance`` is left unchanged).

    Values are parsed as YAML (``dim=64`` is an integer, ``name=tucker`` a string, ``dims=[1, 2]`` a list,
    ``patience=null`` ``None``); list items are addressed by position (``layers.0=8``). The result is
    checked against the schema exactly like a file, so an unknown key or a wrong type raises
    :class:`ConfigError` naming the override.
    """
    schema = type(instance)
    for override in overrides:
        keys, value = parse_override(override)
        data = config_to_dict(instance)
        _set_path(data, keys, value, override)
        instance = config_from_dict(data, schema, source=f"--set {override}")
    return instance


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``"train.epochs=5"`` -> ``(["train", "epochs"], 5)``; digits address list items."""
    key, sep, raw = str(text).partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ConfigError(f"--set {text}: expected key.path=value, e.g. train.epochs=5")
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--set {key.strip()}=...: the value has {len(raw):,} characters; "
                          f"expected under {MAX_CONFIG_BYTES:,}")
    check_yaml_bounds(raw, f"--set {_one_line(text)[:80]}", lines=False)
    try:
        value = yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError) as err:
        raise ConfigError(f"--set {_one_line(text)}: the value is not valid YAML ({err.__class__.__name__})") from None
    return [int(p) if p.strip().isdigit() else p.strip() for p in parts], value


def config_to_dict(instance: Any) -> Any:
    """Plain YAML-safe data (dicts, lists, str, numbers, bools, None) from a config instance."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        return {f.name: config_to_dict(getattr(instance, f.name)) for f in dataclasses.fields(instance) if f.init}
    if isinstance(instance, enum.Enum):
        return config_to_dict(instance.value)
    if isinstance(instance, PurePath):
        return str(instance)
    if isinstance(instance, Mapping):
        return {str(k): config_to_dict(v) for k, v in instance.items()}
    if isinstance(instance, (list, tuple)):
        return [config_to_dict(v) for v in instance]
    return instance


def save_config(instance: Any, path: str | Path) -> Path:
    """Write ``instance`` as YAML atomically, keys in schema order."""
    text = yaml.safe_dump(config_to_dict(instance), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------- internals
class _Converter:
    """Converts parsed YAML to schema types; knows the source name and the line of each key for errors."""

    def __init__(self, source: str, lines: dict[KeyPath, int | tuple[str, int]]):
        self.source = source
        self.lines = lines  # a line of ``source``, or (file, line) where keys come from several files (bases)

    def fail(self, path: KeyPath, message: str) -> ConfigError:
        line = self._line_of(path)
        if isinstance(line, tuple):
            where = f"{line[0]}:{line[1]}"
        else:
            where = f"{self.source}:{line}" if line else self.source
        error = ConfigError(f"{where}: {_dotted(path) or '(top level)'}: {message}")
        error.key_path = path
        return error

    def _line_of(self, path: KeyPath) -> int | tuple[str, int] | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def wrong(self, path: KeyPath, tp: Any, value: Any) -> ConfigError:
        return self.fail(path, f"expected {_describe_type(tp)}, found {_describe_value(value)}")

    def convert(self, value: Any, tp: Any, path: KeyPath) -> Any:
        if tp is Any or tp is object:
            return value
        origin, args = get_origin(tp), get_args(tp)
        if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
            members = [a for a in args if a is not type(None)]
            if value is None and len(members) < len(args):
                return None
            if len(members) == 1:  # Optional[X]: keep X's error when it is about a key deeper inside
                try:
                    return self.convert(value, members[0], path)
                except ConfigError as err:
                    if getattr(err, "key_path", None) == path and not dataclasses.is_dataclass(members[0]):
                        raise self.wrong(path, tp, value) from None
                    raise
            for member in members:
                try:
                    return self.convert(value, member, path)
                except ConfigError:
                    continue
            raise self.wrong(path, tp, value)
        if tp is type(None):
            if value is None:
                return None
            raise self.wrong(path, tp, value)
        if origin is Literal:
            if any(type(value) is type(a) and value == a for a in args):
                return value
            raise self.wrong(path, tp, value)
        if dataclasses.is_dataclass(tp):
            return self._dataclass(value, tp, path)
        if value is None:
            raise self.wrong(path, tp, value)
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise self.wrong(path, tp, value)
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self.wrong(path, tp, value)
        if tp is float:
            return self._float(value, tp, path)
        if tp is str:
            if isinstance(value, str):
                return value
            raise self.wrong(path, tp, value)
        if isinstance(tp, type) and issubclass(tp, PurePath):
            if isinstance(value, (str, PurePath)):
                return tp(value)
            raise self.wrong(path, tp, value)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            for member in tp:
                if value == member.value or value == member.name or value is member:
                    return member
            raise self.wrong(path, tp, value)
        if tp in (list, tuple, dict):  # bare containers: items unchecked
            origin, args = tp, ()
        if origin in (list, Sequence, typing.Sequence, tuple):
            if not isinstance(value, (list, tuple)):
                raise self.wrong(path, tp, value)
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                if len(value) != len(args):
                    raise self.fail(path, f"expected {_describe_type(tp)}, found a list of {len(value)} items")
                return tuple(self.convert(v, a, path + (i,)) for i, (v, a) in enumerate(zip(value, args)))
            item_type = args[0] if args else Any
            items = [self.convert(v, item_type, path + (i,)) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin in (dict, Mapping, typing.Mapping):
            if not isinstance(value, Mapping):
                raise self.wrong(path, tp, value)
            key_type, value_type = args if args else (Any, Any)
            return {
                self.convert(k, key_type, path + (str(k),)): self.convert(v, value_type, path + (str(k),))
                for k, v in value.items()
            }
        raise TypeError(f"config schema type {tp!r} at {_dotted(path)} is not supported by imf_kg.config")

    def _float(self, value: Any, tp: Any, path: KeyPath) -> float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise self.wrong(path, tp, value)
        if number != number:  # NaN compares unequal to itself; no setting means "not a number"
            raise self.fail(path, f"expected a number, found {value!r} (not a number)")
        return number

    def _dataclass(self, value: Any, cls: type, path: KeyPath, base: Any = None) -> Any:
        """``cls`` from the mapping ``value``; keys it lacks come from ``base`` (an instance) or the defaults."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise self.wrong(path, cls, value)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in value:
            if key not in fields:
                raise self.fail(path + (str(key),), f"unknown key; expected one of {', '.join(fields)}")
        hints = get_type_hints(cls)
        kwargs = {}
        for name, spec in fields.items():
            hint = hints.get(name, Any)
            if name in value:
                default = _section_default(spec, hint, base)
                if default is not None and isinstance(value[name], Mapping):
                    # a partial section keeps the enclosing schema's defaults for that section (e.g. a node
                    # config's train section defaults to metric macro_f1, not TrainConfig's mrr)
                    kwargs[name] = self._dataclass(value[name], type(default), path + (name,), base=default)
                else:
                    kwargs[name] = self.convert(value[name], hint, path + (name,))
            elif base is not None:
                kwargs[name] = getattr(base, name)
            elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise self.fail(path + (name,), f"missing required key ({_describe_type(hint)})")
        try:
            return cls(**kwargs)
        except ConfigError as err:
            # __post_init__ messages start with the field name ("epochs: expected ..."): add the section path
            message = str(err)
            field_name = message.split(":", 1)[0]
            if field_name in fields:
                raise self.fail(path + (field_name,), message.split(":", 1)[1].strip()) from None
            raise self.fail(path, message) from None
        except (TypeError, ValueError) as err:
            raise self.fail(path, f"{cls.__name__} refused these values ({err})") from None


def _section_default(spec: dataclasses.Field, hint: Any, base: Any) -> Any:
    """The default instance of a dataclass-typed field (from ``base`` when given), or None."""
    if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
        return None
    if base is not None:
        default = getattr(base, spec.name)
    elif spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
    elif spec.default is not dataclasses.MISSING:
        default = spec.default
    else:
        return None
    return default if isinstance(default, hint) else None


def _set_path(data: Any, keys: list, value: Any, override: str) -> None:
    target = data
    for depth, key in enumerate(keys[:-1]):
        if isinstance(target, list) and isinstance(key, int):
            if key >= len(target):
                raise ConfigError(f"--set {override}: {_dotted(tuple(keys[:depth + 1]))}: "
                                  f"index out of range; the list has {len(target)} items")
        elif isinstance(target, dict):
            key = str(key)
            if target.get(key) is None:  # an unset optional section: start it from its defaults
                target[key] = {}
        else:
            raise ConfigError(f"--set {override}: {_dotted(tuple(keys[:depth]))}: holds {_describe_value(target)}, "
                              "not a section; expected a key path into sections")
        target = target[key]
    last = keys[-1]
    if isinstance(target, list) and isinstance(last, int):
        if last >= len(target):
            raise ConfigError(f"--set {override}: {_dotted(tuple(keys))}: index out of range; "
                              f"the list has {len(target)} items")
        target[last] = value
    elif isinstance(target, dict):
        target[str(last)] = value
    else:
        raise ConfigError(f"--set {override}: {_dotted(tuple(keys[:-1]))}: holds {_describe_value(target)}, "
                          "not a section; expected a key path into sections")


def _describe_type(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        names = [_describe_type(a) for a in args if a is not type(None)]
        return " or ".join(names + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return f"a mapping (section {tp.__name__})"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin in (list, Sequence, typing.Sequence) or tp is list:
        return f"a list of {_describe_type(args[0])}" if args else "a list"
    if origin is tuple or tp is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} items ({', '.join(_describe_type(a) for a in args)})"
        return f"a list of {_describe_type(args[0])}" if args else "a list"
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        return "a mapping"
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if tp in simple:
        return simple[tp]
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path (string)"
    return getattr(tp, "__name__", str(tp))

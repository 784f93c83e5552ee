"""Reading config files: bounds on a YAML text, the file and line of every key (for errors), and ``base:``
inheritance. :mod:`imf_kg.config` maps what this reads onto schema dataclasses.

A file may start from another with a top-level ``base: other.yaml`` (relative to its folder): the base is read
first and the file's keys are laid over it (:func:`merge_sections`). Errors are :class:`ConfigError` lines naming
the file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from imf_kg.errors import ConfigError

KeyPath = tuple  # of str (mapping keys) and int (list positions)

# Bounds on what a config document may be, checked before PyYAML composes it: PyYAML's scanner takes time
# cubic in flow nesting (seconds at 1,000 levels) and its composer recurses per level, and nested aliases
# expand exponentially when the schema walks them. Real configs are a few kilobytes, a few levels deep.
MAX_CONFIG_BYTES = 1 << 20
MAX_NESTING = 64
MAX_INDENT = 512
MAX_EXPANDED_NODES = 100_000
BASE_KEY = "base"  # top-level key of a config that starts from another file (``load_config``)
MAX_BASE_DEPTH = 16


def _read_document(path: Path) -> tuple[Any, dict[KeyPath, tuple[str, int]]]:
    """Parse one YAML config file: (its data, ``{key path: (file, line)}``); no base resolution."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file; expected a YAML file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: byte 0x{raw[err.start]:02x} is not UTF-8; expected a UTF-8 YAML file") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {len(raw):,} bytes; expected a config file under {MAX_CONFIG_BYTES:,} bytes")
    check_yaml_bounds(text, str(path))
    try:
        loader = yaml.SafeLoader(text)
        try:  # one parse: the node tree gives the key lines, and the data is constructed from it
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({one_line(err.problem or err.context)}); "
                          "expected a YAML mapping") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({one_line(err)}); expected a YAML mapping") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply; expected a flat YAML mapping of settings") from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as err:
        # PyYAML's constructors raise these for a bad scalar under an explicit tag (!!int x, !!timestamp ...)
        raise ConfigError(f"{path}: invalid YAML value ({type(err).__name__}: {one_line(err)}); "
                          "expected plain YAML scalars") from None
    lines = _key_lines(node, str(path)) if node is not None else {}
    return data, {key: (str(path), line) for key, line in lines.items()}


def read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[Any, dict[KeyPath, tuple[str, int]]]:
    """The data of the config file ``path`` with its ``base:`` chain resolved and merged under it, and the
    ``{key path: (file, line)}`` of every key, the file a key came from (see :func:`imf_kg.config.load_config`).
    ``chain``: the files that led here through their bases (to refuse cycles)."""
    data, lines = _read_document(path)
    if not isinstance(data, dict) or BASE_KEY not in data:
        return data, lines
    data = dict(data)
    reference = data.pop(BASE_KEY)
    where = f"{path}:{lines.pop((BASE_KEY,))[1]}: {BASE_KEY}"
    if not isinstance(reference, str) or not reference.strip():
        raise ConfigError(f"{where}: expected the path of a YAML config file (relative to {path.parent}), "
                          f"found {describe_value(reference)}")
    base_path = path.parent / reference
    here = path.resolve()
    visited = (*chain, here)
    if base_path.resolve() in visited:
        loop = " -> ".join(str(p) for p in (*visited, base_path.resolve()))
        raise ConfigError(f"{where}: {reference!r} is already in the chain of bases ({loop}); "
                          "expected bases that do not lead back to a file that uses them")
    if len(visited) > MAX_BASE_DEPTH:
        raise ConfigError(f"{where}: more than {MAX_BASE_DEPTH} bases in a chain; expected a short chain")
    if not base_path.is_file():
        raise ConfigError(f"{where}: no such config file {str(base_path)!r}; expected a YAML file, "
                          f"its path relative to the folder of {path.name}")
    base_data, base_lines = read_config_file(base_path, visited)
    if base_data is None:
        base_data = {}
    if not isinstance(base_data, dict):
        raise ConfigError(f"{where}: {base_path} holds {describe_value(base_data)}; "
                          "expected a base config that is a YAML mapping")
    replaced: list[KeyPath] = []
    merged = merge_sections(base_data, data, replaced=replaced)
    kept = {key: at for key, at in base_lines.items() if not any(key[:len(r)] == r for r in replaced)}
    return merged, {**kept, **lines}


def merge_sections(base: Mapping, own: Mapping, path: KeyPath = (), replaced: list[KeyPath] | None = None) -> dict:
    """``own`` laid over ``base``, as a config over its base: mappings merge key by key, at every depth; any other
    value replaces the base's (and its key path, below ``path``, goes to ``replaced`` when given)."""
    merged = dict(base)
    for key, value in own.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_sections(merged[key], value, path + (key,), replaced)
        else:
            if key in merged and replaced is not None:
                replaced.append(path + (key,))
            merged[key] = value
    return merged


def check_yaml_bounds(text: str, where: str, lines: bool = True) -> None:
    """Refuse, with one :class:`ConfigError` line, a YAML text too deep, too indented or too alias-heavy to load.

    Two passes, both linear: a character pass bounds flow nesting (``[[[...`` and ``{{{...``) and
    indentation before PyYAML's scanner sees them; then PyYAML's event stream (iterative, so no recursion)
    bounds block nesting, refuses an alias used inside its own anchor, and counts the nodes the document
    expands to with every alias substituted. ``where`` names the file (``lines``: say ``file:line``) or the
    override. Brackets inside quoted strings count too, so a string with more than :data:`MAX_NESTING`
    unclosed brackets in a row is refused; no real setting looks like that.
    """
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip(" "))
        if indent > MAX_INDENT:
            at = f"{where}:{number}" if lines else where
            raise ConfigError(f"{at}: indented {indent} columns; expected at most {MAX_INDENT}")
        comment = line.find(" #")
        body = line if comment < 0 else line[:comment]
        if body.lstrip().startswith("#"):
            continue
        for char in body:
            if char in "[{":
                depth += 1
                if depth > MAX_NESTING:
                    at = f"{where}:{number}" if lines else where
                    raise ConfigError(f"{at}: YAML nested more than {MAX_NESTING} levels deep; "
                                      "expected a config of a few levels")
            elif char in "]}" and depth:
                depth -= 1
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    stack: list[list] = [[None, 0]]  # per open collection: [anchor, expanded nodes so far]
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            at = f"{where}:{event.start_mark.line + 1}" if lines and event.start_mark else where
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([event.anchor, 0])
                if len(stack) > MAX_NESTING + 1:
                    raise ConfigError(f"{at}: YAML nested more than {MAX_NESTING} levels deep; "
                                      "expected a config of a few levels")
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = stack.pop()
                size += 1
                if anchor is not None:
                    sizes[anchor] = size
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:
                    what = "inside its own anchor" if any(a == event.anchor for a, _ in stack) else "before its anchor"
                    raise ConfigError(f"{at}: the alias *{event.anchor} is used {what} (a recursive YAML alias); "
                                      "expected plain values")
                size = sizes[event.anchor]
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            else:
                continue
            stack[-1][1] += size
            if sum(count for _, count in stack) > MAX_EXPANDED_NODES:
                raise ConfigError(f"{at}: YAML aliases expand to more than {MAX_EXPANDED_NODES:,} values; "
                                  "expected a config without nested alias chains")
    except yaml.YAMLError:
        return  # the loader reports malformed YAML itself, with its own line
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply; expected a config of a few levels") from None


def one_line(value: Any) -> str:
    """Error text folded onto one line (PyYAML's reader errors span several)."""
    return " ".join(str(value).split())


def _key_lines(node: yaml.Node, source: str, path: KeyPath = ()) -> dict[KeyPath, int]:
    """1-based line of every key path in a composed YAML document; refuses duplicate keys."""
    lines: dict[KeyPath, int] = {}
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise ConfigError(f"{source}:{line}: {dotted_path(path + (key,))}: duplicate key; expected each key once")
            seen.add(key)
            lines[path + (key,)] = line
            lines.update(_key_lines(value_node, source, path + (key,)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            lines.update(_key_lines(item, source, path + (i,)))
    return lines


def dotted_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_value(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    kind = next((name for t, name in kinds.items() if type(value) is t), type(value).__name__)
    if isinstance(value, (list, dict)):
        return kind
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"

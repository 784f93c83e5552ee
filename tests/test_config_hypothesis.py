"""Property tests of the config parser against hostile input.

For the three schemas users write (the IMF ``ExperimentConfig``, node_tasks' ``NodeExperimentConfig`` and the
shared ``TrainConfig``), whatever YAML document or ``--set`` override the parser gets, the outcome is either

* a config equal to what the YAML says (keys the document leaves out keep the enclosing schema's defaults,
  also inside a section given in part), or
* a :class:`~imf_kg.errors.ConfigError` whose message is one line, starts with the file (or ``--set ...``)
  and names the key path; for a single change to a valid document, that path leads to the change.

Never another exception. The command line and hostile documents (deep nesting, alias bombs, bad tags) are
tested in test_config_cli_and_hostile.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
import types
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from imf_kg.config import apply_overrides, config_from_dict, config_to_dict, load_config
from imf_kg.errors import ConfigError
from imf_kg.experiment import ExperimentConfig
from imf_kg.training import TrainConfig
from node_tasks.train import NodeExperimentConfig

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMAS = {"imf": ExperimentConfig, "node": NodeExperimentConfig, "train": TrainConfig}
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- oracle
def expected_config(schema: type, data: Mapping, defaults) -> dict:
    """What loading ``data`` into ``schema`` must give: ``data``'s values, and for an absent key the value of
    ``defaults`` (an instance); a section given as a mapping is filled from ``defaults``' own section (a node
    config's ``train:`` keeps the node defaults, not TrainConfig's)."""
    hints = get_type_hints(schema)
    unknown = set(data) - {f.name for f in dataclasses.fields(schema)}
    assert not unknown, f"unknown keys {sorted(map(str, unknown))} of {schema.__name__} were accepted"
    out = {}
    for spec in dataclasses.fields(schema):
        name = spec.name
        section = hints[name] if dataclasses.is_dataclass(hints[name]) else None
        if name not in data:
            out[name] = getattr(defaults, name)
        elif section is not None and isinstance(data[name], Mapping):
            out[name] = expected_config(section, data[name], getattr(defaults, name))
        else:
            out[name] = data[name]
    return out


def same(actual, expected) -> bool:
    """``actual`` (a config object or value) holds exactly ``expected`` (parsed YAML), allowing the documented
    conversions: int or numeric string -> float, list -> tuple."""
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        expected = {f.name: getattr(expected, f.name) for f in dataclasses.fields(expected)}
    if dataclasses.is_dataclass(actual) and not isinstance(actual, type):
        return isinstance(expected, Mapping) and set(expected) == {f.name for f in dataclasses.fields(actual)} and all(
            same(getattr(actual, name), value) for name, value in expected.items())
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, float):
        if isinstance(expected, str):
            expected = float(expected)  # a float field accepts a numeric string (PyYAML reads 1e-3 as one)
        if not isinstance(expected, (int, float)):
            return False
        return (math.isnan(actual) and math.isnan(expected)) or actual == expected
    if isinstance(actual, (list, tuple)):
        return isinstance(expected, (list, tuple)) and len(actual) == len(expected) and all(
            same(a, e) for a, e in zip(actual, expected))
    if isinstance(actual, Mapping):
        return isinstance(expected, Mapping) and set(actual) == set(expected) and all(
            same(actual[k], expected[k]) for k in actual)
    return type(actual) is type(expected) and actual == expected


def conforms(value, tp) -> bool:
    """``value`` has the schema type ``tp`` exactly (what a loaded config must hold, whatever the YAML said)."""
    if tp is Any:
        return True
    origin, args = get_origin(tp), get_args(tp)
    if origin is Union or origin is types.UnionType:
        return any(conforms(value, member) for member in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        return isinstance(value, tp) and all(conforms(getattr(value, f.name), hints[f.name])
                                             for f in dataclasses.fields(tp))
    if tp in (bool, int, float, str):
        return type(value) is tp
    if origin in (list, tuple):
        if not isinstance(value, origin):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return all(conforms(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict) and all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    raise AssertionError(f"schema type {tp!r} not handled by this test")


def dotted(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def is_prefix(short, long) -> bool:
    return tuple(long[: len(short)]) == tuple(short)


def check_error(err: ConfigError, source: str, changed_path=None) -> None:
    message = str(err)
    assert "\n" not in message, message
    assert message.startswith(source), message
    key_path = getattr(err, "key_path", None)
    if changed_path is not None:
        assert key_path is not None, f"error without a key path: {message}"
        assert is_prefix(key_path, changed_path) or is_prefix(changed_path, key_path), (key_path, changed_path, message)
    if key_path:
        assert dotted(key_path) in message, message


# ------------------------------------------------------------------------------------------ strategies
# printable text only: control characters are refused by PyYAML with a two-line message (pinned below)
safe_text = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    safe_text, st.sampled_from(["1e-3", "nan", "-inf", "0x10", "yes", "off", "~", "null", "tucker", "max", "bf16"]),
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(safe_text, st.integers(-3, 3)), inner, max_size=4)),
    max_leaves=10,
)


def all_paths(data, prefix=()):
    """Every key path in a plain config dict: sections, leaves and list items."""
    out = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.append(prefix + (key,))
            out.extend(all_paths(value, prefix + (key,)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out.append(prefix + (index,))
            out.extend(all_paths(value, prefix + (index,)))
    return out


def container_at(data, path):
    for key in path:
        data = data[key]
    return data


def similar_values(current):
    """Values of the kind a field already holds (so that many changed documents stay valid), edge cases
    included (zero, negatives, huge numbers, NaN and inf, numeric strings, wrong-length lists), and near
    misses of a neighbouring kind (2.0 or "3" for an integer, 1 or "yes" for a boolean, 7 for a string)."""
    if isinstance(current, bool):
        right = st.booleans()
        near = st.sampled_from([0, 1, "true", "yes", "on", None, 1.0])
    elif isinstance(current, int):
        right = st.one_of(st.integers(-2, 10**6), st.integers(-(2**70), 2**70))
        near = st.sampled_from([2.0, 1.5, "3", True, False, None, "1e3"])
    elif isinstance(current, float):
        right = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                          st.sampled_from(["1e-3", "2.5E2", "-0", "inf", "nan", "1_000"]))
        near = st.sampled_from([True, False, None, "fast", "0x10", [0.1]])
    elif isinstance(current, str):
        right = st.one_of(safe_text, st.sampled_from(["auto", "cpu", "max", "min", "off", "bf16", "tucker", "mutan",
                                                      "learned", "mean", "structure", "ima", "onecycle"]))
        near = st.sampled_from([7, 2.5, True, None, ["cpu"], {"a": 1}])
    elif isinstance(current, list):
        items = similar_values(current[0]) if current else scalars
        right = st.one_of(st.lists(items, min_size=len(current), max_size=len(current)), st.lists(items, max_size=4))
        near = st.sampled_from(["text", 3, None, {"0": 1}])
    elif isinstance(current, dict):
        right = st.dictionaries(safe_text, st.one_of(st.floats(-10, 10), safe_text), max_size=3)
        near = st.sampled_from([[], ["a"], "a", 0])
    else:
        right = st.one_of(st.none(), st.integers(0, 10), st.floats(0, 1), safe_text)
        near = st.sampled_from([True, [1], {"a": 1}])
    return st.one_of(right, right, near)


@st.composite
def mutated_documents(draw):
    """``(schema name, document, changed path or None)``: a schema's full default document with one change."""
    name = draw(st.sampled_from(sorted(SCHEMAS)))
    document = config_to_dict(SCHEMAS[name]())
    paths = all_paths(document)
    kind = draw(st.sampled_from(["similar", "similar", "similar", "replace", "add", "delete", "none"]))
    if kind == "none":
        return name, document, None
    path = draw(st.sampled_from(paths))
    parent = container_at(document, path[:-1])
    if kind == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
        return name, document, None  # an absent key takes its default: never an error
    if kind == "add":
        sections = [()] + [p for p in paths if isinstance(container_at(document, p), dict)]
        section = draw(st.sampled_from(sections))
        target = container_at(document, section)
        key = draw(safe_text.filter(lambda k: k not in target and k != "<<"))
        target[key] = draw(yaml_values)
        return name, document, section + (key,)
    parent[path[-1]] = draw(similar_values(parent[path[-1]]) if kind == "similar" else yaml_values)
    return name, document, path


@contextmanager
def config_file(text: str | bytes):
    with tempfile.TemporaryDirectory(prefix="imf-kg-cfg-") as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        yield path


# ----------------------------------------------------------------------------------- file properties
@SETTINGS
@given(case=mutated_documents())
def test_a_changed_document_loads_exactly_or_names_the_change(case):
    name, document, changed = case
    schema = SCHEMAS[name]
    with config_file(yaml.safe_dump(document, allow_unicode=True)) as path:
        try:
            config = load_config(path, schema)
        except ConfigError as err:
            event("refused")
            assert changed is not None, f"the unchanged or shortened default document was refused: {err}"
            check_error(err, str(path), changed)
            return
    event("loaded" if changed is None else "loaded with a change")
    assert conforms(config, schema), config
    assert same(config, expected_config(schema, document, schema()))


NEAR_MISSES = [None, True, 0, -1, 2.0, 1.5, "3", "1e-3", "text", [], ["a"], {"a": 1}]


def section_classes(schema, found=None) -> list:
    """``schema`` and every dataclass section under it, each once."""
    found = [] if found is None else found
    if schema not in found:
        found.append(schema)
        for hint in get_type_hints(schema).values():
            if dataclasses.is_dataclass(hint):
                section_classes(hint, found)
    return found


def test_every_field_keeps_a_value_of_its_kind_or_names_itself():
    """Deterministic sweep complementing the properties: every field of every section class of the schemas
    (converted on its own, so each class is swept once) gets every near miss."""
    outcomes = {"loaded": 0, "refused": 0}
    for section in section_classes(ExperimentConfig) + section_classes(NodeExperimentConfig):
        document = config_to_dict(section())
        hints = get_type_hints(section)
        for path in all_paths(document):
            if dataclasses.is_dataclass(hints[path[0]]):
                continue  # a sub-section: swept as its own class
            parent, original = container_at(document, path[:-1]), container_at(document, path)
            if isinstance(original, (dict, list)) and original:
                continue  # a non-empty list: its items are swept
            for value in NEAR_MISSES:
                parent[path[-1]] = copy.deepcopy(value)
                try:
                    config = config_from_dict(document, section, source="sweep")
                    expected = expected_config(section, copy.deepcopy(document), section())
                except ConfigError as err:
                    outcomes["refused"] += 1
                    check_error(err, "sweep", path)
                    continue
                finally:
                    parent[path[-1]] = original
                outcomes["loaded"] += 1
                assert conforms(config, section), (section.__name__, path, value)
                assert same(config, expected), (section.__name__, path, value)
    assert outcomes["loaded"] > 100 and outcomes["refused"] > 500, outcomes


# YAML-ish tokens: structure, flow collections, anchors and aliases (recursive ones too), tags (with bad scalars
# under them), merge keys, quotes, comments, control characters, keys of the schemas
TOKENS = ["\n", "\n", "  ", " ", ": ", ":", "- ", "[", "]", "{", "}", ", ", "&a ", "*a", "!!str ", "!!null ",
          "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!set ", "!!python/object:os.system ", "!!binary ",
          "<<: ", "? ", "'", '"', "# c", "---", "...", "%YAML 1.1", "\t", "\x07", "\x0b", "é", "\ufeff", "train",
          "model", "epochs", "lr", "optim", "data", "features", "notes", "data_options", "modalities", "1", "-2",
          "2.5", "1e-3", ".nan", "true", "null", "~", "x", "|", ">"]


@SETTINGS
@given(schema_name=st.sampled_from(sorted(SCHEMAS)), text=st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=40).map("".join),
    st.builds(lambda doc, junk: yaml.safe_dump(doc) + junk, st.dictionaries(safe_text, yaml_values, max_size=3),
              st.lists(st.sampled_from(TOKENS), max_size=6).map("".join)),
))
def test_any_text_loads_as_what_yaml_says_or_is_a_one_line_config_error(schema_name, text):
    schema = SCHEMAS[schema_name]
    with config_file(text) as path:
        try:
            config = load_config(path, schema)
        except ConfigError as err:
            event("refused")
            check_error(err, str(path))
            return
    event("loaded")
    data = yaml.safe_load(text)
    assert conforms(config, schema), config
    assert same(config, expected_config(schema, data or {}, schema()))


# ------------------------------------------------------------------------------ override properties
key_part = st.one_of(st.sampled_from(["train", "model", "optim", "data", "epochs", "lr", "seed", "metric",
                                      "modalities", "scorer_dropouts", "gate_dropout", "features", "data_options",
                                      "expected", "notes", "0", "1", "5", "x", "", " ", "train ", "-1"]), safe_text)
override_value = st.one_of(
    st.sampled_from(["", "3", "0", "-1", "2.5", "1e-3", "null", "true", "[1, 2]", "[a, b, c]", "{a: 1}", "{epochs: 2}",
                     "[", "{a", "&x [1]", "*y", "!!python/name:os.system", "'unterminated", "a: b: c", "a=b",
                     "tucker", "macro_f1", "[0.1, 0.2, 0.3]", "[structure]"]),
    yaml_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("\n...")),
).filter(lambda raw: "\n" not in raw)


def oracle_set(data, keys: list, value) -> bool:
    """Apply one override to a plain config dict the way the documentation describes; False when the path
    cannot exist (through a scalar, or a list position out of range)."""
    target = data
    for key in keys[:-1]:
        if isinstance(target, list) and isinstance(key, int) and key < len(target):
            target = target[key]
        elif isinstance(target, dict):
            if target.get(str(key)) is None:
                target[str(key)] = {}
            target = target[str(key)]
        else:
            return False
    last = keys[-1]
    if isinstance(target, list) and isinstance(last, int) and last < len(target):
        target[last] = value
    elif isinstance(target, dict):
        target[str(last)] = value
    else:
        return False
    return True


def flow_yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")


@st.composite
def override_lists(draw):
    """``(schema name, [(key parts, raw value, separator)])``: mostly real key paths with values of their kind,
    some junk paths, values and separators."""
    name = draw(st.sampled_from(sorted(SCHEMAS)))
    document = config_to_dict(SCHEMAS[name]())
    paths = all_paths(document)
    overrides = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)):
            path = draw(st.sampled_from(paths))
            raw = draw(st.one_of(similar_values(container_at(document, path)).map(flow_yaml), override_value))
            keys = [str(k) for k in path]
        else:
            keys, raw = draw(st.lists(key_part, min_size=1, max_size=3)), draw(override_value)
        overrides.append((keys, raw, draw(st.sampled_from(["=", "=", "=", "", "=="]))))
    return name, overrides


@SETTINGS
@given(case=override_lists())
def test_overrides_apply_exactly_or_raise_one_line_config_errors(case):
    schema_name, overrides = case
    schema = SCHEMAS[schema_name]
    texts = [".".join(keys) + sep + raw for keys, raw, sep in overrides]
    base = schema()
    try:
        config = apply_overrides(base, texts)
    except ConfigError as err:
        event("refused")
        message = str(err)
        assert "\n" not in message and any(message.startswith(f"--set {t}") for t in texts), message
        if getattr(err, "key_path", None):
            assert dotted(err.key_path) in message, message
        assert config_to_dict(base) == config_to_dict(schema())  # the input instance is never changed
        return
    event("applied")
    # it applied: every override must be well-formed and reach a real path, and the result is what they say
    data = config_to_dict(base)
    for text in texts:
        key, sep, raw = text.partition("=")
        parts = key.strip().split(".")
        assert sep and all(p.strip() for p in parts), f"malformed override accepted: {text!r}"
        keys = [int(p) if p.strip().isdigit() else p.strip() for p in parts]
        assert oracle_set(data, keys, yaml.safe_load(raw)), f"override through a scalar accepted: {text!r}"
    assert conforms(config, schema), config
    assert same(config, expected_config(schema, data, schema()))

"""Configs at the command line (exit code 2, one line, no traceback) and hostile YAML documents and overrides
(non-UTF-8, bad tags, deep nesting, alias bombs, recursive aliases), each ending in one ConfigError line within
a time limit. Split from test_config_hypothesis.py, whose oracle and helpers it uses.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest
from test_config_hypothesis import REPO, check_error, config_file

from imf_kg.config import apply_overrides, check_yaml_bounds, load_config
from imf_kg.errors import ConfigError
from imf_kg.experiment import ExperimentConfig
from imf_kg.training import TrainConfig
from node_tasks.train import NodeExperimentConfig


# -------------------------------------------------------------------------------- the command line
BAD_CONFIGS = {
    "unknown key": ("data:\n  dataset: umls\n  datset: fb\n", r"config.yaml:3: data.datset: unknown key"),
    "wrong type": ("train:\n  epochs: many\n", r"config.yaml:2: train.epochs: expected an integer"),
    "nested garbage": ("model:\n  modalities: {a: [1, {b: 2}]}\n", r"model.modalities: expected a list"),
    "refused value": ("model:\n  entity_dim: 0\n", r"config.yaml:1: model: IMF config: entity_dim=0"),
    "not a mapping": ("- just\n- a list\n", r"\(top level\): expected a mapping"),
    "broken yaml": ("train: [1, 2\n", r"config.yaml:2: invalid YAML"),
    "code tag": ("notes: !!python/object/apply:os.system [echo]\n",
                 r"invalid YAML \(could not determine a constructor"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_train_cli_refuses_bad_configs_in_one_line(case, tmp_path, capsys):
    from imf_kg.cli import run

    text, message = BAD_CONFIGS[case]
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    assert run(["train", "--config", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("imf-kg: error: ") and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_train_cli_refuses_bad_overrides_and_node_configs(tmp_path, capsys):
    from imf_kg.cli import run
    from node_tasks.cli import main as node_main

    path = tmp_path / "config.yaml"
    path.write_text("train:\n  epochs: 1\n", encoding="utf-8")
    for override, message in (("train.epochs=zero", "train.epochs: expected an integer"),
                              ("train.epochs.x=1", "not a section"), ("model.nope=1", "model.nope: unknown key"),
                              ("epochs", "expected key.path=value")):
        assert run(["train", "--config", str(path), "--set", override, "--run-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and f"--set {override}" in err, err
    path.write_text("model:\n  hidden: [64]\nloss:\n  attention: heavy\n", encoding="utf-8")
    assert node_main(["train", "--config", str(path), "--run-dir", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("node-tasks: error: ") and "model.hidden: expected an integer" in err


def test_python_m_imf_kg_train_exits_2_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 0.01\n  momentum: 0.9\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "imf_kg", "train", "--config", str(path), "--run-dir",
                           str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "bad.yaml:3: optim.momentum: unknown key; expected one of optimizer, lr," in done.stderr


# ---------------------------------------------------- hostile documents: bounded before PyYAML parses
@contextmanager
def time_limit(seconds: int):
    def expire(*_):
        raise TimeoutError(f"still parsing after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


HOSTILE_DOCUMENTS = {
    "non-UTF-8 bytes": b"train:\n  metric: \xff\xfe\n",
    "recursive alias": b"notes: &x [*x]\n",
    "control character": b"notes: a\x07b\n",
    # PyYAML raises ValueError / IndexError / KeyError / AttributeError for a bad scalar under an explicit tag
    "!!int tag": b"train:\n  seed: !!int x\n",
    "!!float tag": b"optim:\n  lr: !!float \n",
    "!!bool tag": b"train:\n  progress: !!bool maybe\n",
    "!!timestamp tag": b"notes: !!timestamp 2001-13-45\n",
    # PyYAML's scanner takes time cubic in flow depth and its composer recurses once per level
    "deep flow nesting": b"notes: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "deep mapping nesting": b"notes: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n",
    "deep block nesting": b"notes:\n  " + b"- " * 3000 + b"x\n",
    "deep indentation": b"notes:\n" + b"".join(b" " * i + b"a:\n" for i in range(1, 1500)),
    # nine aliases per line, ten lines: 9**10 values once expanded
    "alias bomb": b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + b"".join(
        b"%c: &%c [" % (c, c) + b", ".join([b"*%c" % (c - 1)] * 9) + b"]\n" for c in range(ord("b"), ord("k"))),
    "alias before its anchor": b"notes: [*x, &x 1]\n",
    "oversized file": b"notes: '" + b"x" * (1 << 20) + b"'\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DOCUMENTS))
def test_hostile_documents_end_in_a_one_line_config_error(case):
    _check_document(HOSTILE_DOCUMENTS[case])


def test_anchors_nesting_and_brackets_within_the_bounds_still_load(tmp_path):
    """The guards refuse only what is out of bounds: shared anchors, a few levels of lists, brackets in text."""
    document = (b"train:\n  epochs: &e 3\n  seed: *e\n"
                b"notes: &n \"see [1] and {2}\"\n")
    with config_file(document) as path, time_limit(2):
        cfg = load_config(path, ExperimentConfig)
    assert cfg.train.epochs == 3 and cfg.train.seed == 3 and cfg.notes == "see [1] and {2}"
    check_yaml_bounds("a: " + "[" * 60 + "]" * 60 + "\nb: &b [1, 2]\nc: [*b, *b]\n", "inline")
    with pytest.raises(ConfigError, match="inline:1: YAML nested more than"):
        check_yaml_bounds("a: " + "[" * 65 + "]" * 65 + "\n", "inline")


def _check_document(document: bytes):
    escaped = None
    with config_file(document) as path, time_limit(2):
        try:
            load_config(path, ExperimentConfig)
        except ConfigError as err:
            check_error(err, str(path))
            return
        except Exception as err:  # reported outside the handler: a RecursionError's traceback upsets pytest
            escaped = f"{type(err).__name__} escaped: {str(err)[:120]}"
    pytest.fail(escaped or "a hostile document loaded", pytrace=False)


def test_override_with_a_bad_tagged_scalar_is_a_config_error():
    with pytest.raises(ConfigError):
        apply_overrides(TrainConfig(), ["seed=!!int x"])


@pytest.mark.parametrize("value", ["&x [*x]", "[" * 3000 + "]" * 3000])
def test_recursive_or_deep_override_value_is_refused(value):
    escaped = None
    try:
        with time_limit(2):
            apply_overrides(NodeExperimentConfig(), [f"data_options.seed={value}", "train.epochs=2"])
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    except Exception as err:  # reported outside the handler: a RecursionError's traceback upsets pytest
        escaped = f"{type(err).__name__} escaped"
    pytest.fail(escaped or "accepted a recursive value", pytrace=False)

"""YAML configs onto nested dataclasses: round trip, overrides, and one-line errors naming file, line and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import re

import pytest

from imf_kg.config import apply_overrides, config_from_dict, config_to_dict, load_config, save_config
from imf_kg.errors import ConfigError
from imf_kg.training import TrainConfig


@dataclass
class ModelSection:
    name: Literal["distmult", "tucker"] = "distmult"
    dim: int = 32
    dropout: float = 0.2
    hidden: list[int] = field(default_factory=lambda: [16, 8])
    kernel: tuple[int, int] = (3, 3)


@dataclass
class DataSection:
    dataset: str  # required
    root: Optional[Path] = None
    modalities: dict[str, float] = field(default_factory=dict)


@dataclass
class Experiment:
    data: DataSection
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    baseline: Optional[ModelSection] = None
    notes: str = ""


def write(tmp_path, text, name="exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_round_trip_gives_an_equal_object(tmp_path):
    original = Experiment(
        data=DataSection("umls", root=Path("/data/umls"), modalities={"text": 0.5}),
        model=ModelSection(name="tucker", dim=64, dropout=1e-3, hidden=[4], kernel=(5, 1)),
        train=TrainConfig(epochs=7, grad_clip=1.5, patience=3, amp="off", metric="fused/mrr"),
        baseline=ModelSection(),
        notes="yes",  # a YAML 1.1 boolean word: must stay a string
    )
    path = save_config(original, tmp_path / "saved.yaml")
    loaded = load_config(path, Experiment)
    assert loaded == original
    assert isinstance(loaded.model.kernel, tuple) and isinstance(loaded.data.root, Path)
    assert config_to_dict(loaded)["train"]["epochs"] == 7
    assert not list(tmp_path.glob("*.tmp"))


def test_defaults_fill_missing_keys_and_lists_convert(tmp_path):
    path = write(tmp_path, "data:\n  dataset: fb15k-237\nmodel:\n  hidden: [1, 2, 3]\n  dropout: 1e-3\n")
    cfg = load_config(path, Experiment)
    assert cfg.data.dataset == "fb15k-237" and cfg.model.hidden == [1, 2, 3]
    assert cfg.model.dropout == 0.001  # PyYAML reads 1e-3 as a string; float fields accept it
    assert cfg.train == TrainConfig()


def test_overrides_parse_values_as_yaml(tmp_path):
    path = write(tmp_path, "data:\n  dataset: umls\n")
    cfg = load_config(path, Experiment, [
        "model.dim=64", "model.name=tucker", "train.patience=null", "train.grad_clip=0.5", "model.hidden=[3]",
        "model.hidden.0=9", "data.modalities.image=1", "baseline.dim=8", "train.progress=false",
    ])
    assert cfg.model.dim == 64 and cfg.model.name == "tucker" and cfg.train.patience is None
    assert cfg.train.grad_clip == 0.5 and cfg.model.hidden == [9] and cfg.data.modalities == {"image": 1.0}
    assert cfg.baseline == ModelSection(dim=8) and cfg.train.progress is False


def test_apply_overrides_returns_a_new_instance():
    cfg = Experiment(data=DataSection("umls"))
    changed = apply_overrides(cfg, ["train.epochs=3"])
    assert changed.train.epochs == 3 and cfg.train.epochs == 1


@pytest.mark.parametrize("text, message", [
    ("data:\n  dataset: umls\nmodel:\n  dim: 8\n  dimm: 9\n", r"exp\.yaml:5: model\.dimm: unknown key; expected one of name, dim"),
    ("data:\n  dataset: umls\ntrain:\n  epochs: ten\n", r"exp\.yaml:4: train\.epochs: expected an integer, found string 'ten'"),
    ("data:\n  dataset: umls\ntrain:\n  epochs: 2.5\n", r"exp\.yaml:4: train\.epochs: expected an integer, found number 2\.5"),
    ("data:\n  dataset: umls\ntrain:\n  progress: 1\n", r"exp\.yaml:4: train\.progress: expected true or false"),
    ("data:\n  dataset: 7\n", r"exp\.yaml:2: data\.dataset: expected a string, found integer 7"),
    ("data:\n  dataset: umls\nmodel:\n  name: conve\n", r"exp\.yaml:4: model\.name: expected one of 'distmult', 'tucker'"),
    ("data:\n  dataset: umls\nmodel:\n  hidden: [1, x]\n", r"exp\.yaml:4: model\.hidden\[1\]: expected an integer"),
    ("data:\n  dataset: umls\nmodel:\n  kernel: [1, 2, 3]\n", r"model\.kernel: expected a list of 2 items"),
    ("data:\n  dataset: umls\ntrain:\n  grad_clip: fast\n", r"exp\.yaml:4: train\.grad_clip: expected a number or null"),
    ("data:\n  dataset: umls\ntrain:\n  epochs: 0\n", r"exp\.yaml:4: train\.epochs: expected an integer >= 1, found 0"),
    ("model:\n  dim: 8\n", r"exp\.yaml: data: missing required key"),
    ("data:\n  dataset: umls\n  dataset: wn18\n", r"exp\.yaml:3: data\.dataset: duplicate key"),
    ("data: [umls\n", r"exp\.yaml:2: invalid YAML"),
    ("- 1\n- 2\n", r"exp\.yaml: \(top level\): expected a mapping \(section Experiment\), found list"),
])
def test_file_errors_name_the_file_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(write(tmp_path, text), Experiment)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("override, message", [
    ("model.dimm=3", r"--set model\.dimm=3: model\.dimm: unknown key"),
    ("model.dim=big", r"--set model\.dim=big: model\.dim: expected an integer, found string 'big'"),
    ("model.dim.x=1", r"model\.dim: holds integer 32, not a section"),
    ("model.hidden.5=1", r"model\.hidden\[5\]: index out of range"),
    ("train.mode=best", r"train\.mode: expected one of 'max', 'min'"),
    ("model", r"--set model: expected key\.path=value"),
    ("=3", r"expected key\.path=value"),
])
def test_override_errors_name_the_override_and_key(tmp_path, override, message):
    path = write(tmp_path, "data:\n  dataset: umls\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, Experiment, [override])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml", Experiment)


def test_config_from_dict_names_its_source():
    with pytest.raises(ConfigError, match=r"^defaults: epochs: expected an integer"):
        config_from_dict({"epochs": "1"}, TrainConfig, source="defaults")


def test_a_partial_section_keeps_the_enclosing_schemas_defaults(tmp_path):
    """A node config's ``train:`` section with only ``epochs`` keeps metric macro_f1 (NodeExperimentConfig's
    default), exactly as ``--set train.epochs=...`` does; sections absent from the file are untouched."""
    from node_tasks.train import NodeExperimentConfig

    defaults = NodeExperimentConfig()
    path = tmp_path / "node.yaml"
    path.write_text("dataset: synthetic\ntrain:\n  epochs: 3\n")
    from_file = load_config(path, NodeExperimentConfig)
    from_override = apply_overrides(NodeExperimentConfig(dataset="synthetic"), ["train.epochs=3"])
    assert from_file.train.epochs == 3 and from_file.train.metric == defaults.train.metric == "macro_f1"
    assert from_file == from_override


def test_nan_is_refused_for_a_float_setting(tmp_path):
    from imf_kg.experiment import ExperimentConfig

    path = tmp_path / "nan.yaml"
    path.write_text("optim:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"nan\.yaml:2: optim\.lr: expected a number"):
        load_config(path, ExperimentConfig)


# ------------------------------------------------------------------------------------------ base: inheritance
BASE_TEXT = """\
data:
  dataset: umls
  modalities: {text: 0.5, image: 0.25}
model:
  name: tucker
  dim: 64
  hidden: [4, 2]
notes: from the base
"""


def test_a_base_file_is_loaded_first_and_the_file_laid_over_it(tmp_path):
    write(tmp_path, BASE_TEXT, "base.yaml")
    (tmp_path / "variants").mkdir()
    child = write(tmp_path, "base: ../base.yaml\nmodel:\n  dim: 8\n  hidden: [1]\ndata:\n  modalities: {text: 1.0}\n",
                  "variants/child.yaml")
    loaded = load_config(child, Experiment)
    assert loaded.model.name == "tucker"  # inherited from the base's section
    assert loaded.model.dim == 8  # the file's own value wins
    assert loaded.model.hidden == [1]  # a list replaces, it is not merged
    assert loaded.data.dataset == "umls"
    assert loaded.data.modalities == {"text": 1.0, "image": 0.25}  # mappings merge key by key
    assert loaded.notes == "from the base"
    # the resolved config round-trips without its base
    saved = save_config(loaded, tmp_path / "saved.yaml")
    assert "base:" not in saved.read_text()
    assert load_config(saved, Experiment) == loaded


def test_bases_chain_and_overrides_apply_last(tmp_path):
    write(tmp_path, BASE_TEXT, "a.yaml")
    write(tmp_path, "base: a.yaml\nmodel: {dim: 16}\nnotes: b\n", "b.yaml")
    c = write(tmp_path, "base: b.yaml\nnotes: c\n", "c.yaml")
    loaded = load_config(c, Experiment, ["model.dim=2"])
    assert (loaded.model.name, loaded.model.dim, loaded.notes) == ("tucker", 2, "c")
    assert load_config(c, Experiment).model.dim == 16


def test_an_error_in_an_inherited_key_names_the_base_file_and_line(tmp_path):
    base = write(tmp_path, BASE_TEXT.replace("dim: 64", "dim: sixty-four"), "base.yaml")
    child = write(tmp_path, "base: base.yaml\nnotes: child\n", "child.yaml")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(base))}:6: model\.dim: expected an integer"):
        load_config(child, Experiment)
    # the same key set in the child: the child's value replaces it, and an error in it names the child
    child.write_text("base: base.yaml\n\nmodel:\n  dim: ten\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(child))}:4: model\.dim: expected an integer"):
        load_config(child, Experiment)
    child.write_text("base: base.yaml\nmodel:\n  size: 3\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(child))}:3: model\.size: unknown key"):
        load_config(child, Experiment)


@pytest.mark.parametrize("base_line, message", [
    ("base: missing.yaml", r"child\.yaml:1: base: no such config file .*missing\.yaml"),
    ("base: 3", r"child\.yaml:1: base: expected the path of a YAML config file .*found integer 3"),
    ("base: child.yaml", r"child\.yaml:1: base: 'child\.yaml' is already in the chain of bases"),
    ("base: loop.yaml", r"loop\.yaml:1: base: 'child\.yaml' is already in the chain of bases"),
    ("base: list.yaml", r"child\.yaml:1: base: .*list\.yaml holds list; expected a base config that is a YAML mapping"),
])
def test_bad_bases_are_refused_naming_file_and_line(tmp_path, base_line, message):
    write(tmp_path, "base: child.yaml\n", "loop.yaml")
    write(tmp_path, "- 1\n- 2\n", "list.yaml")
    child = write(tmp_path, base_line + "\ndata: {dataset: umls}\n", "child.yaml")
    with pytest.raises(ConfigError, match=message):
        load_config(child, Experiment)


def test_a_too_long_chain_of_bases_is_refused(tmp_path):
    for i in range(20):
        write(tmp_path, f"base: c{i + 1}.yaml\n" if i < 19 else BASE_TEXT, f"c{i}.yaml")
    with pytest.raises(ConfigError, match=r"base: more than 16 bases in a chain"):
        load_config(tmp_path / "c0.yaml", Experiment)
    assert load_config(tmp_path / "c10.yaml", Experiment).model.dim == 64

"""``imf-kg encode``: features written to a folder, readable back; one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from imf_kg.cli import run
from imf_kg.data import load_kg
from imf_kg.encoders.precomputed import load_feature_matrix


def test_encode_text_and_structure_for_a_bundled_dataset(tmp_path):
    kg = load_kg("nations")
    described = kg.entity_names[:10]  # the last entities get no text: they must come out masked
    text_file = tmp_path / "nations_text.tsv"
    text_file.write_text("".join(f"{name}\tThe country {name}, a nation state.\n" for name in described))
    out = tmp_path / "features"
    status = run(["encode", "--dataset", "nations", "--text", "--text-file", str(text_file), "--structure",
                  "--structure-dim", "8", "--structure-epochs", "2", "--out", str(out),
                  "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert status == 0
    manifest = json.loads((out / "encode.json").read_text())
    assert manifest["entities"] == kg.num_entities == 14
    assert manifest["modalities"]["text"]["dim"] == 384 and manifest["modalities"]["text"]["coverage"] == 10
    text = load_feature_matrix(out / "text.pt", num_rows=kg.num_entities, dim=384)
    assert text.mask.tolist() == [name in described for name in kg.entity_names]
    structure = torch.load(out / "structure.pt", weights_only=True)
    assert structure["entity"].shape == (14, 8) and structure["relation"].shape == (kg.num_relations, 8)
    assert list((tmp_path / "cache").glob("text-*.npy"))  # the text features are cached too


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "nothing to encode"),
        (["--images", "somewhere"], "--image-weights"),
    ],
)
def test_encode_errors_are_one_line_exit_2(tmp_path, capsys, extra, message):
    status = run(["encode", "--dataset", "nations", "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1


def test_encode_without_text_reports_it(tmp_path, capsys):
    status = run(["encode", "--dataset", "nations", "--text", "--out", str(tmp_path / "o")])
    assert status == 2 and "no entity text" in capsys.readouterr().err


def test_encode_images_from_an_entity_folder_with_local_weights(tmp_path):
    import numpy as np
    import torchvision
    from PIL import Image

    kg = load_kg("nations")
    folder = tmp_path / "images"
    (folder / kg.entity_names[3]).mkdir(parents=True)  # layout 1: a sub-folder per entity, two images
    rng = np.random.default_rng(0)
    for path in (folder / kg.entity_names[3] / "a.png", folder / kg.entity_names[3] / "b.jpg",
                 folder / f"{kg.entity_names[0]}.png"):  # layout 2: <entity>.<ext>
        Image.fromarray(rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)).save(path)
    weights = tmp_path / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    out = tmp_path / "features"
    status = run(["encode", "--dataset", "nations", "--images", str(folder), "--image-backbone", "resnet18",
                  "--image-weights", str(weights), "--image-size", "64", "--out", str(out),
                  "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert status == 0
    image = load_feature_matrix(out / "image.pt", num_rows=kg.num_entities, dim=512)
    assert torch.nonzero(image.mask).flatten().tolist() == [0, 3]
    assert json.loads((out / "encode.json").read_text())["modalities"]["image"]["source"].startswith("resnet18:file:")

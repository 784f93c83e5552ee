"""Image encoder on small generated images with untrained weights (no download, small backbones)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from imf_kg.data.kg import KnowledgeGraph
from imf_kg.encoders.image import build_image_backbone, encode_images, entity_image_features, image_transform
from imf_kg.errors import ConfigError, DataFormatError

SIZE = 64  # low resolution keeps CPU time small; the pipeline is the same as at 224


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, suffix in enumerate([".png", ".jpg", ".png", ".jpeg"]):
        pixels = rng.integers(0, 256, size=(48 + 16 * i, 80, 3), dtype=np.uint8)  # varied, non-square sizes
        path = folder / f"img{i}{suffix}"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    Image.fromarray(rng.integers(0, 256, size=(40, 40), dtype=np.uint8), mode="L").save(folder / "gray.png")
    paths.append(str(folder / "gray.png"))
    return paths


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_features_shape_mask_and_missing_rows(image_files, resnet):
    encoded = encode_images([[image_files[0]], image_files[1], None, [], [image_files[4]]], backbone=resnet,
                            image_size=SIZE, batch_size=2, progress=False)
    assert encoded.values.shape == (5, 512) and encoded.dim == resnet.fc.in_features
    assert encoded.mask.tolist() == [True, True, False, False, True]
    assert torch.all(encoded.values[~encoded.mask] == 0)
    assert torch.all(encoded.values[encoded.mask].abs().sum(1) > 0)
    assert not torch.equal(encoded.values[0], encoded.values[1])


def test_several_images_per_entity_are_averaged(image_files, resnet):
    joint = encode_images([image_files[:3]], backbone=resnet, image_size=SIZE, batch_size=2, progress=False)
    single = encode_images([[p] for p in image_files[:3]], backbone=resnet, image_size=SIZE, progress=False)
    torch.testing.assert_close(joint.values[0], single.values.mean(0), atol=1e-5, rtol=1e-5)


def test_features_equal_the_backbone_without_its_classifier(image_files, resnet):
    encoded = encode_images([image_files[0]], backbone=resnet, image_size=SIZE, progress=False)
    with Image.open(image_files[0]) as image:
        batch = image_transform(SIZE)(image.convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        trunk = torch.nn.Sequential(*list(resnet.children())[:-1])  # everything before fc
        expected = trunk(batch).flatten(1)
    torch.testing.assert_close(encoded.values, expected, atol=1e-5, rtol=1e-5)
    assert isinstance(resnet.fc, torch.nn.Linear)  # the caller's model keeps its head


def test_vgg_gives_fc7_after_relu(image_files):
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11(weights=None).eval()
    encoded = encode_images(image_files[:2], backbone=vgg, image_size=32, progress=False)
    assert encoded.dim == 4096 == vgg.classifier[-1].in_features
    with Image.open(image_files[1]) as image:
        batch = image_transform(32)(image.convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        x = torch.flatten(vgg.avgpool(vgg.features(batch)), 1)
        fc7 = torch.relu(vgg.classifier[3](torch.relu(vgg.classifier[0](x))))
    torch.testing.assert_close(encoded.values[1], fc7[0], atol=1e-5, rtol=1e-4)
    assert encoded.values.min() >= 0


def test_local_weights_file_matches_in_memory_model_and_is_cached(image_files, resnet, tmp_path):
    weights = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), weights)
    items = [image_files[:2], None, image_files[3]]
    in_memory = encode_images(items, backbone=resnet, image_size=SIZE, progress=False)
    from_file = encode_images(items, backbone="resnet18", weights_path=weights, image_size=SIZE,
                              cache_dir=tmp_path / "cache", progress=False)
    torch.testing.assert_close(from_file.values, in_memory.values, atol=1e-6, rtol=1e-6)
    assert from_file.details["cache_hit"] is False
    again = encode_images(items, backbone="resnet18", weights_path=weights, image_size=SIZE,
                          cache_dir=tmp_path / "cache", progress=False)
    assert again.details["cache_hit"] is True and torch.equal(again.values, from_file.values)
    # a checkpoint that wraps the weights ({"state_dict": ...}) loads the same
    wrapped = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": resnet.state_dict(), "epoch": 3}, wrapped)
    model, dim, identity = build_image_backbone("resnet18", weights_path=wrapped)
    assert dim == 512 and identity.startswith("resnet18:file:")


def test_untrained_weights_are_never_cached(image_files, tmp_path):
    encoded = encode_images([image_files[0]], backbone="resnet18", image_size=SIZE, cache_dir=tmp_path,
                            progress=False)
    assert "cache" not in encoded.details and not list(tmp_path.iterdir())


def test_bad_inputs_raise_toolkit_errors(image_files, resnet, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="broken.jpg"):
        encode_images([[image_files[0], str(broken)]], backbone=resnet, image_size=SIZE, progress=False)
    with pytest.raises(ConfigError, match="unknown image backbone"):
        encode_images([image_files[0]], backbone="not_a_net", progress=False)
    weights = tmp_path / "resnet18.pt"
    torch.save(resnet.state_dict(), weights)
    with pytest.raises(DataFormatError, match="state_dict of a resnet34"):
        build_image_backbone("resnet34", weights_path=weights)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(DataFormatError, match="junk.pt"):
        build_image_backbone("resnet18", weights_path=junk)


def test_entity_image_features_uses_kg_images(image_files, resnet):
    kg = KnowledgeGraph.from_labeled_triples("toy", {"train": [("a", "r", "b"), ("b", "r", "c")]})
    kg.images = {0: image_files[:2], 2: [image_files[2]]}
    encoded = entity_image_features(kg, backbone=resnet, image_size=SIZE, progress=False)
    assert kg.features["image"].values.shape == (3, 512)
    assert kg.features["image"].mask.tolist() == [True, False, True]
    assert encoded.coverage == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(image_files, resnet, monkeypatch):
    # CUDA convolutions and matmuls default to TF32 on Ampere and later (10-bit mantissa): on an H100 that moved
    # 3 of 1,536 features by 1.6e-3. The path is compared in full fp32; TF32 stays the default for users.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu = encode_images(image_files[:3], backbone=resnet, image_size=SIZE, progress=False)
    cuda = encode_images(image_files[:3], backbone=resnet, image_size=SIZE, device="cuda", progress=False)
    assert cuda.values.device.type == "cpu"
    torch.testing.assert_close(cuda.values, cpu.values, atol=1e-3, rtol=1e-3)

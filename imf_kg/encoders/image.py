"""Image encoder: penultimate-layer features of a torchvision classification backbone.

The IMF paper uses VGG16 pre-trained on ImageNet and takes its penultimate layer: the 4096-d output of fc7
after ReLU, i.e. ``classifier[:-1]``. Any torchvision classification backbone works the same way: its last
``Linear`` (the class logits) is removed and the features that fed it are returned (ResNet-50: 2048-d).
Entities with several images get the mean of their image vectors; entities with none get zeros and mask False.

Weights come from a local file (``weights_path``: a state_dict of the full classification model), from
torchvision's weight enum (``weights="DEFAULT"``, which downloads, so only with a network), or are untrained
(``weights=None``: random, for tests; such features are never cached because they are not reproducible).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from imf_kg.encoders.cache import FeatureCache, hash_file, hash_strings
from imf_kg.encoders.modality import EncodedModality
from imf_kg.errors import ConfigError, DataFormatError, ToolkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def strip_classification_head(model: nn.Module) -> tuple[nn.Module, int]:
    """Remove a torchvision classifier's final ``Linear``; returns ``(feature extractor, feature_dim)``.

    Handles the layouts of torchvision's classification models: ``fc`` (ResNet, RegNet, GoogLeNet...),
    ``classifier`` as a ``Linear`` (DenseNet) or a ``Sequential`` ending in one (VGG, AlexNet, MobileNet,
    EfficientNet, ConvNeXt), and ``heads.head`` (ViT). ``feature_dim`` is the removed layer's ``in_features``.
    """
    if isinstance(getattr(model, "fc", None), nn.Linear):
        dim = model.fc.in_features
        model.fc = nn.Identity()
        return model, dim
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        model.classifier = nn.Identity()
        return model, classifier.in_features
    if isinstance(classifier, nn.Sequential) and isinstance(classifier[-1], nn.Linear):
        # VGG: classifier[:-1] ends with fc7 -> ReLU -> Dropout; dropout is the identity in eval mode
        model.classifier = classifier[:-1]
        return model, classifier[-1].in_features
    heads = getattr(model, "heads", None)
    if heads is not None and isinstance(getattr(heads, "head", None), nn.Linear):
        dim = heads.head.in_features
        heads.head = nn.Identity()
        return model, dim
    raise ConfigError(f"cannot find the classification layer of {type(model).__name__}; expected a torchvision "
                      "classifier with .fc, .classifier or .heads.head")


def _read_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise DataFormatError(path, None, f"an unreadable weights file ({type(err).__name__})",
                              "a torch state_dict saved with torch.save(model.state_dict())") from err
    for key in ("state_dict", "model"):  # training checkpoints often wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataFormatError(path, None, f"a {type(state).__name__}", "a dict of parameter name -> tensor")
    return state


def build_image_backbone(backbone: str | nn.Module = "vgg16", weights: str | None = None,
                         weights_path: str | Path | None = None) -> tuple[nn.Module, int, str]:
    """``(feature extractor in eval mode, feature_dim, identity)`` for a torchvision backbone.

    Args:
        backbone: a torchvision model name (``"vgg16"``, ``"resnet50"``, ...) or a classification ``nn.Module``.
        weights: torchvision weight name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) — downloads; ``None`` = untrained.
        weights_path: a local state_dict of the full classification model; takes precedence over ``weights``.

    ``identity`` is ``None`` when the features are not reproducible (untrained or a user-supplied module).
    """
    import torchvision

    if isinstance(backbone, nn.Module):
        model, name = copy.deepcopy(backbone), type(backbone).__name__  # the caller's model keeps its head
    else:
        name = backbone
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ConfigError(f"unknown image backbone {name!r}; expected a torchvision classification model name "
                              "such as vgg16 or resnet50")
        model = torchvision.models.get_model(name, weights=None if weights_path else weights)
    identity = None
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ToolkitError(f"{path}: no such weights file")
        try:
            model.load_state_dict(_read_state_dict(path))
        except RuntimeError as err:
            raise DataFormatError(path, None, str(err).splitlines()[0], f"the state_dict of a {name}") from err
        identity = f"{name}:file:{hash_file(path)[:16]}"
    elif weights is not None and not isinstance(backbone, nn.Module):
        identity = f"{name}:torchvision:{weights}"
    model, dim = strip_classification_head(model)
    return model.eval(), dim, identity


def image_transform(image_size: int = 224):
    """Standard ImageNet preprocessing: resize the short side to 256/224 of ``image_size``, centre crop, normalise."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(round(image_size * 256 / 224)),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except Image.DecompressionBombError as err:
            raise DataFormatError(path, None, f"an image over PIL's pixel limit ({_one_line(err)[:60]})",
                                  "an image small enough to decode safely") from None
        except Exception as err:  # noqa: BLE001 - PIL raises ValueError, SyntaxError, struct.error... on corrupt files
            raise DataFormatError(path, None, f"an unreadable image ({type(err).__name__}: {_one_line(err)[:50]})",
                                  "an image file PIL can open") from None
        tensor = self.transform(image)
        if not bool(torch.isfinite(tensor).all()):
            raise DataFormatError(path, None, "non-finite pixel values after preprocessing", "a decodable image")
        return tensor


def _one_line(value) -> str:
    return " ".join(str(value).split())


def _as_path_lists(images: Sequence) -> list[list[str]]:
    out = []
    for item in images:
        if item is None:
            out.append([])
        elif isinstance(item, (str, os.PathLike)):
            out.append([os.fspath(item)])
        else:
            out.append([os.fspath(p) for p in item])
    return out


def _file_fingerprint(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path}|missing"
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def encode_images(
    images: Sequence[Sequence[str | Path] | str | Path | None],
    backbone: str | nn.Module = "vgg16",
    weights: str | None = None,
    weights_path: str | Path | None = None,
    image_size: int = 224,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    num_workers: int = 0,
    use_cache: bool = True,
) -> EncodedModality:
    """Encode image files into ``values (n, feature_dim)`` float32 and ``mask (n,)`` bool.

    ``images[i]`` is item i's image path, list of paths (their feature vectors are averaged), or ``None``/``[]``
    (missing: zeros, mask False). ``feature_dim`` is read from the backbone (VGG16: 4096, ResNet-50: 2048).
    Cached (when the weights are reproducible) keyed by backbone, weights, image_size and each file's path,
    size and modification time.
    """
    path_lists = _as_path_lists(images)
    mask = np.array([len(p) > 0 for p in path_lists], dtype=bool)
    model, dim, identity = build_image_backbone(backbone, weights, weights_path)
    details = {"backbone": backbone if isinstance(backbone, str) else type(backbone).__name__,
               "image_size": image_size, "images": sum(len(p) for p in path_lists)}

    def compute() -> np.ndarray:
        return _encode_files(path_lists, model, dim, image_size, batch_size, device, progress, num_workers)

    if use_cache and identity is not None:
        cache = FeatureCache(cache_dir)
        parts = {"model": identity, "image_size": image_size, "n": len(path_lists),
                 "files": hash_strings("\n".join(_file_fingerprint(p) for p in paths) for paths in path_lists)}
        values, hit = cache.get_or_compute("image", parts, compute, rows=len(path_lists))
        details.update(cache=str(cache.path_for("image", parts)), cache_hit=hit)
    else:
        values = compute()
    return EncodedModality(values=values, mask=torch.from_numpy(mask), model=identity or details["backbone"],
                           details=details)


def _encode_files(path_lists, model, dim, image_size, batch_size, device, progress, num_workers) -> np.ndarray:
    flat = [p for paths in path_lists for p in paths]
    owner = torch.tensor([i for i, paths in enumerate(path_lists) for _ in paths], dtype=torch.long)
    sums = torch.zeros(len(path_lists), dim, dtype=torch.float64)
    if flat:
        device = torch.device(device)
        model = model.to(device)
        loader = torch.utils.data.DataLoader(_ImageFiles(flat, image_transform(image_size)), batch_size=batch_size,
                                             num_workers=num_workers, pin_memory=device.type == "cuda")
        start = 0
        with torch.inference_mode():
            for batch in tqdm(loader, desc="images", unit="batch", disable=not progress or len(loader) < 2):
                features = model(batch.to(device, non_blocking=True)).float().cpu()
                sums.index_add_(0, owner[start:start + len(batch)], features.double())
                start += len(batch)
    counts = torch.tensor([max(len(p), 1) for p in path_lists], dtype=torch.float64)
    return (sums / counts[:, None]).float().numpy()


def entity_image_features(kg, name: str = "image", **kwargs) -> EncodedModality:
    """Encode ``kg.images`` ({entity id: [paths]}) and store it as ``kg.features[name]``."""
    if not kg.images:
        raise ToolkitError(f"{kg.name}: the dataset has no entity images; load it with an image folder "
                           "(imf_kg.data.load_kg(..., images=FOLDER))")
    per_entity = [kg.images.get(i, []) for i in range(kg.num_entities)]
    encoded = encode_images(per_entity, **kwargs)
    kg.features[name] = encoded.to_entity_features()
    return encoded

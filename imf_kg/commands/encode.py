"""``imf-kg encode``: precompute a dataset's modality features into a folder (and the on-disk cache).

Writes ``<out>/text.pt``, ``<out>/image.pt`` (dicts of ``values (N, dim)``, ``mask (N,)``, ``source``, readable
with :func:`imf_kg.encoders.load_feature_matrix`), ``<out>/structure.pt`` (``entity (N, d)``,
``relation (R, d)``) and ``<out>/encode.json`` describing them, rows in the dataset's entity-id order.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imf_kg.errors import ToolkitError
from imf_kg.io import atomic_torch_save, atomic_write_json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "encode", help="precompute text / image / structure features of a dataset",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--dataset", required=True, help="bundled dataset name (nations, umls, ...) or a folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the feature files")
    text = parser.add_argument_group("text")
    text.add_argument("--text", action="store_true", help="encode entity text")
    text.add_argument("--text-file", type=Path, help="entity text file (name<TAB>text) if the dataset has none")
    text.add_argument("--text-model", help="transformers model folder or hub name (default: packaged MiniLM)")
    text.add_argument("--text-pooling", choices=("mean", "cls", "pooler"), default="mean")
    text.add_argument("--max-length", type=int, default=128, help="tokens per text")
    image = parser.add_argument_group("images")
    image.add_argument("--images", type=Path, help="image folder: <entity>/ sub-folders or <entity>.<ext> files")
    image.add_argument("--image-backbone", default="vgg16", help="torchvision model name (default vgg16, as IMF)")
    image.add_argument("--image-weights", type=Path, help="local state_dict of the backbone (e.g. ImageNet VGG16)")
    image.add_argument("--image-size", type=int, default=224, help="centre-crop size")
    image.add_argument("--workers", type=int, default=0, help="image decoding processes (0: in the main process)")
    image.add_argument("--allow-download", action="store_true",
                       help="without --image-weights, download torchvision's DEFAULT weights (needs a network)")
    structure = parser.add_argument_group("structure")
    structure.add_argument("--structure", action="store_true", help="pre-train the GAT+TransE structural encoder")
    structure.add_argument("--structure-dim", type=int, default=256)
    structure.add_argument("--structure-heads", type=int, default=2)
    structure.add_argument("--structure-epochs", type=int, default=3000)
    structure.add_argument("--structure-lr", type=float, default=5e-4)
    structure.add_argument("--structure-batch-size", type=int, default=None, help="default: full batch")
    parser.add_argument("--batch-size", type=int, default=64, help="texts or images per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default $IMF_KG_CACHE or ~/.cache/imf_kg)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from imf_kg.data import load_kg
    from imf_kg.encoders import encode_images, entity_text_features, train_structure_encoder

    if not (args.text or args.images or args.structure):
        raise ToolkitError("nothing to encode: give --text, --images FOLDER and/or --structure")
    if args.images and not args.image_weights and not args.allow_download:
        raise ToolkitError("--images needs --image-weights PATH (a local state_dict), or --allow-download to "
                           "fetch torchvision's pretrained weights")
    side = {}
    if args.text_file:
        side["text"] = args.text_file
    if args.images:
        side["images"] = args.images
    kg = load_kg(args.dataset, **side)
    progress = not args.no_progress
    manifest = {"dataset": kg.name, "entities": kg.num_entities, "relations": kg.num_relations, "modalities": {}}

    def record(name, encoded, path):
        manifest["modalities"][name] = {"file": path.name, "dim": encoded.dim, "coverage": encoded.coverage,
                                        "source": encoded.model, "details": encoded.details}
        print(f"{name}: {encoded.coverage}/{len(encoded)} entities, dim {encoded.dim} -> {path}")

    args.out.mkdir(parents=True, exist_ok=True)
    if args.text:
        encoded = entity_text_features(kg, model=args.text_model, pooling=args.text_pooling,
                                       batch_size=args.batch_size, max_length=args.max_length, device=args.device,
                                       cache_dir=args.cache_dir, progress=progress)
        record("text", encoded, atomic_torch_save(args.out / "text.pt", encoded.state()))
    if args.images:
        if not kg.images:
            raise ToolkitError(f"{args.images}: no image matches an entity of {kg.name}")
        per_entity = [kg.images.get(i, []) for i in range(kg.num_entities)]
        encoded = encode_images(per_entity, backbone=args.image_backbone,
                                weights=None if args.image_weights else "DEFAULT", weights_path=args.image_weights,
                                image_size=args.image_size, batch_size=args.batch_size, device=args.device,
                                cache_dir=args.cache_dir, progress=progress, num_workers=args.workers)
        kg.features["image"] = encoded.to_entity_features()
        record("image", encoded, atomic_torch_save(args.out / "image.pt", encoded.state()))
    if args.structure:
        entity, relation = train_structure_encoder(
            kg, dim=args.structure_dim, heads=args.structure_heads, epochs=args.structure_epochs,
            lr=args.structure_lr, batch_size=args.structure_batch_size, device=args.device, seed=args.seed,
            progress=progress)
        path = atomic_torch_save(args.out / "structure.pt", {"entity": entity, "relation": relation})
        manifest["modalities"]["structure"] = {
            "file": path.name, "dim": int(entity.shape[1]), "coverage": kg.num_entities,
            "source": "GAT+TransE", "details": {"epochs": args.structure_epochs, "heads": args.structure_heads,
                                                "lr": args.structure_lr, "seed": args.seed}}
        print(f"structure: entity {tuple(entity.shape)}, relation {tuple(relation.shape)} -> {path}")
    atomic_write_json(args.out / "encode.json", manifest)
    return 0

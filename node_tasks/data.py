"""Multimodal heterogeneous networks (MMHNs) as ``torch_geometric`` ``HeteroData``: the data contract.

Every loader of :mod:`node_tasks` (IMDB from the CSV, the HGNN-IMA release layout, the synthetic generator)
returns a ``HeteroData`` that :func:`validate_hetero` accepts:

- ``data.modalities``: list of modality names, e.g. ``["text", "image"]``.
- For every node type ``nt`` and modality ``m``: ``data[nt][f"x_{m}"]`` float32 ``(n_nt, d_{nt,m})`` and
  ``data[nt][f"mask_{m}"]`` bool ``(n_nt,)``, True where the node has the modality. Rows of nodes without
  the modality are zero. A node type with no node having ``m`` has an all-False mask and ``x`` of shape
  ``(n_nt, 1)`` (zeros), so its width never pretends to be meaningful.
- ``data.target_node_type``; ``data[target].y`` long ``(n,)`` (``-1`` allowed only outside the splits);
  ``train_mask / val_mask / test_mask`` bool ``(n,)``, pairwise disjoint; ``data.num_classes``;
  ``data.class_names``.
- Every relation appears in both directions as two distinct edge types (``("movie", "directed_by",
  "director")`` and ``("director", "directs", "movie")``), with no duplicate edges; ``edge_index`` long
  ``(2, E)``.
- Optional: ``data.notes`` (list of str), provenance and deviations a reader should know about.

The HGNN-IMA model (Li et al., IJCAI 2025; spec sections 1 and 11.1) consumes exactly this structure:
per-(node type, modality) features with presence masks, and reverse edge types so messages flow both ways.

Also here: :func:`load_dataset` (``synthetic`` / ``imdb`` / a folder, validated) and
:func:`load_hgnn_ima_release` (the published IMDB / DOUBAN / AMAZON file layout, spec 1.1-1.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from imf_kg.errors import DataFormatError, ToolkitError

EdgeType = tuple[str, str, str]
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------- building
def unique_edges(src: Tensor, dst: Tensor, num_dst: int) -> Tensor:
    """Deduplicated ``(2, E)`` long edge index sorted by (src, dst); ``src``/``dst`` are (E,) node ids."""
    src, dst = torch.as_tensor(src, dtype=torch.long).reshape(-1), torch.as_tensor(dst, dtype=torch.long).reshape(-1)
    keys = torch.unique(src * max(int(num_dst), 1) + dst)
    return torch.stack([keys // max(int(num_dst), 1), keys % max(int(num_dst), 1)])


def index_to_mask(index: Tensor | np.ndarray | Sequence[int], size: int) -> Tensor:
    """Bool ``(size,)`` mask that is True at ``index``."""
    mask = torch.zeros(size, dtype=torch.bool)
    mask[torch.as_tensor(np.asarray(index), dtype=torch.long)] = True
    return mask


def stratified_split(labels: Tensor | np.ndarray, sizes: Sequence[int], seed: int = 0) -> list[Tensor]:
    """Seeded stratified split of the nodes ``0..n-1`` into ``len(sizes)`` disjoint index sets.

    Args:
        labels: ``(n,)`` class ids (negative ids are never assigned).
        sizes: exact number of nodes in each part (e.g. ``(n_train, n_val, n_test)``); their sum must not
            exceed the number of labelled nodes. Per class, each part gets its share by the largest-remainder
            rule, so class proportions match to within one node per class and the totals are exact.
        seed: NumPy seed of the within-class shuffles.

    Returns:
        One sorted long tensor of node ids per part.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels[labels >= 0])
    labelled = int((labels >= 0).sum())
    if sum(sizes) > labelled or min(sizes, default=0) < 0:
        raise ToolkitError(f"split sizes {list(sizes)} need {sum(sizes)} labelled nodes; there are {labelled}")
    rng = np.random.default_rng(seed)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    counts = np.array([len(pools[c]) for c in classes], dtype=float)
    taken = np.zeros(len(classes), dtype=int)
    parts = []
    for size in sizes:
        remaining = counts - taken
        share = size * remaining / max(remaining.sum(), 1)
        quota = np.minimum(np.floor(share).astype(int), remaining.astype(int))
        # largest remainder first; ties go to the lower class id so the result depends on the seed only
        order = sorted(range(len(classes)), key=lambda k: (-(share[k] - quota[k]), k))
        for k in order:
            if quota.sum() >= size:
                break
            if quota[k] < remaining[k]:
                quota[k] += 1
        part = [pools[c][taken[k]:taken[k] + quota[k]] for k, c in enumerate(classes)]
        taken += quota
        parts.append(torch.as_tensor(np.sort(np.concatenate(part)) if part else np.zeros(0), dtype=torch.long))
    return parts


def build_hetero(
    num_nodes: Mapping[str, int],
    modalities: Sequence[str],
    features: Mapping[str, Mapping[str, tuple[Tensor, Tensor]]],
    relations: Mapping[EdgeType, tuple[str, Tensor]],
    target_node_type: str,
    labels: Tensor,
    split: Mapping[str, Tensor],
    class_names: Sequence[str],
    notes: Sequence[str] = (),
) -> HeteroData:
    """Assemble a contract-conforming ``HeteroData``.

    Args:
        num_nodes: node type -> number of nodes.
        modalities: modality names, in order.
        features: node type -> modality -> ``(values (n, d), mask (n,))``. A (type, modality) pair that is
            absent, or whose mask is all False, becomes ``(n, 1)`` zeros with an all-False mask. Rows whose mask
            is False are zeroed here, so loaders cannot leak placeholder values.
        relations: forward edge type ``(src, rel, dst)`` -> ``(reverse relation name, edge_index (2, E))``.
            Duplicate edges are dropped and the reverse edge type ``(dst, reverse, src)`` is added.
        target_node_type: the type whose nodes are classified.
        labels: ``(n_target,)`` class ids, ``-1`` for unlabelled nodes.
        split: ``"train"/"val"/"test"`` -> node ids of the target type.
        class_names: one name per class.
        notes: provenance lines kept in ``data.notes``.
    """
    data = HeteroData()
    data.modalities = list(modalities)
    for nt, n in num_nodes.items():
        data[nt].num_nodes = int(n)
        for m in modalities:
            values, mask = features.get(nt, {}).get(m, (None, None))
            if values is None or not bool(torch.as_tensor(mask).any()):
                data[nt][f"x_{m}"] = torch.zeros(int(n), 1)
                data[nt][f"mask_{m}"] = torch.zeros(int(n), dtype=torch.bool)
                continue
            values = torch.as_tensor(values, dtype=torch.float32).clone()
            mask = torch.as_tensor(mask, dtype=torch.bool).clone()
            values[~mask] = 0.0
            data[nt][f"x_{m}"] = values
            data[nt][f"mask_{m}"] = mask
    for (src, rel, dst), (reverse, edge_index) in relations.items():
        edge_index = torch.as_tensor(edge_index, dtype=torch.long)
        forward = unique_edges(edge_index[0], edge_index[1], num_nodes[dst])
        data[src, rel, dst].edge_index = forward
        data[dst, reverse, src].edge_index = unique_edges(forward[1], forward[0], num_nodes[src])
    n_target = int(num_nodes[target_node_type])
    data.target_node_type = target_node_type
    data[target_node_type].y = torch.as_tensor(labels, dtype=torch.long).clone()
    for name in SPLITS:
        data[target_node_type][f"{name}_mask"] = index_to_mask(split.get(name, []), n_target)
    data.num_classes = len(class_names)
    data.class_names = list(class_names)
    data.notes = list(notes)
    return data


# -------------------------------------------------------------------------------------------- validation
def validate_hetero(data: HeteroData, source: str = "<HeteroData>") -> HeteroData:
    """Check ``data`` against the contract in the module docstring; return it unchanged.

    Raises:
        DataFormatError: naming ``source``, what was found and what was expected, for the first violation.
    """

    def fail(found: str, expected: str):
        raise DataFormatError(source, None, found, expected)

    modalities = getattr(data, "modalities", None)
    if not isinstance(modalities, (list, tuple)) or not modalities or not all(isinstance(m, str) for m in modalities):
        fail(f"data.modalities={modalities!r}", "a non-empty list of modality names")
    if len(set(modalities)) != len(modalities):
        fail(f"data.modalities={modalities!r}", "unique modality names")
    target = getattr(data, "target_node_type", None)
    if target not in data.node_types:
        fail(f"target_node_type={target!r}", f"one of the node types {data.node_types}")
    for nt in data.node_types:
        n = data[nt].num_nodes
        if n is None:
            fail(f"node type {nt!r} without a node count", "data[nt].num_nodes or node features")
        for m in modalities:
            _check_modality(data, nt, m, int(n), fail)
    _check_labels(data, target, fail)
    _check_edges(data, fail)
    return data


def _check_modality(data: HeteroData, nt: str, m: str, n: int, fail) -> None:
    store = data[nt]
    x, mask = store.get(f"x_{m}"), store.get(f"mask_{m}")
    if not isinstance(x, Tensor) or x.dtype != torch.float32 or x.dim() != 2 or x.size(0) != n:
        fail(f"{nt}.x_{m} = {_shape(x)}", f"float32 tensor of shape ({n}, d)")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
        fail(f"{nt}.mask_{m} = {_shape(mask)}", f"bool tensor of shape ({n},)")
    if not bool(torch.isfinite(x).all()):
        fail(f"non-finite values in {nt}.x_{m}", "finite features (missing values belong in the mask)")
    if not bool(mask.any()) and (x.size(1) != 1 or bool(x.any())):
        fail(f"{nt}.x_{m} of shape {tuple(x.shape)} with an all-False mask", f"zeros of shape ({n}, 1)")
    if bool(x[~mask].any()):
        fail(f"non-zero rows in {nt}.x_{m} where mask_{m} is False", "zero rows for nodes without the modality")


def _check_labels(data: HeteroData, target: str, fail) -> None:
    store = data[target]
    n = int(store.num_nodes)
    num_classes = getattr(data, "num_classes", None)
    names = getattr(data, "class_names", None)
    if not isinstance(num_classes, int) or num_classes < 2:
        fail(f"num_classes={num_classes!r}", "an int >= 2")
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        fail(f"class_names={names!r}", f"a list of {num_classes} names")
    y = store.get("y")
    if not isinstance(y, Tensor) or y.dtype != torch.long or tuple(y.shape) != (n,):
        fail(f"{target}.y = {_shape(y)}", f"long tensor of shape ({n},)")
    if bool((y >= num_classes).any()) or bool((y < -1).any()):
        fail(f"labels in [{int(y.min())}, {int(y.max())}]", f"class ids in [0, {num_classes}) or -1 (unlabelled)")
    masks = []
    for name in SPLITS:
        mask = store.get(f"{name}_mask")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
            fail(f"{target}.{name}_mask = {_shape(mask)}", f"bool tensor of shape ({n},)")
        if bool((y[mask] < 0).any()):
            fail(f"unlabelled nodes (y=-1) in the {name} split", "labels for every split node")
        masks.append(mask)
    if not bool(masks[0].any()):
        fail("an empty train split", "at least one training node")
    overlap = (masks[0] & masks[1]) | (masks[0] & masks[2]) | (masks[1] & masks[2])
    if bool(overlap.any()):
        fail(f"{int(overlap.sum())} nodes in more than one split", "disjoint train/val/test splits")


def _check_edges(data: HeteroData, fail) -> None:
    edge_sets = {}
    for et in data.edge_types:
        src, _, dst = et
        ei = data[et].get("edge_index")
        if not isinstance(ei, Tensor) or ei.dtype != torch.long or ei.dim() != 2 or ei.size(0) != 2:
            fail(f"{et} edge_index = {_shape(ei)}", "long tensor of shape (2, E)")
        n_src, n_dst = int(data[src].num_nodes), int(data[dst].num_nodes)
        if ei.numel() and (int(ei.min()) < 0 or int(ei[0].max()) >= n_src or int(ei[1].max()) >= n_dst):
            fail(f"{et} node ids out of range", f"source ids < {n_src} and target ids < {n_dst}")
        keys = ei[0] * n_dst + ei[1]
        unique = torch.unique(keys)
        if unique.numel() != keys.numel():
            fail(f"{keys.numel() - unique.numel()} duplicate edges in {et}", "each edge once per edge type")
        edge_sets[et] = unique
    for et, keys in edge_sets.items():
        src, _, dst = et
        n_src = int(data[src].num_nodes)
        ei = data[et].edge_index
        transposed = torch.unique(ei[1] * n_src + ei[0])
        if not any(other != et and other[0] == dst and other[2] == src and torch.equal(edge_sets[other], transposed)
                   for other in edge_sets):
            fail(f"edge type {et} without a reverse", f"an edge type ({dst!r}, <reverse name>, {src!r}) with the same edges reversed")


def _shape(obj) -> str:
    if isinstance(obj, Tensor):
        return f"{obj.dtype} tensor of shape {tuple(obj.shape)}"
    return "missing" if obj is None else type(obj).__name__


# ------------------------------------------------------------------------------------------ description
def describe_hetero(data: HeteroData) -> str:
    """Human-readable summary: nodes, edges, modality coverage per node type, class balance, split sizes."""
    lines = [f"target node type: {data.target_node_type}; {data.num_classes} classes; "
             f"modalities: {', '.join(data.modalities)}", "nodes:"]
    for nt in data.node_types:
        n = int(data[nt].num_nodes)
        coverage = []
        for m in data.modalities:
            mask, x = data[nt][f"mask_{m}"], data[nt][f"x_{m}"]
            have = int(mask.sum())
            coverage.append(f"{m} {have}/{n} ({100.0 * have / max(n, 1):.1f}%, d={x.size(1) if have else 0})")
        lines.append(f"  {nt:<12} {n:>8}   " + "; ".join(coverage))
    lines.append("edges:")
    for et in data.edge_types:
        lines.append(f"  {'-'.join(et):<40} {data[et].edge_index.size(1):>8}")
    store = data[data.target_node_type]
    y = store.y
    labelled = y[y >= 0]
    counts = torch.bincount(labelled, minlength=data.num_classes).tolist()
    balance = ", ".join(f"{name} {c} ({100.0 * c / max(len(labelled), 1):.1f}%)"
                        for name, c in zip(data.class_names, counts))
    lines.append(f"classes ({len(labelled)} labelled): {balance}")
    lines.append("splits: " + ", ".join(f"{name} {int(store[f'{name}_mask'].sum())}" for name in SPLITS))
    for note in getattr(data, "notes", None) or []:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- dispatch
def default_data_root() -> Path:
    """``$IMF_KG_SHARED_DATA`` or ``../shared/data`` beside the repository (never copied into it)."""
    import os

    return Path(os.environ.get("IMF_KG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_dataset(name: str, **options) -> HeteroData:
    """Load a dataset by name and check it against the contract.

    Args:
        name: ``"synthetic"`` (:func:`node_tasks.synthetic.make_synthetic`), ``"imdb"`` (the CSV under
            ``<shared data>/mmhn/IMDB``, :func:`node_tasks.imdb.load_imdb`), a folder holding
            ``movie_metadata.csv`` (IMDB again), or a folder in the HGNN-IMA release layout
            (:func:`load_hgnn_ima_release`; ``dataset=`` picks the layout, else it is recognised by its files).
        options: keyword arguments of that loader (``root=`` overrides the IMDB folder).
    """
    if name == "synthetic":
        from node_tasks.synthetic import make_synthetic

        return validate_hetero(make_synthetic(**options), "synthetic")
    folder = Path(options.pop("root", None) or (default_data_root() / "mmhn" / "IMDB" if name.lower() == "imdb" else name))
    if (folder / "movie_metadata.csv").is_file():
        from node_tasks.imdb import load_imdb

        return validate_hetero(load_imdb(folder, **options), str(folder))
    if folder.is_dir():
        dataset = options.pop("dataset", None) or next(
            (key for key, layout in RELEASE_LAYOUTS.items()
             if (folder / layout["rdf"]).is_file() and (folder / layout["text"][0]).is_file()), None)
        if dataset is None:
            raise ToolkitError(f"{folder}: found neither movie_metadata.csv nor an HGNN-IMA release layout "
                               f"({', '.join(RELEASE_LAYOUTS)})")
        return validate_hetero(load_hgnn_ima_release(folder, dataset, **options), str(folder))
    raise ToolkitError(f"dataset {name!r}: expected 'synthetic', 'imdb' or a dataset folder; {folder} does not exist")


# ------------------------------------------------------------------------------ HGNN-IMA release layout
# File names, node types and rdf relation ids of the HGNN-IMA release (spec 1.1-1.3, process.py). Offsets of
# the global ids in rdf are the cumulative node counts, read from the feature files (the published code
# hard-codes the same numbers: IMDB 4278 / 6359, DOUBAN 1888 / 3360, AMAZON 6158).
RELEASE_LAYOUTS = {
    "IMDB": {
        "types": ("movie", "director", "actor"),
        "text": ("features_0.npz", "features_1.npz", "features_2.npz"),
        "image": "img_feature_20_6_25_199.npz", "rdf": "rdf.npy", "split": "train_val_test_idx1.npz",
        "relations": {0: ("movie", "directed_by", "director", "directs"), 2: ("movie", "stars", "actor", "acts_in")},
        "class_names": ("Action", "Comedy", "Drama"),
    },
    "DOUBAN": {
        "types": ("movie", "director", "actor"),
        "text": ("features_douban_928_1_movie.npz.npy", "features_douban_928_1_directors.npz.npy",
                 "features_douban_928_1_actor.npz.npy"),
        "image": "img_feature_douban_512_199.npz", "rdf": "douban_actor_rdf.npy", "split": "train_val_test_idx_929.npz",
        "relations": {0: ("movie", "directed_by", "director", "directs"), 2: ("movie", "stars", "actor", "acts_in")},
        "class_names": ("class_0", "class_1"),
    },
    "AMAZON": {
        "types": ("item", "review"),
        "text": ("feature_item_amazon.npz", "feature_review_amazon.npz"),
        "image": "img_feature_20_1_25_199.npz", "rdf": "rdf.npy", "split": "train_val_test_idx_amaze.npz",
        "relations": {0: ("item", "related", "item", "related_by"), 1: ("item", "related", "item", "related_by"),
                      2: ("item", "has_review", "review", "reviews")},
        "class_names": ("class_0", "class_1", "class_2"),
    },
}


def load_hgnn_ima_release(folder: str | Path, dataset: str = "IMDB") -> HeteroData:
    """Load a dataset folder in the HGNN-IMA release layout as a contract ``HeteroData``.

    Modalities are ``["text", "image"]``. Differences from the published ``process.py``, on purpose:

    - Only the target type's image features are kept. The release stores COPIES OF THE TEXT features as
      the "image" of IMDB directors and actors (and zeros for Douban directors/actors and Amazon reviews);
      here those types have no image modality at all (mask False), so a copy cannot pose as a second view.
    - A node whose feature row is all zero has that modality masked False (a zero vector is "missing").
    - Every relation gets both directions as distinct edge types (the published AMAZON graph keeps only
      the reversed item-item direction because of a duplicated dict key, spec 10.10); duplicates are dropped.
    - rdf rows of relation ids the published loaders ignore (e.g. IMDB types 1 and 3) are ignored too, and
      counted in ``data.notes``.

    Args:
        folder: the dataset folder (``./imdb``, ``./douban`` or ``./amazon`` in the release).
        dataset: ``"IMDB"``, ``"DOUBAN"`` or ``"AMAZON"``.

    Raises:
        ToolkitError: a file is absent; DataFormatError: a file has the wrong shape or out-of-range ids.
    """
    import scipy.sparse as sp

    key = str(dataset).upper()
    if key not in RELEASE_LAYOUTS:
        raise ToolkitError(f"dataset={dataset!r}; expected one of {', '.join(RELEASE_LAYOUTS)}")
    layout, folder = RELEASE_LAYOUTS[key], Path(folder)

    def path(name: str) -> Path:
        if not (folder / name).is_file():
            raise ToolkitError(f"{folder / name}: no such file; expected the HGNN-IMA {key} release layout")
        return folder / name

    def matrix(name: str) -> np.ndarray:
        file = path(name)
        with _numpy_file(file, "a feature .npz/.npy written by numpy or scipy.sparse.save_npz"):
            loaded = np.load(file, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    files = list(loaded.files)
                    if "feature" in files:
                        loaded = loaded["feature"]
                    elif "format" not in files:
                        raise DataFormatError(file, None, f"arrays {files}",
                                              "an array named 'feature' or a scipy sparse matrix")
                if not isinstance(loaded, np.ndarray):
                    loaded = sp.load_npz(file).toarray()  # MAGNN's bag-of-words features (IMDB)
        if loaded.ndim != 2:
            raise DataFormatError(file, None, f"an array of shape {loaded.shape}", "a 2-D (nodes, features) array")
        return _finite_features(loaded, file)

    types, target = layout["types"], layout["types"][0]
    text = {nt: matrix(name) for nt, name in zip(types, layout["text"])}
    counts = {nt: int(x.shape[0]) for nt, x in text.items()}
    offsets = dict(zip(types, np.cumsum([0] + [counts[nt] for nt in types[:-1]]).tolist()))
    image = matrix(layout["image"])
    if image.shape[0] != counts[target]:
        raise DataFormatError(path(layout["image"]), None, f"{image.shape[0]} rows", f"{counts[target]} rows, one per {target}")
    features = {nt: {"text": _present_rows(x)} for nt, x in text.items()}
    features[target]["image"] = _present_rows(image)

    class_names = layout["class_names"]
    with _numpy_file(path("labels.npy"), "an integer array written by numpy.save"):
        labels = np.load(path("labels.npy"), allow_pickle=False)
    if not isinstance(labels, np.ndarray):
        raise DataFormatError(path("labels.npy"), None, "an .npz archive", "a single .npy array of class ids")
    labels = _integer_values(labels.reshape(-1), path("labels.npy"), "class ids")
    if labels.shape[0] != counts[target] or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(class_names):
        found = (f"{labels.shape[0]} labels in [{labels.min()}, {labels.max()}]" if labels.size else "no labels")
        raise DataFormatError(path("labels.npy"), None, found, f"{counts[target]} labels in [0, {len(class_names)})")
    split_path = path(layout["split"])
    with _numpy_file(split_path, "an .npz archive with train_idx, val_idx and test_idx"):
        split_file = np.load(split_path, allow_pickle=False)
        if not isinstance(split_file, np.lib.npyio.NpzFile):
            raise DataFormatError(split_path, None, "a single array", "an .npz archive with train_idx, val_idx, test_idx")
        with split_file:
            arrays = {name: split_file[f"{name}_idx"] for name in SPLITS if f"{name}_idx" in split_file.files}
            missing = [name for name in SPLITS if name not in arrays]
            if missing:
                raise DataFormatError(split_path, None, f"arrays {split_file.files}", f"an array {missing[0]}_idx")
    split = {}
    for name in SPLITS:
        index = _integer_values(np.asarray(arrays[name]).reshape(-1), split_path, f"{name}_idx {target} indices")
        if index.size and (index.min() < 0 or index.max() >= counts[target]):
            raise DataFormatError(split_path, None, f"{name}_idx outside [0, {counts[target]})", f"{target} indices")
        split[name] = torch.as_tensor(index)

    relations, ignored = _release_relations(path(layout["rdf"]), layout["relations"], counts, offsets)
    notes = [f"HGNN-IMA release layout, {key}, from {folder}; image modality only for {target} "
             f"(the release's director/actor/review 'images' are text copies or zeros)"]
    if ignored:
        notes.append(f"{ignored} rdf rows with relation ids outside {sorted(layout['relations'])} ignored, as published")
    return build_hetero(counts, ["text", "image"], features, relations, target, torch.as_tensor(labels),
                        split, class_names, notes)


class _numpy_file:
    """Context: NumPy's and SciPy's errors on a damaged or foreign file become one DataFormatError naming it."""

    def __init__(self, file: Path, expected: str):
        self.file, self.expected = file, expected

    def __enter__(self):
        return self

    def __exit__(self, kind, err, trace):
        if err is None or isinstance(err, ToolkitError) or not isinstance(err, Exception):
            return False
        message = " ".join(str(err).split())[:60]
        raise DataFormatError(self.file, None, f"an unreadable file ({kind.__name__}: {message})",
                              self.expected) from None


def _integer_values(values: np.ndarray, file: Path, what: str) -> np.ndarray:
    """``values`` as int64, refusing non-numeric, non-finite and fractional entries (no silent truncation)."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise DataFormatError(file, None, f"{what} of dtype {values.dtype}", f"integer {what}")
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if bad.size:
        raise DataFormatError(file, None, f"{what} value {values[bad[0]]!r} at position {int(bad[0])}",
                              f"whole-number {what}")
    return values.astype(np.int64)


def _finite_features(values: np.ndarray, file: Path) -> np.ndarray:
    """A real, finite feature matrix; complex, non-numeric, NaN or infinite values are refused by row."""
    if values.dtype.kind not in "biuf":
        raise DataFormatError(file, None, f"features of dtype {values.dtype}", "real-valued (float or integer) features")
    finite = np.isfinite(values).all(axis=1) if values.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataFormatError(file, None, f"a NaN or infinite value in row {row}",
                              "finite feature values (a missing row is all zeros)")
    return values


def _present_rows(values: np.ndarray) -> tuple[Tensor, Tensor]:
    values = torch.as_tensor(np.asarray(values, dtype=np.float32))
    return values, values.abs().sum(1) > 0


def _release_relations(rdf_path, relation_ids, counts, offsets):
    """Edge index per forward edge type from rdf rows ``(e1, e2, relation id)`` in global ids."""
    with _numpy_file(rdf_path, "an integer array of rows (e1, e2, relation id) written by numpy.save"):
        rdf = np.load(rdf_path, allow_pickle=False)
    if not isinstance(rdf, np.ndarray) or rdf.ndim != 2 or rdf.shape[1] != 3:
        shape = rdf.shape if isinstance(rdf, np.ndarray) else "an .npz archive"
        raise DataFormatError(rdf_path, None, f"an array of shape {shape}", "rows (e1, e2, relation id)")
    rdf = _integer_values(rdf, rdf_path, "node and relation ids")
    grouped: dict[EdgeType, tuple[str, list]] = {}
    for rid, (src, rel, dst, reverse) in relation_ids.items():
        rows = np.flatnonzero(rdf[:, 2] == rid)
        s, d = rdf[rows, 0] - offsets[src], rdf[rows, 1] - offsets[dst]
        bad = np.flatnonzero((s < 0) | (s >= counts[src]) | (d < 0) | (d >= counts[dst]))
        if bad.size:
            row = int(rows[bad[0]])
            raise DataFormatError(rdf_path, row + 1, f"row {tuple(int(v) for v in rdf[row])}",
                                  f"{src} ids in [{offsets[src]}, {offsets[src] + counts[src]}) and {dst} ids in "
                                  f"[{offsets[dst]}, {offsets[dst] + counts[dst]}) for relation id {rid}")
        grouped.setdefault((src, rel, dst), (reverse, []))[1].append(np.stack([s, d]))
    relations = {et: (reverse, torch.as_tensor(np.concatenate(parts, axis=1))) for et, (reverse, parts) in grouped.items()}
    ignored = int((~np.isin(rdf[:, 2], list(relation_ids))).sum())
    return relations, ignored

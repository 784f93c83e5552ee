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

Also here: :func:`load_dataset` (``synthetic`` / ``imdb`` / a folder, validated); the published IMDB / DOUBAN /
AMAZON file layout (spec 1.1-1.3) is read by :func:`node_tasks.release.load_hgnn_ima_release`, re-exported here.
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
        from node_tasks.release import RELEASE_LAYOUTS, load_hgnn_ima_release

        dataset = options.pop("dataset", None) or next(
            (key for key, layout in RELEASE_LAYOUTS.items()
             if (folder / layout["rdf"]).is_file() and (folder / layout["text"][0]).is_file()), None)
        if dataset is None:
            raise ToolkitError(f"{folder}: found neither movie_metadata.csv nor an HGNN-IMA release layout "
                               f"({', '.join(RELEASE_LAYOUTS)})")
        return validate_hetero(load_hgnn_ima_release(folder, dataset, **options), str(folder))
    raise ToolkitError(f"dataset {name!r}: expected 'synthetic', 'imdb' or a dataset folder; {folder} does not exist")


def load_hgnn_ima_release(folder: str | Path, dataset: str = "IMDB") -> HeteroData:
    """:func:`node_tasks.release.load_hgnn_ima_release` (the HGNN-IMA release layout), kept importable from here."""
    from node_tasks.release import load_hgnn_ima_release as load

    return load(folder, dataset)

"""Synthetic multimodal heterogeneous network with planted cross-modal, neighbour-borne class signal.

The embedded default dataset of ``node-tasks``: small enough for a 5-seed comparison of several models on
two CPU cores, and built so that the three ideas of HGNN-IMA (Li et al., IJCAI 2025) have something to find:
modalities that only determine the class *together*, class evidence that sits in the *neighbours*, and
neighbours whose modalities *disagree* (misalignment), which the alignment modulation (spec 3.7) and the
shared cross-modal attention beta (spec 3.6-3.9, the same weights for every modality's messages) are meant
to down-weight.

Generative process (``C`` classes, modalities ``m = 0..M-1``, feature width ``d_m``):

1. **Class codes split across modalities.** Modality ``m`` sees only a coarse group of the class,
   ``pi_m(c) = (c + (m mod 2)) // 2``: for C = 3, text sees {0,1} | {2} and image sees {0} | {1,2}. The pair
   ``(pi_0(c), pi_1(c))`` identifies ``c``; either modality alone leaves two classes confusable, so the
   best single-modality accuracy is about 2/3 while both together can reach 1. Each group ``g`` of modality
   ``m`` has a random unit prototype ``P_m[g]`` in R^{d_m}.
2. **Latent classes.** Target nodes get exactly balanced labels; every other node gets a balanced latent
   "home" class (never observed) that drives its features and its edges.
3. **Features.** ``x_v^m = s_v P_m[pi_m(shown_v^m)] + noise * eps``, ``eps ~ N(0, I)``, where ``shown_v^m``
   is the class node v displays in modality m (its own class, except for distractors, step 5). The signal
   ``s_v`` is ``own_signal`` for target nodes (weak: their own features classify poorly),
   ``neighbour_signal`` for the other types (a few neighbours together classify well), and
   ``distractor_signal`` for a distractor's misaligned modalities.
4. **Edges (neighbours carry the class).** Every target node gets ``degree[t]`` edges to each other type t
   (duplicates merged). Each edge goes to a distractor of the target's class with probability
   ``misalignment`` (when type t has distractors); otherwise to an aligned node of the target's class with
   probability ``homophily``, else to a uniformly random aligned node. Nodes of type t are thereby linked to
   each other through targets (two-hop paths such as paper-author-paper).
5. **Misaligned distractors.** In every non-target type with at least two modalities, a class-balanced
   fraction ``misalignment`` of the nodes are distractors: one modality (chosen at random) shows the node's
   own class, every other modality shows, loudly (``distractor_signal``), a class of another group of that
   modality (drawn uniformly). Linked to targets of its own class, a distractor agrees with the target in
   one modality and shouts a different class in the other. Which modality disagrees, and how many
   distractors a target draws, are random, so the loud wrong evidence mostly adds variance to plain
   neighbour averages (tests: dropping distractor edges improves a logistic regression on neighbour means),
   whereas the *disagreement between a neighbour's per-modality similarities to the target* flags it
   (tests: with similarities measured against class centroids of the training targets' own features, it
   separates distractor from aligned edges with AUC about 0.75).
   That disagreement is what HGNN-IMA's alignment modulation gamma = softmax_j(-|g^text - g^image|) uses,
   and its shared beta lets the modality that exposes a distractor mute its messages in every modality.
6. **Missing modalities.** For every (node type, modality) an exact fraction ``missing_rate`` of the nodes
   lose the modality (mask False, zero row). Default: 10% everywhere, and the smallest non-target type has
   no last modality at all (e.g. venues have no image), which exercises HGNN-IMA's attention loss L_att.
7. **Split.** Stratified train/val/test fractions of the target nodes (:func:`node_tasks.data.stratified_split`).

Limits, measured rather than assumed: a loud misaligned modality is also visible within that modality
alone (its norm), so per-modality attention (HGT late fusion) can mute it without any cross-modal cue;
``distractor_signal = neighbour_signal`` removes that shortcut at the price of weaker harm. The ranking of
HGNN-IMA against HGT early/late fusion on this data depends on ``misalignment`` and on training noise;
compare models over several seeds (``node-tasks compare --dataset synthetic --seeds 5``).
Within the shipped budget (configs/hgnn_ima/synthetic.yaml: 40 epochs) HGNN-IMA's attention does not learn
the distractor cue: on a trained model the edge-level AUC of alpha, gamma and beta for "aligned vs distractor"
stays at 0.48-0.53 (on this design and on the community design of :mod:`node_tasks.synthetic_communities`,
softmax or product final attention, T = 1 or 10), so its lead comes from the rest of the model
(per-modality states, masking, L_cro), not from the alignment modulation; benchmarks/attention_probe.py
measures it and benchmarks/RESULTS.md has the figures.

Ground truth for tests and analyses, kept at graph level (``data.planted``, never a node attribute):
``data.planted[t]["latent_class"]`` (home classes) and ``data.planted[t]["distractor"]`` (bool) for every
non-target type t.
"""

from __future__ import annotations

import numbers
from typing import Mapping, Sequence

import numpy as np
import torch
from torch_geometric.data import HeteroData

from imf_kg.errors import ConfigError
from node_tasks.data import build_hetero, stratified_split

DEFAULT_NODES = {"paper": 600, "author": 400, "venue": 30}
DEFAULT_MISSING_RATE = 0.1
RelationNames = Mapping[tuple[str, str], tuple[str, str]]
# Readable relation names for the two shipped schemas; other schemas get has_<type> / <type>_of.
RELATION_NAMES: RelationNames = {
    ("paper", "author"): ("written_by", "writes"),
    ("paper", "venue"): ("published_in", "publishes"),
    ("movie", "director"): ("directed_by", "directs"),
    ("movie", "actor"): ("stars", "acts_in"),
}


def modality_group(label: np.ndarray | int, modality_index: int) -> np.ndarray | int:
    """pi_m(c): the coarse class group modality ``m`` reveals (step 1 of the module docstring)."""
    return (np.asarray(label) + modality_index % 2) // 2


def make_synthetic(
    num_classes: int = 3,
    nodes: Mapping[str, int] | None = None,
    modalities: Sequence[str] = ("text", "image"),
    feature_dim: int | Mapping[str, int] = 32,
    noise: float = 1.0,
    own_signal: float = 0.7,
    neighbour_signal: float = 2.0,
    distractor_signal: float = 5.0,
    homophily: float | Mapping[str, float] = 0.8,
    misalignment: float = 0.4,
    missing_rate: float | Mapping[str, float | Mapping[str, float]] | None = None,
    degree: Mapping[str, int] | None = None,
    split: Sequence[float] = (0.2, 0.2, 0.6),
    seed: int = 0,
    communities: int = 0,
    identity_dim: int = 8,
    identity_signal: float = 2.0,
    same_community: float = 0.5,
    decoys: bool = False,
    aligned_match: float = 1.0,
    orthogonal_codes: bool = False,
) -> HeteroData:
    """Generate the planted multimodal heterogeneous network described in the module docstring.

    Args:
        num_classes: C >= 2.
        nodes: node type -> count; the FIRST type is the target (classified) type. Default
            ``{"paper": 600, "author": 400, "venue": 30}``.
        modalities: modality names (>= 1; the cross-modal design needs >= 2).
        feature_dim: width of every modality, or modality -> width.
        noise: standard deviation of the per-dimension Gaussian feature noise.
        own_signal: prototype scale in the target nodes' own features (weak on purpose).
        neighbour_signal: prototype scale in the other node types' features.
        distractor_signal: prototype scale in the misaligned modalities of distractors (loud on purpose).
        homophily: probability that an aligned edge joins a target to a node of its own class; one value, or
            non-target type -> value (unlisted types get 0.8).
        misalignment: fraction of distractor nodes per non-target type with >= 2 modalities, and the
            probability that an edge to such a type goes to a distractor (0 <= misalignment < 1).
        missing_rate: one rate for every (type, modality), or type -> rate, or type -> modality -> rate.
            Unlisted pairs get 0.1. ``None``: 0.1 everywhere and 1.0 for the last modality of the smallest
            non-target type.
        degree: non-target type -> edges per target node. Default 4, or 1 for a type with fewer than a
            fifth as many nodes as the target type (a venue per paper).
        split: (train, val, test) fractions of the target nodes.
        seed: everything (prototypes, classes, edges, noise, masks, split) is a function of the seed.
        communities: 0 (default) for the design above; K >= 1 switches to the community design of
            :mod:`node_tasks.synthetic_communities` (K communities per class, identity codes, distractors
            that match a target's community in one modality only and show a wrong class in every modality).
        identity_dim, identity_signal: width and scale of the community identity code appended to every
            modality (community design only).
        same_community: probability that a same-class aligned edge stays inside the target's community
            (community design only).
        decoys: community design only. True: every target draws one decoy class; its distractor edges go to
            distractors OF THAT CLASS, which show their own class cleanly (``neighbour_signal``) and differ from
            aligned nodes only in their identity codes (the target's community in one modality, a foreign one in
            the others). See :mod:`node_tasks.synthetic_communities`.
        aligned_match: community design only. The weight w of an aligned non-target node's own community code
            in its identity part, w U[own] + (1 - w) U[foreign, drawn per modality]; 1 (default) shows the code
            alone. With w = 0.5 an aligned neighbour matches its community half in every modality while a
            distractor matches fully in one: equal sums, so no linear score on concatenated modalities separates
            them (module docstring of :mod:`node_tasks.synthetic_communities`, step 6).
        orthogonal_codes: False (default): class prototypes and identity codes are independent random unit
            vectors, so how much two of them overlap (cosine up to 0.85 for 4 codes in 8 dimensions) is drawn
            anew with every graph, and with it how hard the graph is. True: the rows of each modality's
            prototypes and of its identity codes are orthonormal (a random rotation of the unit vectors), so
            every graph of a design poses the same problem and only its noise and edges differ. Needs a
            width >= the number of rows.

    Returns:
        A ``HeteroData`` that satisfies :func:`node_tasks.data.validate_hetero`.
    """
    nodes = dict(DEFAULT_NODES if nodes is None else nodes)
    modalities = list(modalities)
    _check_arguments(num_classes, nodes, modalities, misalignment, split)
    homophily = _homophily(nodes, homophily)
    types = list(nodes)
    target, others = types[0], types[1:]
    dims = {m: int(feature_dim[m] if isinstance(feature_dim, Mapping) else feature_dim) for m in modalities}
    degree = _degrees(nodes, target, degree)
    rates = _missing_rates(nodes, target, modalities, missing_rate)
    rng = np.random.default_rng(seed)

    if communities:
        from node_tasks.synthetic_communities import make_community_network

        return make_community_network(
            rng, num_classes, nodes, modalities, dims, rates, degree, noise, own_signal, neighbour_signal,
            distractor_signal, homophily, misalignment, split, seed, communities, identity_dim, identity_signal,
            same_community, decoys, aligned_match, orthogonal_codes)
    if decoys or aligned_match != 1.0:
        raise ConfigError("decoys=True and aligned_match != 1 need the community design (communities >= 1)")
    prototypes = {m: _unit_rows(rng, int(modality_group(num_classes - 1, k)) + 1, dims[m], orthogonal_codes)
                  for k, m in enumerate(modalities)}
    latent = {nt: rng.permutation(np.arange(n) % num_classes) for nt, n in nodes.items()}
    distractor = {nt: np.zeros(n, dtype=bool) for nt, n in nodes.items()}
    shown = {nt: {m: latent[nt].copy() for m in modalities} for nt in types}  # class each modality displays
    for nt in others:
        # misalignment needs two modalities the type actually has
        if misalignment > 0 and sum(rates[nt][m] < 1.0 for m in modalities) >= 2:
            distractor[nt] = _plant_distractors(rng, latent[nt], shown[nt], modalities, num_classes, misalignment)

    features = {}
    for nt in types:
        features[nt] = {}
        for k, m in enumerate(modalities):
            signal = np.full(nodes[nt], own_signal if nt == target else neighbour_signal)
            signal[shown[nt][m] != latent[nt]] = distractor_signal
            values = signal[:, None] * prototypes[m][modality_group(shown[nt][m], k)]
            values = values + noise * rng.standard_normal((nodes[nt], dims[m]))
            mask = _presence_mask(rng, nodes[nt], rates[nt][m])
            features[nt][m] = (torch.as_tensor(values, dtype=torch.float32), torch.as_tensor(mask))

    relations = {}
    labels = latent[target]
    for nt in others:
        src, dst = _link(rng, labels, latent[nt], distractor[nt], degree[nt], homophily[nt], misalignment)
        forward, reverse = RELATION_NAMES.get((target, nt), (f"has_{nt}", f"{nt}_of"))
        relations[(target, forward, nt)] = (reverse, torch.as_tensor(np.stack([src, dst])))

    note = (f"synthetic(seed={seed}, C={num_classes}, homophily={homophily}, misalignment={misalignment}, "
            f"own_signal={own_signal}, neighbour_signal={neighbour_signal}, "
            f"distractor_signal={distractor_signal}, noise={noise})")
    data = assemble(nodes, modalities, features, relations, target, labels, split, seed, num_classes, note)
    # graph-level, so no model or sampler mistakes the planted truth for a node feature
    data.planted = {nt: {"latent_class": torch.as_tensor(latent[nt], dtype=torch.long),
                         "distractor": torch.as_tensor(distractor[nt])} for nt in others}
    return data


def assemble(nodes, modalities, features, relations, target, labels, split, seed, num_classes, note) -> HeteroData:
    """The contract HeteroData of a generated network, with a stratified ``split`` (fractions) of the targets."""
    n_target = nodes[target]
    sizes = [int(round(f * n_target)) for f in split]
    sizes[-1] = min(sizes[-1], n_target - sizes[0] - sizes[1])
    train, val, test = stratified_split(labels, sizes, seed=seed)
    return build_hetero(nodes, modalities, features, relations, target, torch.as_tensor(labels),
                        {"train": train, "val": val, "test": test},
                        [f"class_{c}" for c in range(num_classes)], [note])


def _check_arguments(num_classes, nodes, modalities, misalignment, split) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes}; expected >= 2")
    if not modalities or len(set(modalities)) != len(modalities):
        raise ConfigError(f"modalities={modalities}; expected distinct names")
    if any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in nodes.values()):
        raise ConfigError(f"nodes={nodes}; expected node type -> integer count (in YAML flow style, a space "
                          f"after each colon: {{paper: 600}})")
    if len(nodes) < 2 or any(int(n) < num_classes for n in nodes.values()):
        raise ConfigError(f"nodes={nodes}; expected a target type and >= 1 other type, each with >= C nodes")
    if not 0.0 <= misalignment < 1.0:
        raise ConfigError(f"misalignment={misalignment}; expected a value in [0, 1)")
    if len(split) != 3 or min(split) < 0 or sum(split) > 1.0 + 1e-9 or split[0] <= 0:
        raise ConfigError(f"split={tuple(split)}; expected three fractions (train > 0) summing to <= 1")


def _homophily(nodes, homophily) -> dict[str, float]:
    """non-target type -> homophily, from one value or a (partial) mapping."""
    others = list(nodes)[1:]
    if not isinstance(homophily, Mapping):
        homophily = {nt: homophily for nt in others}
    unknown = [nt for nt in homophily if nt not in others]
    if unknown:
        raise ConfigError(f"homophily names {unknown}; expected non-target node types among {others}")
    values = {nt: float(homophily.get(nt, 0.8)) for nt in others}
    if any(not 0.0 <= h <= 1.0 for h in values.values()):
        raise ConfigError(f"homophily={dict(homophily)}; expected probabilities in [0, 1]")
    return values


def _degrees(nodes, target, degree) -> dict[str, int]:
    default = {nt: (1 if n * 5 < nodes[target] else 4) for nt, n in nodes.items() if nt != target}
    degree = {**default, **dict(degree or {})}
    if any(d < 1 for d in degree.values()):
        raise ConfigError(f"degree={degree}; expected >= 1 edge per target node and type")
    return degree


def _missing_rates(nodes, target, modalities, missing_rate) -> dict[str, dict[str, float]]:
    if missing_rate is None:
        rates = {nt: {m: DEFAULT_MISSING_RATE for m in modalities} for nt in nodes}
        others = [nt for nt in nodes if nt != target]
        if len(modalities) >= 2:
            rates[min(others, key=lambda nt: nodes[nt])][modalities[-1]] = 1.0
        return rates
    if not isinstance(missing_rate, Mapping):
        return {nt: {m: float(missing_rate) for m in modalities} for nt in nodes}
    rates = {nt: {m: DEFAULT_MISSING_RATE for m in modalities} for nt in nodes}
    for nt, value in missing_rate.items():
        if nt not in nodes:
            raise ConfigError(f"missing_rate names node type {nt!r}; expected one of {list(nodes)}")
        per_modality = value if isinstance(value, Mapping) else {m: value for m in modalities}
        for m, rate in per_modality.items():
            if m not in modalities or not 0.0 <= float(rate) <= 1.0:
                raise ConfigError(f"missing_rate[{nt!r}][{m!r}]={rate}; expected a modality of {modalities} "
                                  f"and a rate in [0, 1]")
            rates[nt][m] = float(rate)
    return rates


def _unit_rows(rng: np.random.Generator, rows: int, dim: int, orthogonal: bool = False) -> np.ndarray:
    """``rows`` random unit vectors in R^dim; with ``orthogonal`` an orthonormal set (needs rows <= dim)."""
    if not orthogonal:
        vectors = rng.standard_normal((rows, dim))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    if rows > dim:
        raise ConfigError(f"orthogonal_codes needs at most as many codes as dimensions; got {rows} codes "
                          f"of width {dim}")
    q, r = np.linalg.qr(rng.standard_normal((dim, rows)))
    return (q * np.sign(np.diag(r))).T  # sign fix: a uniformly random orthonormal frame (Haar)


def _presence_mask(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Exactly ``round(rate * n)`` nodes lack the modality."""
    mask = np.ones(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(rate * n))]] = False
    return mask


def _plant_distractors(rng, latent, shown, modalities, num_classes, fraction) -> np.ndarray:
    """Turn a class-balanced ``fraction`` of the nodes into misaligned distractors (step 5); edits ``shown``.

    Every modality but one (the agreeing one, drawn per node) shows a class from a DIFFERENT group of that
    modality than the node's own class, so the modalities really disagree.
    """
    n = len(latent)
    chosen = np.zeros(n, dtype=bool)
    for c in range(num_classes):
        members = np.flatnonzero(latent == c)
        chosen[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    for v in np.flatnonzero(chosen):
        c, agree = int(latent[v]), int(rng.integers(len(modalities)))
        for k, m in enumerate(modalities):
            others = [w for w in range(num_classes) if modality_group(w, k) != modality_group(c, k)]
            if k != agree and others:
                shown[m][v] = int(rng.choice(others))
    return chosen


def _link(rng, labels, home, distractor, degree, homophily, misalignment) -> tuple[np.ndarray, np.ndarray]:
    """Target -> neighbour edges of one type, ``degree`` per target: each is a distractor edge (step 5) with
    probability ``misalignment`` when the type has distractors, else an aligned edge (step 4)."""
    aligned = np.flatnonzero(~distractor)
    classes = int(labels.max()) + 1
    aligned_by_class = [aligned[home[aligned] == c] for c in range(classes)]
    distractors_by_class = [np.flatnonzero(distractor & (home == c)) for c in range(classes)]
    src, dst = [], []
    for i, y in enumerate(labels):
        for _ in range(degree):
            if len(distractors_by_class[y]) and rng.random() < misalignment:
                pool = distractors_by_class[y]
            elif rng.random() < homophily and len(aligned_by_class[y]):
                pool = aligned_by_class[y]
            else:
                pool = aligned
            src.append(i)
            dst.append(int(rng.choice(pool)))
    return np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)

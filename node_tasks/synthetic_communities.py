"""The community design of the synthetic network: misaligned neighbours that only a cross-modal comparison exposes.

Selected by ``make_synthetic(communities=K)`` (K >= 1). Everything of :mod:`node_tasks.synthetic` not named
here is unchanged: class groups split across modalities (step 1), weak own features, presence masks,
degrees and the stratified split.

What is planted, and for whom:

1. **Communities.** Every node has a latent class and, independently of it, one of K communities (balanced),
   so a community says nothing about the class. Community ``q`` has a random unit identity code ``U_m[q]`` in
   R^{identity_dim} per modality ``m``.
2. **Features.** Modality ``m`` of node v is ``[s_v P_m[pi_m(shown_v^m)] | identity_signal U_m[id_v^m]] +
   noise * eps``: a class part (as in the base design) and an identity part; targets and aligned neighbours
   show their own class and their own community in every modality.
3. **Aligned edges.** With probability ``homophily`` an aligned edge joins a target to a node of its class,
   inside the target's community with probability ``same_community`` (neighbours that match the target's
   identity in every modality) and otherwise in another community (neighbours that match it in no modality,
   yet carry the right class); else it goes to a uniformly random aligned node.
4. **Distractors** (a class-balanced fraction ``misalignment`` of every non-target type with >= 2
   modalities; with probability ``misalignment`` an edge goes to a distractor of the target's class and
   community).
   A distractor shows a WRONG class (another group of that modality, signal ``distractor_signal``) in EVERY
   modality: it is pure noise for classification. In one modality (drawn per node, the "deceptive" one) it
   shows its own community's identity, which is the target's; in the others it shows a foreign community.

5. **Decoys** (``decoys=True``). Every target draws one decoy class (uniform over the others). Its distractor
   edges go to distractors OF ITS DECOY CLASS (and of its community), and distractors show their own class
   cleanly in every modality (no wrong class part). Around a target, its class and its decoy are then both
   shown by clean neighbours, as often as each other with ``misalignment`` 0.5 and ``homophily`` 1: counting
   classes cannot tell them apart, only the identity pattern can (a decoy matches the target's community in
   exactly one modality). ``homophily`` may be given per type, e.g. ``{author: 1.0, venue: 0.5}``.
6. **Half matches** (``aligned_match`` w < 1). An aligned non-target node's identity part becomes
   ``identity_signal (w U_m[own] + (1 - w) U_m[foreign_m])``, a foreign community drawn per modality. With
   w = 0.5 and ``same_community`` 1, an aligned neighbour matches the target half in every modality and a
   distractor fully in one: the sums of the similarities tie, so no linear score on concatenated modalities
   (one HGT early-fusion head) ranks aligned neighbours above both kinds of distractor, and within one modality
   the distractor's match is the larger. Only the disagreement |g^text - g^image| separates them.

Why each model sees what it sees (the point of the design):

- Within one modality, a distractor's deceptive modality matches the target's identity exactly like a
  same-community neighbour, so per-modality attention (HGT late fusion, one HGT per modality) lets its
  wrong class in, and rejects the right class of other-community neighbours just like the distractor's
  exposing modality: nothing inside one modality separates "matches in this modality" from "matches in
  every modality".
- A score that adds the modalities' similarities (a linear key/query on concatenated features, HGT early
  fusion) ranks same-community neighbours (2 matches) above distractors (1) above other-community
  neighbours (0): it must either drop the right-class other-community neighbours or let distractors in.
- The disagreement between a neighbour's per-modality similarities to the target, |g^text - g^image|, is
  0 for both kinds of aligned neighbours (all or no modalities match) and large only for distractors:
  exactly HGNN-IMA's alignment modulation gamma, and its shared attention beta then mutes the distractor's
  messages in every modality.

The tests (tests/test_node_synthetic.py) check these separations on the planted codes directly.
Ground truth is kept at graph level: ``data.planted[t]`` has ``latent_class``, ``distractor``,
``community`` and ``deceptive_modality`` (index, -1 for aligned nodes) for every non-target type t;
``data.planted[target]["community"]`` (and ``["decoy"]`` with ``decoys``) for the targets and ``data.planted["identity_codes"][m]`` (K, identity_dim).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import HeteroData

from imf_kg.errors import ConfigError


def make_community_network(rng, num_classes, nodes, modalities, dims, rates, degree, noise, own_signal,
                           neighbour_signal, distractor_signal, homophily, misalignment, split, seed,
                           communities, identity_dim, identity_signal, same_community, decoys=False,
                           aligned_match=1.0, orthogonal_codes=False) -> HeteroData:
    """Build the community design (module docstring); arguments as in :func:`node_tasks.synthetic.make_synthetic`.

    Returns a ``HeteroData`` of the data contract; every modality is ``dims[m] + identity_dim`` wide.
    """
    from node_tasks.synthetic import RELATION_NAMES, _presence_mask, _unit_rows, assemble, modality_group

    if communities < 1 or identity_dim < 1 or not 0.0 <= same_community <= 1.0 or not 0.0 <= aligned_match <= 1.0:
        raise ConfigError(f"communities={communities}, identity_dim={identity_dim}, same_community={same_community}, "
                          f"aligned_match={aligned_match}; expected >= 1, >= 1 and two numbers in [0, 1]")
    if aligned_match != 1.0 and communities < 2:
        raise ConfigError(f"aligned_match={aligned_match} needs communities >= 2 (a foreign community to blend in)")
    types = list(nodes)
    target, others = types[0], types[1:]
    n_codes = communities
    prototypes = {m: _unit_rows(rng, int(modality_group(num_classes - 1, k)) + 1, dims[m], orthogonal_codes)
                  for k, m in enumerate(modalities)}
    codes = {m: _unit_rows(rng, n_codes, identity_dim, orthogonal_codes) for m in modalities}
    latent = {nt: rng.permutation(np.arange(n) % num_classes) for nt, n in nodes.items()}
    community = {nt: _communities(rng, latent[nt], num_classes, communities) for nt in types}  # independent of class
    shown_class = {nt: {m: latent[nt].copy() for m in modalities} for nt in types}
    shown_identity = {nt: {m: community[nt].copy() for m in modalities} for nt in types}
    distractor = {nt: np.zeros(n, dtype=bool) for nt, n in nodes.items()}
    deceptive = {nt: np.full(n, -1) for nt, n in nodes.items()}
    for nt in others:
        if misalignment > 0 and sum(rates[nt][m] < 1.0 for m in modalities) >= 2:
            distractor[nt], deceptive[nt] = _plant(rng, latent[nt], community[nt], shown_class[nt],
                                                    shown_identity[nt], modalities, num_classes, n_codes,
                                                    misalignment, wrong_class=not decoys)

    features = {}
    for nt in types:
        features[nt] = {}
        for k, m in enumerate(modalities):
            signal = np.full(nodes[nt], own_signal if nt == target else neighbour_signal)
            signal[shown_class[nt][m] != latent[nt]] = distractor_signal
            class_part = signal[:, None] * prototypes[m][modality_group(shown_class[nt][m], k)]
            identity_part = identity_signal * codes[m][shown_identity[nt][m]]
            if aligned_match != 1.0 and nt != target:  # step 6: aligned nodes blend in a foreign code
                blend = ~distractor[nt]
                foreign = (community[nt][blend] + rng.integers(1, n_codes, size=int(blend.sum()))) % n_codes
                identity_part[blend] = identity_signal * (aligned_match * codes[m][community[nt][blend]]
                                                          + (1.0 - aligned_match) * codes[m][foreign])
            values = np.concatenate([class_part, identity_part], axis=1)
            values = values + noise * rng.standard_normal(values.shape)
            mask = _presence_mask(rng, nodes[nt], rates[nt][m])
            features[nt][m] = (torch.as_tensor(values, dtype=torch.float32), torch.as_tensor(mask))

    labels = latent[target]
    # decoys: one wrong class per target (uniform over the others), the class its distractor edges lead to
    decoy = (labels + rng.integers(1, num_classes, size=len(labels))) % num_classes if decoys else labels
    relations = {}
    for nt in others:
        src, dst = _link(rng, labels, decoy, community[target], latent[nt], community[nt], distractor[nt],
                         degree[nt], homophily[nt], misalignment, same_community)
        forward, reverse = RELATION_NAMES.get((target, nt), (f"has_{nt}", f"{nt}_of"))
        relations[(target, forward, nt)] = (reverse, torch.as_tensor(np.stack([src, dst])))

    note = (f"synthetic communities(seed={seed}, C={num_classes}, K={communities}, decoys={decoys}, homophily={homophily}, "
            f"same_community={same_community}, misalignment={misalignment}, own_signal={own_signal}, "
            f"neighbour_signal={neighbour_signal}, distractor_signal={distractor_signal}, "
            f"identity_signal={identity_signal}, aligned_match={aligned_match}, noise={noise}"
            f"{', orthogonal_codes=True' if orthogonal_codes else ''})")
    data = assemble(nodes, modalities, features, relations, target, labels, split, seed, num_classes, note)
    data.planted = {nt: {"latent_class": torch.as_tensor(latent[nt], dtype=torch.long),
                         "distractor": torch.as_tensor(distractor[nt]),
                         "community": torch.as_tensor(community[nt], dtype=torch.long),
                         "deceptive_modality": torch.as_tensor(deceptive[nt], dtype=torch.long)} for nt in others}
    data.planted[target] = {"community": torch.as_tensor(community[target], dtype=torch.long)}
    if decoys:
        data.planted[target]["decoy"] = torch.as_tensor(decoy, dtype=torch.long)
    data.planted["identity_codes"] = {m: torch.as_tensor(codes[m], dtype=torch.float32) for m in modalities}
    return data


def _communities(rng, latent, num_classes, communities) -> np.ndarray:
    """Community ids 0..K-1, balanced within every class (so community and class are independent)."""
    out = np.empty(len(latent), dtype=np.int64)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(latent == c))
        out[members] = np.arange(len(members)) % communities
    return out


def _plant(rng, latent, community, shown_class, shown_identity, modalities, num_classes, n_codes, fraction,
           wrong_class=True):
    """Class-balanced distractors: a wrong class (another group) in every modality (unless ``wrong_class`` is
    False: decoys show their own class), their own community's identity in one drawn modality and a foreign
    one elsewhere (module docstring, step 4)."""
    from node_tasks.synthetic import modality_group

    n = len(latent)
    chosen = np.zeros(n, dtype=bool)
    for c in range(num_classes):
        members = np.flatnonzero(latent == c)
        chosen[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    deceptive = np.full(n, -1)
    for v in np.flatnonzero(chosen):
        c, own = int(latent[v]), int(community[v])
        deceptive[v] = int(rng.integers(len(modalities)))
        for k, m in enumerate(modalities):
            wrong = [w for w in range(num_classes) if modality_group(w, k) != modality_group(c, k)]
            if wrong and wrong_class:
                shown_class[m][v] = int(rng.choice(wrong))
            if k != deceptive[v] and n_codes > 1:
                shown_identity[m][v] = int(rng.choice([q for q in range(n_codes) if q != own]))
    return chosen, deceptive


def _link(rng, labels, decoy, target_community, home, home_community, distractor, degree, homophily, misalignment,
          same_community):
    """Target -> neighbour edges (module docstring, steps 3-4), ``degree`` per target; distractor edges go to
    distractors of class ``decoy[i]`` (= the target's own class outside the decoy variant)."""
    aligned = np.flatnonzero(~distractor)
    pools = {}

    def pool(kind, key):
        if (kind, key) not in pools:
            c, q = key
            if kind == "distractor":
                pools[kind, key] = np.flatnonzero(distractor & (home == c) & (home_community == q))
            elif kind == "community":
                pools[kind, key] = aligned[(home[aligned] == c) & (home_community[aligned] == q)]
            else:  # same class, another community
                pools[kind, key] = aligned[(home[aligned] == c) & (home_community[aligned] != q)]
        return pools[kind, key]

    src, dst = [], []
    for i, y in enumerate(labels):
        key = (int(y), int(target_community[i]))
        decoy_key = (int(decoy[i]), int(target_community[i]))
        for _ in range(degree):
            candidates = aligned
            if rng.random() < misalignment and len(pool("distractor", decoy_key)):
                candidates = pool("distractor", decoy_key)
            elif rng.random() < homophily:
                inside = rng.random() < same_community
                preferred = pool("community", key) if inside else pool("other", key)
                fallback = pool("other", key) if inside else pool("community", key)
                candidates = preferred if len(preferred) else (fallback if len(fallback) else aligned)
            src.append(i)
            dst.append(int(rng.choice(candidates)))
    return np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)

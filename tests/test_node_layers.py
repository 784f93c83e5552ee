"""HGNNIMALayer (node_tasks/layers.py): attention normalisation, order invariance, missing modalities, gradients."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.utils import scatter, softmax

from imf_kg.errors import ConfigError
from node_tasks.layers import HGNNIMALayer
from node_tasks.model import HGNNIMA, graph_inputs

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tiny_graph(seed: int = 0, n_movie: int = 14, n_actor: int = 10, n_director: int = 6, actor_image: bool = False) -> HeteroData:
    """Movies (text + image, some images missing), actors (text only unless ``actor_image``), directors
    (text + image); movie<->actor and movie<->director in both directions, several neighbours per node."""
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data.modalities = ["text", "image"]
    widths = {"text": 6, "image": 4}
    for nt, n, has_image in (("movie", n_movie, True), ("actor", n_actor, actor_image), ("director", n_director, True)):
        data[nt].num_nodes = n
        for m in data.modalities:
            if m == "image" and not has_image:
                data[nt][f"x_{m}"] = torch.zeros(n, 1)
                data[nt][f"mask_{m}"] = torch.zeros(n, dtype=torch.bool)
                continue
            mask = torch.ones(n, dtype=torch.bool) if m == "text" else torch.rand(n, generator=g) > 0.3
            mask[0] = True
            data[nt][f"x_{m}"] = torch.randn(n, widths[m], generator=g) * mask.unsqueeze(-1)
            data[nt][f"mask_{m}"] = mask
    for (other, n_other, rel, rev, count) in (("actor", n_actor, "stars", "acts_in", 40), ("director", n_director, "directed_by", "directs", 25)):
        pairs = torch.unique(torch.stack([torch.randint(0, n_movie, (count,), generator=g),
                                          torch.randint(0, n_other, (count,), generator=g)]), dim=1)
        data["movie", rel, other].edge_index = pairs
        data[other, rev, "movie"].edge_index = pairs.flip(0)
    data.target_node_type = "movie"
    data["movie"].y = torch.randint(0, 3, (n_movie,), generator=g)
    split = torch.randperm(n_movie, generator=g)
    for name, idx in (("train", split[:6]), ("val", split[6:10]), ("test", split[10:])):
        mask = torch.zeros(n_movie, dtype=torch.bool)
        mask[idx] = True
        data["movie"][f"{name}_mask"] = mask
    data.num_classes = 3
    return data


def _model(data, **kwargs) -> HGNNIMA:
    defaults = dict(hidden=16, heads=2, layers=2)
    defaults.update(kwargs)
    return HGNNIMA.from_data(data, **defaults)


def _layer_inputs(model, data):
    x, edges, masks = graph_inputs(data)
    return model.project_inputs(x, masks), edges, masks


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("device", DEVICES)
def test_attention_normalised_over_neighbours_and_modalities(variant, device):
    data = tiny_graph().to(device)
    model = _model(data, variant=variant, input_projection="per_modality").to(device).eval()
    h, edges, masks = _layer_inputs(model, data)
    _, attention = model.layers[0](h, edges, masks, return_attention=True)
    assert set(attention) == set(edges)
    for et, att in attention.items():
        dst = edges[et][1]
        n_dst = data[et[2]].num_nodes
        has_edge = torch.bincount(dst, minlength=n_dst) > 0
        for name in ("final", "alignment"):
            sums = scatter(getattr(att, name), dst, dim=0, dim_size=n_dst, reduce="sum")  # (n_dst, H)
            torch.testing.assert_close(sums[has_edge], torch.ones_like(sums[has_edge]))
        src_mask = torch.stack([masks[et[0]][m] for m in att.modalities]) if model.missing_modality == "mask" \
            else torch.ones(len(att.modalities), data[et[0]].num_nodes, dtype=torch.bool, device=device)
        dst_mask = torch.stack([masks[et[2]][m] for m in att.modalities]) if model.missing_modality == "mask" \
            else torch.ones(len(att.modalities), n_dst, dtype=torch.bool, device=device)
        active = src_mask[:, edges[et][0]] & dst_mask[:, dst]  # (M_e, E)
        lam_sum = att.inter_modal.sum(0)  # (E, H)
        any_active = active.any(0)
        torch.testing.assert_close(lam_sum[any_active], torch.ones_like(lam_sum[any_active]))
        assert torch.all(att.inter_modal[~active] == 0)
        for i in range(len(att.modalities)):  # alpha^m: softmax over the neighbours that have m
            sums = scatter(att.inter_node[i], dst, dim=0, dim_size=n_dst, reduce="sum")
            reached = scatter(active[i].float(), dst, dim=0, dim_size=n_dst, reduce="max") > 0
            torch.testing.assert_close(sums[reached], torch.ones_like(sums[reached]))


def test_lambda_masks_sources_without_the_modality():
    data = tiny_graph(actor_image=True)
    data["actor"].mask_image[:] = False
    data["actor"].mask_image[:3] = True
    model = _model(data).eval()
    h, edges, masks = _layer_inputs(model, data)
    _, attention = model.layers[0](h, edges, masks, return_attention=True)
    et = ("actor", "acts_in", "movie")
    att = attention[et]
    image = att.modalities.index("image")
    lacking = ~data["actor"].mask_image[edges[et][0]]
    assert lacking.any() and (~lacking).any()
    assert torch.all(att.inter_modal[image][lacking] == 0)
    torch.testing.assert_close(att.inter_modal[att.modalities.index("text")][lacking],
                               torch.ones_like(att.inter_modal[0][lacking]))


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_outputs_invariant_to_edge_order(variant):
    data = tiny_graph(seed=1)
    model = _model(data, variant=variant, input_projection="per_modality").eval()
    x, edges, masks = graph_inputs(data)
    with torch.no_grad():
        before = model(x, edges, masks)
        g = torch.Generator().manual_seed(5)
        shuffled = {et: ei[:, torch.randperm(ei.size(1), generator=g)] for et, ei in edges.items()}
        shuffled = dict(reversed(list(shuffled.items())))  # edge-type order must not matter either
        after = model(x, shuffled, masks)
    torch.testing.assert_close(after.logits, before.logits, rtol=1e-4, atol=1e-5)
    for m in before.modality_logits:
        torch.testing.assert_close(after.modality_logits[m], before.modality_logits[m], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant,missing", [("paper", "mask"), ("reference", "placeholder"), ("paper", "placeholder")])
def test_missing_modality_contributes_nothing(variant, missing):
    """Features stored for a (node, modality) whose mask is False must not change any output."""
    data = tiny_graph(seed=2)
    model = _model(data, variant=variant, missing_modality=missing, input_projection="per_modality").eval()
    x, edges, masks = graph_inputs(data)
    with torch.no_grad():
        before = model(x, edges, masks)
        poisoned = {nt: {m: v.clone() for m, v in mods.items()} for nt, mods in x.items()}
        changed = 0
        for nt, mods in poisoned.items():
            for m, values in mods.items():
                missing_rows = ~masks[nt][m]
                values[missing_rows] = 100.0 * torch.randn_like(values[missing_rows])
                changed += int(missing_rows.sum())
        after = model(poisoned, edges, masks)
    assert changed > 0
    torch.testing.assert_close(after.logits, before.logits)


def test_mask_mode_state_of_missing_modality_is_zero_and_unused():
    data = tiny_graph(seed=3)
    model = _model(data).eval()
    h, edges, masks = _layer_inputs(model, data)
    out = model.layers[0](h, edges, masks)
    lacking = ~masks["movie"]["image"]
    assert lacking.any()
    assert torch.all(out["movie"]["image"][lacking] == 0)
    assert "image" not in out["actor"]  # actors have no image state at all


@pytest.mark.parametrize("kwargs", [dict(variant="paper"), dict(variant="reference", input_projection="per_modality"),
                                    dict(ablations=("cross",)), dict(ablations=("align",))])
def test_gradients_reach_every_parameter(kwargs):
    data = tiny_graph(seed=4, actor_image=True)
    model = _model(data, **kwargs)
    x, edges, masks = graph_inputs(data)
    out = model(x, edges, masks)
    loss = out.logits.logsumexp(-1).sum() + sum(l.pow(2).mean() for l in out.modality_logits.values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_key_query_value_projected_once_per_node_type():
    data = tiny_graph()
    model = _model(data)
    calls = {}
    layer = model.layers[0]
    for name in ("key", "query", "value"):
        for nt, linear in getattr(layer, name).items():
            linear.register_forward_hook(lambda mod, inp, out, key=(name, nt): calls.__setitem__(key, calls.get(key, 0) + 1))
    h, edges, masks = _layer_inputs(model, data)
    layer(h, edges, masks)
    assert calls and set(calls.values()) == {1}  # movie is the source of two edge types, still one projection


def test_variants_differ_where_documented():
    data = tiny_graph(actor_image=True)
    paper = _model(data, variant="paper")
    reference = _model(data, variant="reference", input_projection="per_modality")
    paper_std = torch.cat([p.flatten() for p in paper.layers[0].w_mod.values()]).std()
    reference_std = torch.cat([p.flatten() for p in reference.layers[0].w_mod.values()]).std()
    assert reference_std > 0.8 and paper_std < 0.5  # N(0, 1) vs Xavier for d_k = 8
    assert reference.missing_modality == "placeholder" and paper.missing_modality == "mask"


def test_cross_ablation_gives_uniform_lambda():
    data = tiny_graph(actor_image=True)
    model = _model(data, ablations=("-cross",)).eval()
    h, edges, masks = _layer_inputs(model, data)
    _, attention = model.layers[0](h, edges, masks, return_attention=True)
    att = attention[("director", "directs", "movie")]
    both = att.inter_modal.min(0).values > 0  # edges where both modalities are active
    assert both.any()
    torch.testing.assert_close(att.inter_modal[:, both], torch.full_like(att.inter_modal[:, both], 0.5))


def test_bad_layer_arguments_raise_config_error():
    with pytest.raises(ConfigError):
        HGNNIMALayer(10, (["a"], [("a", "r", "a")]), {"a": ["text"]}, heads=3)
    with pytest.raises(ConfigError):
        HGNNIMALayer(8, (["a"], [("a", "r", "a")]), {"a": ["text"]}, heads=2, variant="poster")


def test_layer_repr_names_every_setting_that_changes_the_computation():
    """The repr is what a reader sees of a model (and part of compare's run fingerprint): two layers that
    compute differently must not print alike."""
    meta, mods = (["a"], [("a", "r", "a")]), {"a": ["text"]}
    base = repr(HGNNIMALayer(8, meta, mods, heads=2))
    assert "dropout=0.2" in base and "use_norm=True" in base
    assert repr(HGNNIMALayer(8, meta, mods, heads=2, dropout=0.5)) != base
    assert repr(HGNNIMALayer(8, meta, mods, heads=2, use_norm=False)) != base


def test_temperature_scales_g_in_alpha_and_gamma_only():
    """T multiplies g where alpha and gamma read it (spec 3.3-3.7): alpha at T equals the softmax of T * g
    computed from the T=1 run; lambda (no temperature in the spec) is unchanged."""
    data = tiny_graph()
    torch.manual_seed(0)
    plain = _model(data, layers=1).eval()
    hot = _model(data, layers=1, temperature=7.0).eval()
    hot.load_state_dict(plain.state_dict())
    h, edges, masks = _layer_inputs(plain, data)
    _, cold_att = plain.layers[0](h, edges, masks, return_attention=True)
    _, hot_att = hot.layers[0](h, edges, masks, return_attention=True)
    et = ("actor", "acts_in", "movie")
    dst = edges[et][1]
    torch.testing.assert_close(hot_att[et].inter_modal, cold_att[et].inter_modal)
    # recover g (up to a per-target constant) from the T=1 alpha, then apply the temperature
    log_alpha = cold_att[et].inter_node[0].clamp(min=1e-30).log()
    expected = softmax(7.0 * log_alpha, dst, num_nodes=data["movie"].num_nodes, dim=0)
    torch.testing.assert_close(hot_att[et].inter_node[0], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="temperature"):
        _model(data, temperature=0.0)

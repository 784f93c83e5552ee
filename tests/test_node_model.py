"""HGNNIMA model, its losses (L_cro, L_att from presence masks) and the baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imf_kg.errors import ConfigError
from node_tasks.baselines import FeatureMLP, HGTEarlyFusion, HGTLateFusion
from node_tasks.layers import EdgeAttention
from node_tasks.losses import (LossWeights, NodeClassificationLoss, cross_entropy_loss, loss_weights_for,
                               missing_modality_attention_loss)
from node_tasks.model import HGNNIMA, NodeOutputs, graph_inputs, in_dims_from_data
from test_node_layers import tiny_graph


def test_model_outputs_shapes_and_present_modalities():
    data = tiny_graph()
    model = HGNNIMA.from_data(data, hidden=16, heads=2, layers=2)
    x, edges, masks = graph_inputs(data)
    out = model(x, edges, masks, return_attention=True)
    n = data["movie"].num_nodes
    assert out.logits.shape == (n, 3)
    assert set(out.modality_logits) == {"text", "image"}
    assert all(v.shape == (n, 3) for v in out.modality_logits.values())
    torch.testing.assert_close(out.modality_masks["image"], data["movie"].mask_image)
    assert len(out.attention) == 2
    # the last layer only updates the target type: only edge types into movies
    assert all(et[2] == "movie" for et in out.attention[-1])
    assert in_dims_from_data(data)["actor"] == {"text": 6}  # actors have no image at all


def test_model_configuration_errors():
    data = tiny_graph()
    with pytest.raises(ConfigError, match="ablation"):
        HGNNIMA.from_data(data, hidden=16, heads=2, layers=1, ablations=("-magic",))
    with pytest.raises(ConfigError, match="input_projection"):  # text 6 wide, image 4 wide
        HGNNIMA.from_data(data, hidden=16, heads=2, layers=1, variant="reference", input_projection="shared")
    fallback = HGNNIMA.from_data(data, hidden=16, heads=2, layers=1, variant="reference")
    assert fallback.input_projection == "per_modality"


def test_cross_entropy_is_the_poster_l_cro():
    torch.manual_seed(0)
    logits, text, image = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 1, 0])
    image_present = torch.tensor([True, False, True, True, True])
    out = NodeOutputs(logits, {"text": text, "image": image},
                      {"text": torch.ones(5, dtype=torch.bool), "image": image_present})
    index = torch.tensor([0, 1, 2])
    loss, logs = cross_entropy_loss(out, labels, index, individual_weight=1.0)
    expected = (F.cross_entropy(logits[index], labels[index]) + F.cross_entropy(text[index], labels[index])
                + F.cross_entropy(image[[0, 2]], labels[[0, 2]])) / 3  # node 1 has no image: not in CE(O^image)
    torch.testing.assert_close(loss, expected)
    fused_only, _ = cross_entropy_loss(out, labels, index, individual_weight=0.0)
    torch.testing.assert_close(fused_only, F.cross_entropy(logits[index], labels[index]))


def test_attention_loss_is_derived_from_presence_masks_not_names():
    # one layer, two edge types; lambda chosen by hand
    lam_a = torch.tensor([[[0.9], [0.2], [0.6]], [[0.1], [0.8], [0.4]]])  # (M=2, E=3, H=1): text, image
    lam_b = torch.tensor([[[0.5], [0.3]], [[0.5], [0.7]]])
    ones = torch.ones(3, 1)
    attention = [{("u", "r1", "t"): EdgeAttention(("text", "image"), lam_a, lam_a, ones, ones),
                  ("w", "r2", "t"): EdgeAttention(("text", "image"), lam_b, lam_b, ones[:2], ones[:2])}]
    edges = {("u", "r1", "t"): torch.tensor([[0, 1, 2], [0, 0, 1]]), ("w", "r2", "t"): torch.tensor([[0, 1], [1, 1]])}
    masks = {"u": {"text": torch.tensor([True, True, True]), "image": torch.tensor([True, False, False])},
             "w": {"text": torch.tensor([False, True]), "image": torch.tensor([True, True])},
             "t": {"text": torch.ones(2, dtype=torch.bool), "image": torch.ones(2, dtype=torch.bool)}}
    value = missing_modality_attention_loss(attention, edges, masks)
    # penalised: image on u-edges 1, 2 (0.8, 0.4) and text on the w-edge from node 0 (0.5)
    torch.testing.assert_close(value, torch.tensor((0.8 + 0.4 + 0.5) / 3))
    renamed = [{("u", "anything", "t"): attention[0][("u", "r1", "t")], ("w", "else", "t"): attention[0][("w", "r2", "t")]}]
    renamed_edges = {("u", "anything", "t"): edges[("u", "r1", "t")], ("w", "else", "t"): edges[("w", "r2", "t")]}
    torch.testing.assert_close(missing_modality_attention_loss(renamed, renamed_edges, masks), value)
    masks["u"]["image"][:] = True
    masks["w"]["text"][:] = True
    assert float(missing_modality_attention_loss(attention, edges, masks)) == 0.0


@pytest.mark.parametrize("missing,positive", [("placeholder", True), ("mask", False)])
def test_attention_loss_bites_only_in_placeholder_mode(missing, positive):
    data = tiny_graph(seed=1)
    model = HGNNIMA.from_data(data, hidden=16, heads=2, layers=2, missing_modality=missing)
    x, edges, masks = graph_inputs(data)
    out = model(x, edges, masks, return_attention=True)
    loss_fn = NodeClassificationLoss(LossWeights(individual=1.0, attention=1.0))
    loss, logs = loss_fn(out, data["movie"].y, data["movie"].train_mask, edges, masks)
    assert (logs["l_att"] > 0.05) == positive
    if positive:
        loss.backward()  # L_att trains the inter-modal attention
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.layers[0].w_mod.parameters())


def test_loss_ablations():
    assert loss_weights_for(["-latt"]) == LossWeights(individual=1.0, attention=0.0)
    assert loss_weights_for(["lind"], LossWeights(0.5, 2.0)) == LossWeights(individual=0.0, attention=2.0)
    with pytest.raises(ConfigError):
        loss_weights_for(["nope"])


@pytest.mark.parametrize("cls", [HGTEarlyFusion, HGTLateFusion])
def test_hgt_baselines_run_and_train(cls):
    data = tiny_graph(seed=2)
    model = cls.from_data(data, hidden=16, heads=2, layers=2)
    x, edges, masks = graph_inputs(data)
    out = model(x, edges, masks)
    assert out.logits.shape == (data["movie"].num_nodes, 3)
    loss = F.cross_entropy(out.logits, data["movie"].y)
    loss.backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any("projections" in n for n in trained) and any("classifier" in n for n in trained)
    if cls is HGTLateFusion:
        assert set(out.modality_logits) == {"text", "image"}
        present = out.modality_masks["image"]
        expected = (out.modality_logits["text"] + out.modality_logits["image"] * present.unsqueeze(-1)) \
            / (1 + present.float()).unsqueeze(-1)
        torch.testing.assert_close(out.logits, expected)


@pytest.mark.parametrize("cls", [HGTEarlyFusion, HGTLateFusion])
def test_hgt_baselines_layer_norm_normalises_every_layer_and_trains(cls):
    """use_norm (Hu et al.'s HGT): a LayerNorm per node type after every HGTConv; off, the states are not normalised."""
    data = tiny_graph(seed=2)
    x, edges, masks = graph_inputs(data)
    torch.manual_seed(0)
    model = cls.from_data(data, hidden=16, heads=2, layers=2, use_norm=True).eval()
    encoder = model.encoder if cls is HGTEarlyFusion else model.encoders["text"]
    states = encoder(x, masks, edges)["movie"]
    torch.testing.assert_close(states.mean(-1), torch.zeros(len(states)), atol=1e-5, rtol=0)
    torch.testing.assert_close(states.var(-1, unbiased=False), torch.ones(len(states)), atol=1e-3, rtol=0)
    torch.manual_seed(0)
    plain = cls.from_data(data, hidden=16, heads=2, layers=2).eval()
    plain_states = (plain.encoder if cls is HGTEarlyFusion else plain.encoders["text"])(x, masks, edges)["movie"]
    assert plain_states.mean(-1).abs().max() > 1e-3
    assert not any("norms" in n for n, _ in plain.named_parameters())
    model.train()
    F.cross_entropy(model(x, edges, masks).logits, data["movie"].y).backward()
    normed = [n for n, p in model.named_parameters() if "norms" in n and p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.endswith("movie.weight") for n in normed)


def test_mlp_uses_only_the_nodes_own_features():
    data = tiny_graph(seed=3)
    model = FeatureMLP.from_data(data, hidden=8, layers=2).eval()
    x, edges, masks = graph_inputs(data)
    before = model(x, edges, masks).logits
    x["actor"]["text"] = torch.randn_like(x["actor"]["text"])
    after = model(x, {}, masks).logits
    torch.testing.assert_close(before, after)
    assert before.shape == (data["movie"].num_nodes, 3)


def test_reference_shares_the_input_projection_when_widths_match():
    data = tiny_graph()
    for nt in ("movie", "director"):
        data[nt].x_image = torch.randn(data[nt].num_nodes, 6) * data[nt].mask_image.unsqueeze(-1)
    model = HGNNIMA.from_data(data, hidden=16, heads=2, layers=1, variant="reference")
    assert model.input_projection == "shared" and set(model.projections) == {"movie", "actor", "director"}
    x, edges, masks = graph_inputs(data)
    assert model(x, edges, masks).logits.shape == (data["movie"].num_nodes, 3)


def test_vectorised_hgt_conv_matches_torch_geometric_hgt_conv():
    from torch_geometric.nn import HGTConv

    from node_tasks.baselines import VectorisedHGTConv

    data = tiny_graph()
    torch.manual_seed(0)
    x = {nt: torch.randn(data[nt].num_nodes, 8) for nt in data.node_types}
    reference = HGTConv(8, 8, data.metadata(), heads=2)
    fast = VectorisedHGTConv(8, 8, data.metadata(), heads=2)
    fast.load_state_dict(reference.state_dict())
    expected, found = reference(x, data.edge_index_dict), fast(x, data.edge_index_dict)
    assert set(found) == set(expected)
    for nt in expected:
        torch.testing.assert_close(found[nt], expected[nt])


def test_concat_linear_is_linear_on_the_masked_concatenation():
    from node_tasks.baselines import ConcatLinear

    torch.manual_seed(0)
    layer = ConcatLinear({"text": 5, "image": 3}, 4)
    features = {"text": torch.randn(6, 5), "image": torch.randn(6, 3)}
    present = {"text": torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool), "image": torch.ones(6, dtype=torch.bool)}
    linear = torch.nn.Linear(8, 4)
    with torch.no_grad():
        linear.weight.copy_(torch.cat([layer.blocks["text"].weight, layer.blocks["image"].weight], dim=1))
        linear.bias.copy_(layer.bias)
    masked = torch.cat([features["text"] * present["text"].unsqueeze(-1), features["image"]], dim=1)
    torch.testing.assert_close(layer(features, present, 6), linear(masked))
    # missing rows never read their features, whatever they hold
    features["text"][2] = 1e6
    torch.testing.assert_close(layer(features, present, 6), linear(masked))


@pytest.mark.parametrize("builder", [HGNNIMA, HGTEarlyFusion, HGTLateFusion])
def test_sparse_features_give_the_dense_outputs_and_gradients(builder):
    data = tiny_graph()
    torch.manual_seed(0)
    model = builder.from_data(data, hidden=8, heads=2, layers=2).eval()
    dense = graph_inputs(data)
    sparse = graph_inputs(data, sparse_below=1.01, sparse_min_width=1)  # every matrix becomes sparse
    assert sparse[0]["movie"]["text"].layout == torch.sparse_csr
    dense_out, sparse_out = model(*dense), model(*sparse)
    torch.testing.assert_close(sparse_out.logits, dense_out.logits)
    grads = []
    for out in (dense_out, sparse_out):
        model.zero_grad()
        out.logits.square().sum().backward()
        grads.append([p.grad.clone() if p.grad is not None else None for p in model.parameters()])
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_cross_ablation_is_the_same_computation_when_every_edge_carries_one_modality():
    """With one shared modality per edge, lambda is 1 with or without the ablation: same outputs, and the same
    module tree (what compare's training fingerprint compares), so compare reuses the runs."""
    from torch import nn

    single = tiny_graph()
    single["director"].x_image = torch.zeros(single["director"].num_nodes, 1)
    single["director"].mask_image[:] = False
    for data, expect_same in ((single, True), (tiny_graph(), False)):
        outputs, trees = [], []
        for ablations in ((), ("cross",)):
            torch.manual_seed(0)
            model = HGNNIMA.from_data(data, hidden=8, heads=2, layers=2, ablations=ablations).eval()
            outputs.append(model(*graph_inputs(data)).logits)
            trees.append(nn.Module.__repr__(model))
        assert (trees[0] == trees[1]) == expect_same
        if expect_same:
            torch.testing.assert_close(outputs[0], outputs[1])

"""The IMF model on a tiny synthetic multimodal KG: outputs, gradients, masks, caching, variants, training."""

from __future__ import annotations

import pytest
import torch

from imf_kg.data.kg import EntityFeatures, KnowledgeGraph
from imf_kg.errors import ConfigError
from imf_kg.models.imf import IMF, IMFConfig

N, R = 24, 3
SMALL = dict(entity_dim=8, relation_dim=6, fusion_rank=16, candidate_chunk_size=7)


def _kg(feature_dims=None, seed=0) -> KnowledgeGraph:
    """Relation r maps entity e to (e + r + 1) mod N; text/image features are noisy codes of the entity id."""
    generator = torch.Generator().manual_seed(seed)
    heads = torch.arange(N).repeat(R)
    relations = torch.arange(R).repeat_interleave(N)
    triples = torch.stack([heads, relations, (heads + relations + 1) % N], dim=1)
    kg = KnowledgeGraph.from_id_triples("tiny", [f"e{i}" for i in range(N)], [f"r{i}" for i in range(R)],
                                        {"train": triples})
    codes = torch.randn(N, 4, generator=generator)
    for name, dim in (feature_dims or {"text": 10, "image": 12}).items():
        values = codes @ torch.randn(4, dim, generator=generator) + 0.1 * torch.randn(N, dim, generator=generator)
        mask = torch.rand(N, generator=generator) > 0.25
        mask[:2] = True
        mask[2] = False  # entity 2 always lacks text and image
        kg.features[name] = EntityFeatures(values * mask.unsqueeze(1), mask, "synthetic")
    return kg


def _batch(batch=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    heads = torch.randint(0, N, (batch,), generator=generator)
    heads[0] = 2  # an entity without text/image among the queries
    relations = torch.randint(0, 2 * R, (batch,), generator=generator)
    tails = torch.where(relations < R, (heads + relations + 1) % N, (heads - (relations - R) - 1) % N)
    targets = torch.full((batch, N), 0.01)
    targets[torch.arange(batch), tails] = 0.9
    return heads, relations, targets


def _model(variant="paper", kg=None, **overrides) -> IMF:
    torch.manual_seed(0)
    settings = dict(SMALL)
    if variant == "reference":
        del settings["fusion_rank"]  # keep the published MUTAN rank 2
    settings.update(overrides)
    return IMF.from_kg(kg or _kg(), IMFConfig.for_variant(variant, **settings))


def test_score_outputs_names_and_shapes():
    model = _model().eval()
    heads, relations, _ = _batch()
    outputs = model.score_outputs(heads, relations)
    assert list(outputs) == ["structure", "text", "image", "tucker", "decision"]
    assert all(v.shape == (10, N) for v in outputs.values())
    torch.testing.assert_close(model.score_tails(heads, relations), outputs["decision"])
    fused = torch.sigmoid(outputs["decision"])
    weights = model.decision.weights()
    expected = sum(w * torch.sigmoid(outputs[name]) for w, name in zip(weights, model.branches))
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_gradients_reach_every_parameter(variant):
    kg = _kg({"text": 8, "image": 8}) if variant == "reference" else _kg()
    overrides = dict(decision_per_relation=True) if variant == "paper" else dict(contrastive_weight=0.5)
    model = _model(variant, kg, **overrides).train()
    heads, relations, targets = _batch()
    loss, logs = model.loss(heads, relations, targets)
    assert "contrastive" in logs and logs["loss"] == pytest.approx(float(loss.detach()))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if variant == "paper":
        rows = model.decision.relation_weight_logits.weight.grad.abs().sum(dim=1)
        assert (rows[torch.unique(relations)] > 0).all()
        assert not any(n.endswith("values") for n, _ in model.named_parameters())  # frozen features
    else:
        assert any(n.endswith("values") for n, _ in model.named_parameters())  # trainable tables


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_feature_row_of_an_entity_without_the_modality_is_never_read(variant):
    kg = _kg({"text": 8, "image": 8}) if variant == "reference" else _kg()
    heads, relations, _ = _batch()
    before = _model(variant, kg).eval().score_outputs(heads, relations)
    missing = int((~kg.features["text"].mask).nonzero()[0])
    kg.features["text"].values[missing] = 100 * torch.randn(kg.features["text"].dim)
    after = _model(variant, kg).eval().score_outputs(heads, relations)
    for name in before:
        torch.testing.assert_close(after[name], before[name])
    present = int(kg.features["text"].mask.nonzero()[3])  # control: a present row does change the scores
    kg.features["text"].values[present] += 1.0
    changed = _model(variant, kg).eval().score_outputs(heads, relations)
    assert not torch.allclose(changed["text"], before["text"])


def _eval_loss(model, heads, relations, targets):
    model.eval()
    with torch.no_grad():
        loss = model.loss(heads, relations, targets)[0]
    model.train()
    return float(loss)


@pytest.mark.parametrize("variant,overrides", [
    ("paper", {}),
    ("paper", {"modalities": ("structure", "text")}),
    ("paper", {"modalities": ("structure",)}),
    ("paper", {"fusion": "concat", "decision": "uniform", "contrastive_weight": 0.0}),
    ("reference", {}),
])
def test_a_few_training_steps_decrease_the_loss(variant, overrides):
    kg = _kg({"text": 8, "image": 8}) if variant == "reference" else _kg()
    model = _model(variant, kg, **overrides)
    heads, relations, targets = _batch(batch=16)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    start = _eval_loss(model, heads, relations, targets)
    for _ in range(30):
        loss, _ = model.loss(heads, relations, targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert _eval_loss(model, heads, relations, targets) < 0.8 * start


def test_single_modality_is_a_plain_tucker_model_and_two_modalities_work():
    single = _model(modalities=("structure",)).eval()
    heads, relations, _ = _batch()
    outputs = single.score_outputs(heads, relations)
    assert list(outputs) == ["structure", "decision"]
    torch.testing.assert_close(outputs["decision"], outputs["structure"])
    assert single.entity_fusion is None and single.decision is None
    names = {n.split(".")[0] for n, _ in single.named_parameters()}
    assert names == {"entity_embeddings", "relation_embeddings", "scorers"}
    pair = _model(modalities=("structure", "text")).eval()
    assert list(pair.score_outputs(heads, relations)) == ["structure", "text", "tucker", "decision"]
    text_image = _model(modalities=("text", "image"), fusion="concat").eval()
    assert list(text_image.score_outputs(heads, relations)) == ["text", "image", "concat", "decision"]


def test_ablation_switches():
    heads, relations, targets = _batch()
    uniform = _model(decision="uniform").eval()
    outputs = uniform.score_outputs(heads, relations)
    average = sum(torch.sigmoid(outputs[b]) for b in uniform.branches) / len(uniform.branches)
    torch.testing.assert_close(torch.sigmoid(outputs["decision"]), average, rtol=1e-5, atol=1e-6)
    no_contrastive = _model(contrastive_weight=0.0)
    assert "contrastive" not in no_contrastive.loss(heads, relations, targets)[1]
    no_joint = _model(joint_loss=False)
    assert "bce_decision" not in no_joint.loss(heads, relations, targets)[1]
    vectors = torch.randn(N, 5)
    pretrained = IMF.from_kg(_kg(), IMFConfig(**SMALL, structure="pretrained"), structure_vectors=vectors)
    assert pretrained.entity_embeddings["structure"].values.shape == (N, 5)
    assert "entity_embeddings.structure.values" not in dict(pretrained.named_parameters())
    with pytest.raises(ConfigError):
        IMF.from_kg(_kg(), IMFConfig(**SMALL, structure="pretrained"))  # no vectors given


def test_reference_variant_settings():
    model = _model("reference", _kg({"text": 8, "image": 8}))
    assert model.fused_name == "mutan" and model.relation_fusion is not None
    assert model.decision.mode == "uniform" and model.decision.weight_logits is None
    assert model.scorers["structure"].core_init == "xavier"
    assert model.config.contrastive_weight == 0 and not model.config.joint_loss
    _, logs = model.loss(*_batch())
    assert set(logs) == {"loss", "bce_structure", "bce_text", "bce_image", "bce_mutan"}
    assert logs["loss"] == pytest.approx(sum(v for k, v in logs.items() if k != "loss"), rel=1e-5)
    with pytest.raises(ConfigError):  # features must already be pooled to entity_dim
        _model("reference", _kg({"text": 10, "image": 8}))


def test_fused_candidates_computed_once_per_batch_and_cached_for_evaluation():
    model = _model()
    calls = []
    model.entity_fusion.register_forward_hook(lambda module, args, out: calls.append(args[0][0].shape[0]))
    heads, relations, targets = _batch()
    model.loss(heads, relations, targets)
    assert sum(calls) == N and len(calls) == 4  # all entities once, in slices of 7
    calls.clear()
    model.eval()
    with torch.no_grad():
        uncached = model.score_outputs(heads, relations)
    model.prepare_evaluation()
    assert sum(calls) == 2 * N
    with torch.no_grad():
        for _ in range(3):
            cached = model.score_outputs(heads, relations)
    assert sum(calls) == 2 * N  # no fusion after prepare_evaluation
    for name in uncached:
        torch.testing.assert_close(cached[name], uncached[name])
    model.train()
    assert model._candidate_cache is None
    model.prepare_evaluation()
    model.end_evaluation()
    assert model._candidate_cache is None


def test_slicing_the_fused_candidates_does_not_change_scores():
    heads, relations, _ = _batch()
    sliced = _model(candidate_chunk_size=5).eval().score_outputs(heads, relations)
    whole = _model(candidate_chunk_size=1000).eval().score_outputs(heads, relations)
    for name in whole:
        torch.testing.assert_close(sliced[name], whole[name])


def test_contrastive_term_uses_distinct_query_entities():
    model = _model().eval()
    heads = torch.tensor([0, 1, 3, 4, 5])
    repeated = torch.tensor([0, 1, 3, 4, 5, 0, 0, 3])
    with torch.no_grad():
        torch.testing.assert_close(model.contrastive_loss(repeated), model.contrastive_loss(heads))


def test_config_round_trip_and_errors():
    config = IMFConfig.for_variant("reference", entity_dim=16)
    assert IMFConfig.from_dict(config.to_dict()) == config
    assert config.fusion == "mutan" and config.entity_dim == 16
    with pytest.raises(ConfigError):
        IMFConfig.from_dict({"entity_dims": 3})
    with pytest.raises(ConfigError):
        IMFConfig(fusion="bilinear")
    with pytest.raises(ConfigError):
        IMFConfig(modalities=("structure", "decision"))
    with pytest.raises(ConfigError):
        IMFConfig.for_variant("code")
    with pytest.raises(ConfigError):
        IMF.from_kg(_kg(), IMFConfig(**SMALL, modalities=("structure", "audio")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cpu_and_cuda_agree():
    heads, relations, targets = _batch()
    model = _model().eval()
    with torch.no_grad():
        cpu = model.score_outputs(heads, relations)
        cpu_loss = model.loss(heads, relations, targets)[0]
        model.cuda()
        gpu = model.score_outputs(heads.cuda(), relations.cuda())
        gpu_loss = model.loss(heads.cuda(), relations.cuda(), targets.cuda())[0]
    for name in cpu:
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-4)


def test_state_dict_round_trip_without_frozen_features():
    kg = _kg()
    model = _model(kg=kg)
    heads, relations, targets = _batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    loss, _ = model.loss(heads, relations, targets)
    loss.backward()
    optimiser.step()
    state = model.state_dict()
    assert not any(key.endswith((".values", ".mask")) for key in state)  # frozen inputs are rebuilt from kg
    restored = _model(kg=kg)
    restored.load_state_dict(state)
    model.eval()
    restored.eval()
    with torch.no_grad():
        for name, scores in model.score_outputs(heads, relations).items():
            torch.testing.assert_close(restored.score_outputs(heads, relations)[name], scores)


@pytest.mark.parametrize("variant,overrides", [
    ("paper", {}), ("paper", {"fusion": "concat"}), ("paper", {"fusion_latent_dim": 4}), ("reference", {}),
])
def test_flops_match_the_flop_counter(variant, overrides):
    from torch.utils.flop_counter import FlopCounterMode

    kg = _kg({"text": 8, "image": 8}) if variant == "reference" else _kg()
    model = _model(variant, kg, **overrides).eval()
    heads, relations, _ = _batch()
    unique = len(torch.unique(relations))
    # forward only, under grad mode: FlopCounterMode's module hooks trip over slices of a leaf under no_grad
    with FlopCounterMode(display=False) as counter:
        model.score_outputs(heads, relations)
    assert counter.get_total_flops() == model.flops(len(heads), unique)
    model.prepare_evaluation()
    with FlopCounterMode(display=False) as counter:
        model.score_outputs(heads, relations)
    assert counter.get_total_flops() == model.flops(len(heads), unique, cached_candidates=True)


@pytest.mark.parametrize("detach", [True, False])
def test_fusion_trains_the_modality_embeddings_only_when_not_detached(detach):
    model = _model(detach_fusion_inputs=detach, contrastive_weight=0.0).train()
    heads, relations, _ = _batch()
    model.score_outputs(heads, relations)["tucker"].sum().backward()
    structure_grad = model.entity_embeddings["structure"].weight.grad
    projection_grad = model.entity_embeddings["text"].projection.weight.grad
    if detach:
        assert structure_grad is None and projection_grad is None
    else:
        assert structure_grad.abs().sum() > 0 and projection_grad.abs().sum() > 0
    assert model.entity_fusion.core_output.grad.abs().sum() > 0
    model.zero_grad()
    model.contrastive_loss(heads).backward()  # acts on the fusion's own modality representations
    assert model.entity_fusion.core_factors[0].grad.abs().sum() > 0

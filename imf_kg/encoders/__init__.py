"""Modality encoders shared by IMF link prediction and HGNN-IMA node classification.

- :mod:`.text`: frozen transformers text encoder (default: packaged all-MiniLM-L6-v2), cached on disk;
- :mod:`.image`: torchvision backbone penultimate features (VGG16 fc7 as in IMF), cached on disk;
- :mod:`.precomputed`: feature files (.npy/.npz/.pt/.pkl) and the published code's fixed 256-d pooling;
- :mod:`.structure`: relation-aware GAT trained with TransE, frozen; and a plain structural table;
- :mod:`.missing`: a feature lookup where missing rows get one learned vector;
- :mod:`.cache`: the on-disk feature cache.

Every encoder returns an :class:`EncodedModality` (``values (n, dim)``, ``mask (n,)``).
"""

from imf_kg.encoders.cache import FeatureCache, default_cache_dir
from imf_kg.encoders.image import build_image_backbone, encode_images, entity_image_features
from imf_kg.encoders.missing import MaskedModalityEmbedding
from imf_kg.encoders.modality import EncodedModality
from imf_kg.encoders.precomputed import load_feature_matrix, reference_pool, save_feature_matrix
from imf_kg.encoders.structure import (
    RelationAwareGATLayer,
    StructureEmbedding,
    StructureEncoder,
    TrainingNegativeSampler,
    fit_structure_encoder,
    train_structure_encoder,
    transe_distance,
)
from imf_kg.encoders.text import TextEncoder, default_text_model_path, encode_texts, entity_text_features

__all__ = [
    "EncodedModality",
    "FeatureCache",
    "default_cache_dir",
    "TextEncoder",
    "encode_texts",
    "entity_text_features",
    "default_text_model_path",
    "encode_images",
    "entity_image_features",
    "build_image_backbone",
    "load_feature_matrix",
    "save_feature_matrix",
    "reference_pool",
    "RelationAwareGATLayer",
    "StructureEncoder",
    "StructureEmbedding",
    "TrainingNegativeSampler",
    "fit_structure_encoder",
    "train_structure_encoder",
    "transe_distance",
    "MaskedModalityEmbedding",
]

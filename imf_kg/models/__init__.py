"""Link-prediction models."""

from imf_kg.models.base import LinkPredictor

__all__ = ["LinkPredictor"]

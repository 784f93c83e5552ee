"""``imf-kg compare``: fusion methods and PyKEEN baselines trained under one budget, reported in one table."""

from imf_kg.comparison.budget import Budget
from imf_kg.comparison.methods import FUSION_METHODS, METHODS, SINGLE_MODALITY_METHODS, parse_methods
from imf_kg.comparison.runner import run_comparison

__all__ = ["Budget", "FUSION_METHODS", "METHODS", "SINGLE_MODALITY_METHODS", "parse_methods", "run_comparison"]

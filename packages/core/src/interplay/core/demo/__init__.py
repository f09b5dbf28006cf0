"""Core's reference slice: a Transformer classifier on scikit-learn's digits, trained by the engine."""

from interplay.core.demo import classifier, digits  # noqa: F401  (registers the entries)
from interplay.core.demo.classifier import TransformerClassifier
from interplay.core.demo.digits import DigitsDataModule
from interplay.core.demo.registry import REGISTRY

__all__ = ["REGISTRY", "DigitsDataModule", "TransformerClassifier"]

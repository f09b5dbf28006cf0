"""Interplay eeg. EEG emotion recognition: RBTransformer and readers for DEAP, SEED and DREAMER."""

from interplay.eeg.registry import REGISTRY

__all__ = ["REGISTRY"]

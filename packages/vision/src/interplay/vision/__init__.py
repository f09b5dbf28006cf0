"""Interplay vision. Vision backbones and modules: DaViT, HaloNet, CrossFormer and more."""

from interplay.vision.registry import REGISTRY

__all__ = ["REGISTRY"]

"""Interplay tabular: treatment effects (TransTEE), cloud VM performance (CloudFormer),
tabular in-context learning."""

from interplay.tabular.registry import REGISTRY

__all__ = ["REGISTRY"]

"""Interplay recsys. Recommenders: Hiformer and AW-MoE (CTR ranking), KGAT (knowledge-graph top-k)."""

from interplay.recsys.registry import REGISTRY

__all__ = ["REGISTRY"]

"""Interplay bio: survival with OT co-attention (MOTCat), drug sensitivity (PaccMann MCA),
protein-protein binding affinity."""

from interplay.bio.registry import REGISTRY

__all__ = ["REGISTRY"]

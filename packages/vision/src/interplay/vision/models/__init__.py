"""vision models, one module per paper model (DaViT, HaloNet, CrossFormer)."""

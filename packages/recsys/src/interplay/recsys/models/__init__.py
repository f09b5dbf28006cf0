"""recsys models, one module per paper model (Hiformer, AW-MoE, KGAT)."""

"""tabular models, one module per paper model (TransTEE, CloudFormer, tabular ICL)."""

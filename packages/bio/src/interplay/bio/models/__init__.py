"""bio models, one module per paper model (MOTCat, PaccMann MCA, PPI heads)."""

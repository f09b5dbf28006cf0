"""eeg models, one module per paper model (RBTransformer)."""

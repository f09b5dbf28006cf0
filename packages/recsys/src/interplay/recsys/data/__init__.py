"""recsys readers, one per on-disk format, each with a synthetic generator writing the same format."""

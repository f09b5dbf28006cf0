"""recsys readers, one per on-disk format, each with a synthetic generator writing the same format.

* :mod:`.criteo` (Criteo TSV day files / CSV with header) and :mod:`.fuxictr` (FuxiCTR-style CSV
  with a ``^``-separated behaviour sequence): chunked readers that name file and line on bad rows;
* :mod:`.features`: the YAML feature spec and the features fitted on the training split;
* :mod:`.cache`: transformed rows as memory-mapped ``.npy`` arrays, built chunk by chunk;
* :mod:`.datamodule`: :class:`CTRDataModule`, batches in the format of :mod:`interplay.recsys.layout`;
* :mod:`.synthetic`: generators with planted interactions and behaviour sequences;
* :mod:`.datasets`: the registered datasets (importing this package registers them).
"""

from interplay.recsys.data.cache import CachedArrays, build_arrays, cached_arrays
from interplay.recsys.data.criteo import read_criteo
from interplay.recsys.data.datamodule import CTRDataModule, CTRDataset, read_chunks, split_assignment
from interplay.recsys.data.datasets import criteo, synthetic_ctr, synthetic_sequences, taobao_tiny
from interplay.recsys.data.features import (
    FeatureConfig,
    FeatureSpec,
    FittedFeatures,
    load_spec,
    shipped_specs,
)
from interplay.recsys.data.fuxictr import read_fuxictr_csv
from interplay.recsys.data.synthetic import SyntheticCriteo, write_synthetic_criteo, write_synthetic_sequences

__all__ = [
    "CTRDataModule",
    "CTRDataset",
    "CachedArrays",
    "FeatureConfig",
    "FeatureSpec",
    "FittedFeatures",
    "SyntheticCriteo",
    "build_arrays",
    "cached_arrays",
    "criteo",
    "load_spec",
    "read_chunks",
    "read_criteo",
    "read_fuxictr_csv",
    "shipped_specs",
    "split_assignment",
    "synthetic_ctr",
    "synthetic_sequences",
    "taobao_tiny",
    "write_synthetic_criteo",
    "write_synthetic_sequences",
]

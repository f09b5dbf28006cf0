"""recsys readers, one per on-disk format, each with a synthetic generator writing the same format.

* :mod:`.criteo` (Criteo TSV day files / CSV with header) and :mod:`.fuxictr` (FuxiCTR-style CSV
  with a ``^``-separated behaviour sequence): chunked readers that name file and line on bad rows;
* :mod:`.features`: the YAML feature spec and the features fitted on the training split;
* :mod:`.cache`: transformed rows as memory-mapped ``.npy`` arrays, built chunk by chunk;
* :mod:`.datamodule`: :class:`CTRDataModule`, batches in the format of :mod:`interplay.recsys.layout`;
* :mod:`.synthetic`: generators with planted interactions and behaviour sequences;
* :mod:`.datasets`: the registered datasets (importing this package registers them);
* :mod:`.kg` / :mod:`.kg_synthetic`: KGAT-format and RecBole knowledge-graph data, the KG data module
  and datasets (``kgat-*``, ``recbole-kg``, ``synthetic-kg``), and a generator in KGAT's format.
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
from interplay.recsys.data.kg import (
    KGData,
    KGDataModule,
    download_kgat,
    read_kgat,
    read_recbole,
    split_validation,
)
from interplay.recsys.data.kg_synthetic import write_synthetic_kg
from interplay.recsys.data.synthetic import SyntheticCriteo, write_synthetic_criteo, write_synthetic_sequences

__all__ = [
    "CTRDataModule",
    "CTRDataset",
    "CachedArrays",
    "FeatureConfig",
    "FeatureSpec",
    "FittedFeatures",
    "KGData",
    "KGDataModule",
    "SyntheticCriteo",
    "build_arrays",
    "cached_arrays",
    "criteo",
    "download_kgat",
    "load_spec",
    "read_chunks",
    "read_criteo",
    "read_fuxictr_csv",
    "read_kgat",
    "read_recbole",
    "shipped_specs",
    "split_assignment",
    "split_validation",
    "synthetic_ctr",
    "synthetic_sequences",
    "taobao_tiny",
    "write_synthetic_criteo",
    "write_synthetic_kg",
    "write_synthetic_sequences",
]

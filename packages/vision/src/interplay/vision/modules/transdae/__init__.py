"""TransDAE (Azad, Adibfar and Fu, 2024): hierarchical dual-attention transformer for multi-organ
segmentation.

Registers the models ``transdae`` (the paper's size) and ``transdae_tiny`` (demo size), the task
``medical-segmentation`` and the datasets ``synapse`` (TransUNet's npz / h5 layout, ``data.root``) and
``synthetic-seg-shapes`` (offline) in :data:`interplay.vision.registry.REGISTRY`::

    interplay-vision train --config transdae-shapes                        # offline demo
    interplay-vision train --config transdae-synapse data.root=/data/Synapse
"""

from __future__ import annotations

from collections.abc import Sequence

from interplay.vision.modules.transdae.data import (
    SHAPE_CLASSES,
    SliceDataset,
    SynapseDataModule,
    SyntheticShapesSegmentation,
    VolumeDataset,
    make_shapes_volume,
    read_h5_volume,
    read_npz_slice,
    synapse_files,
    write_synthetic_synapse,
)
from interplay.vision.modules.transdae.metrics import (
    CaseMetrics,
    OverlapDice,
    case_metrics,
    dice,
    hd95,
    surface,
    surface_distances,
)
from interplay.vision.modules.transdae.model import (
    PAPER,
    SYNAPSE_CLASSES,
    DualAttentionBlock,
    EfficientSpatialAttention,
    InterScaleInteraction,
    LargeKernelAttention,
    MixFFN,
    PatchExpand,
    TransDAE,
    efficient_attention,
)
from interplay.vision.modules.transdae.task import MedicalSegmentationTask, soft_dice_loss
from interplay.vision.registry import REGISTRY


@REGISTRY.models.register("transdae", "TransDAE: dual-attention hierarchical transformer U-Net (paper size)")
def transdae(
    num_classes: int = 9,
    in_chans: int = 1,
    dims: Sequence[int] = (64, 128, 320, 512),
    depths: Sequence[int] = (2, 2, 2, 2),
    decoder_depth: int = 2,
    spatial_heads: int = 1,
    channel_heads: int = 8,
    sr_ratios: Sequence[int] = (8, 4, 2, 1),
    mlp_ratio: float = 4.0,
) -> TransDAE:
    """TransDAE with DAE-Former's widths (64, 128, 320, 512) and two blocks per stage."""
    return TransDAE(
        num_classes, in_chans, dims, depths, decoder_depth, spatial_heads, channel_heads, sr_ratios, mlp_ratio
    )


@REGISTRY.models.register("transdae_tiny", "TransDAE at demo size: widths 16-128, one block per stage")
def transdae_tiny(
    num_classes: int = 4,
    in_chans: int = 1,
    dims: Sequence[int] = (16, 32, 64, 128),
    depths: Sequence[int] = (1, 1, 1, 1),
    decoder_depth: int = 1,
    spatial_heads: int = 1,
    channel_heads: int = 2,
    sr_ratios: Sequence[int] = (4, 2, 1, 1),
    mlp_ratio: float = 2.0,
) -> TransDAE:
    """TransDAE with widths (16, 32, 64, 128), one block per stage, MixFFN ratio 2 (offline demos, tests)."""
    return TransDAE(
        num_classes, in_chans, dims, depths, decoder_depth, spatial_heads, channel_heads, sr_ratios, mlp_ratio
    )


__all__ = [
    "PAPER",
    "SHAPE_CLASSES",
    "SYNAPSE_CLASSES",
    "CaseMetrics",
    "DualAttentionBlock",
    "EfficientSpatialAttention",
    "InterScaleInteraction",
    "LargeKernelAttention",
    "MedicalSegmentationTask",
    "MixFFN",
    "OverlapDice",
    "PatchExpand",
    "SliceDataset",
    "SynapseDataModule",
    "SyntheticShapesSegmentation",
    "TransDAE",
    "VolumeDataset",
    "case_metrics",
    "dice",
    "efficient_attention",
    "hd95",
    "make_shapes_volume",
    "read_h5_volume",
    "read_npz_slice",
    "soft_dice_loss",
    "surface",
    "surface_distances",
    "synapse_files",
    "transdae",
    "transdae_tiny",
    "write_synthetic_synapse",
]

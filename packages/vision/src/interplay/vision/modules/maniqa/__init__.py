"""MANIQA (Yang et al., CVPRW 2022): no-reference image quality assessment on a registry ViT.

Registers the model ``maniqa``, the task ``iqa-regression`` and the datasets ``iqa-csv`` (KADID-10k /
PIPAL style score tables, ``data.root``) and ``synthetic-iqa`` (offline) in
:data:`interplay.vision.registry.REGISTRY`::

    interplay-vision train --config maniqa-synthetic                       # offline demo, ViT-pico
    interplay-vision train --config maniqa-kadid10k data.root=/data/kadid10k \\
        model.params.pretrained_file=/weights/vit_base_patch8_224.augreg2_in21k_ft_in1k.safetensors
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interplay.core.errors import ConfigError
from interplay.vision.models import create_model
from interplay.vision.models.vit import VisionTransformer
from interplay.vision.modules.maniqa.data import (
    DISTORTIONS,
    IQADataModule,
    IQAImageDataset,
    IQASample,
    SyntheticIQA,
    crop_positions,
    distort,
    read_iqa_csv,
    severities,
    split_by_reference,
    synthetic_mos,
    write_synthetic_iqa,
)
from interplay.vision.modules.maniqa.metrics import CorrelationMetric, plcc, rankdata, srcc
from interplay.vision.modules.maniqa.model import (
    MANIQA,
    PAPER,
    ScaleSwinTransformer,
    SwinBlock,
    TransposedAttentionBlock,
    WindowAttention,
    shifted_window_mask,
    weighted_quality,
    window_partition,
    window_reverse,
)
from interplay.vision.modules.maniqa.task import IQARegressionTask
from interplay.vision.registry import REGISTRY


@REGISTRY.models.register(
    "maniqa", "MANIQA: ViT features + transposed attention + scale Swin, weighted patch scores"
)
def maniqa(
    backbone: str = "vit_base_patch8_224",
    pretrained_file: str | None = None,
    backbone_params: dict[str, Any] | None = None,
    freeze_backbone: bool = False,
    feature_layers: Sequence[int] = (6, 7, 8, 9),
    embed_dim: int | None = None,
    num_tab: int = 2,
    depths: Sequence[int] = (2, 2),
    num_heads: Sequence[int] = (4, 4),
    window_size: int = 4,
    dim_mlp: int = 768,
    scale: float = 0.8,
    drop: float = 0.1,
    drop_path_rate: float = 0.1,
    released_reshape: bool = False,
    score_bias_init: float = 0.5,
) -> MANIQA:
    """MANIQA on the registry ViT ``backbone`` (paper: ViT-B/8 at 224, blocks 6-9, 768 wide), with the
    ViT weights of ``pretrained_file`` (an official timm / Hugging Face checkpoint) when given."""
    vit = create_model(backbone, pretrained_file=pretrained_file, **(backbone_params or {}))
    if not isinstance(vit, VisionTransformer):
        raise ConfigError(
            f"maniqa needs a plain ViT backbone (vit_*), got '{backbone}' ({type(vit).__name__})"
        )
    if freeze_backbone:
        vit.requires_grad_(False)
    return MANIQA(
        vit,
        feature_layers=feature_layers,
        embed_dim=embed_dim,
        num_tab=num_tab,
        depths=depths,
        num_heads=num_heads,
        window_size=window_size,
        dim_mlp=dim_mlp,
        scale=scale,
        drop=drop,
        drop_path_rate=drop_path_rate,
        released_reshape=released_reshape,
        score_bias_init=score_bias_init,
    )


__all__ = [
    "DISTORTIONS",
    "MANIQA",
    "PAPER",
    "CorrelationMetric",
    "IQADataModule",
    "IQAImageDataset",
    "IQARegressionTask",
    "IQASample",
    "ScaleSwinTransformer",
    "SwinBlock",
    "SyntheticIQA",
    "TransposedAttentionBlock",
    "WindowAttention",
    "crop_positions",
    "distort",
    "maniqa",
    "plcc",
    "rankdata",
    "read_iqa_csv",
    "severities",
    "shifted_window_mask",
    "split_by_reference",
    "srcc",
    "synthetic_mos",
    "weighted_quality",
    "window_partition",
    "window_reverse",
    "write_synthetic_iqa",
]

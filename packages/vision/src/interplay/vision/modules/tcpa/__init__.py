"""TCPA (Liu et al., ICML 2025): token-coordinated prompt attention on a frozen ViT.

Registers the model ``tcpa_vit``, the task ``tcpa-classification`` and the dataset
``digits-classes`` in
:data:`interplay.vision.registry.REGISTRY`::

    interplay-vision train --config tcpa-digits-upstream   # ViT-pico on digits 0-4 (the frozen backbone)
    interplay-vision reproduce tcpa-digits                 # TCPA vs the linear probe, on digits 5-9
"""

from __future__ import annotations

from typing import Any

from interplay.vision.modules.tcpa.backbone import build_vit_backbone
from interplay.vision.modules.tcpa.data import DigitsClasses
from interplay.vision.modules.tcpa.model import (
    PAPER,
    PromptPool,
    TCPABlockTrace,
    TCPAViT,
    cosine_topk,
    selection_mask,
    tcpa_added_parameters,
    tcpa_attention_mask,
)
from interplay.vision.modules.tcpa.task import TCPAClassificationTask
from interplay.vision.registry import REGISTRY


@REGISTRY.models.register(
    "tcpa_vit", "TCPA: token-coordinated CLS / image prompt pools on a frozen ViT (ICML 2025)"
)
def tcpa_vit(
    num_classes: int = 1000,
    backbone: str = "vit_base_patch16_224",
    pretrained_file: str | None = None,
    backbone_params: dict[str, Any] | None = None,
    pool_size: int = 18,
    prompt_length: int = 1,
    top_k: int = 10,
    cls_pool_size: int | None = None,
    cls_prompt_length: int | None = None,
    cls_top_k: int | None = None,
    prompt_dropout: float = 0.1,
    use_prompts: bool = True,
    freeze_backbone: bool = True,
    detach_queries: bool = True,
) -> TCPAViT:
    """TCPA on the registry ViT ``backbone`` (weights from ``pretrained_file``: an official ViT
    checkpoint or an ``interplay-vision train`` checkpoint); ``use_prompts=False`` is the linear probe."""
    vit = build_vit_backbone(
        backbone, num_classes, pretrained_file=pretrained_file, params=backbone_params, what="tcpa_vit"
    )
    return TCPAViT(
        vit,
        pool_size=pool_size,
        prompt_length=prompt_length,
        top_k=top_k,
        cls_pool_size=cls_pool_size,
        cls_prompt_length=cls_prompt_length,
        cls_top_k=cls_top_k,
        prompt_dropout=prompt_dropout,
        use_prompts=use_prompts,
        freeze_backbone=freeze_backbone,
        detach_queries=detach_queries,
    )


__all__ = [
    "PAPER",
    "PromptPool",
    "TCPABlockTrace",
    "TCPAClassificationTask",
    "TCPAViT",
    "DigitsClasses",
    "build_vit_backbone",
    "cosine_topk",
    "selection_mask",
    "tcpa_added_parameters",
    "tcpa_attention_mask",
    "tcpa_vit",
]

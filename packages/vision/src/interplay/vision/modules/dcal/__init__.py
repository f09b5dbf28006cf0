"""DCAL (Zhu et al., CVPR 2022): dual cross-attention learning (global-local and pair-wise) on a ViT,
for fine-grained classification and re-identification.

Registers the model ``dcal_vit``, the tasks ``dcal-classification`` and ``dcal-reid`` and the data
modules ``digits-reid`` (offline) and ``reid-folder`` (Market-1501 / MSMT17 layouts) in
:data:`interplay.vision.registry.REGISTRY`::

    interplay-vision reproduce dcal-digits          # DCAL vs the plain ViT, digits 16x16
    interplay-vision reproduce dcal-digits-reid     # DCAL re-ID vs the plain ViT, digits-reid
"""

from __future__ import annotations

from typing import Any

from interplay.vision.modules.dcal.data import (
    DigitsReID,
    IdentityBatchSampler,
    ReIDDataModule,
    ReIDFolder,
    ReIDTransform,
    random_views,
)
from interplay.vision.modules.dcal.losses import (
    UncertaintyWeightedLoss,
    batch_hard_triplet_loss,
    pairwise_distances,
)
from interplay.vision.modules.dcal.metrics import ReIDRetrieval, reid_retrieval
from interplay.vision.modules.dcal.model import (
    PAPER,
    DCALOutput,
    DCALViT,
    block_attention_map,
    block_cross_forward,
    distractor_permutation,
)
from interplay.vision.modules.dcal.rollout import attention_rollout, num_local_queries, top_response_tokens
from interplay.vision.modules.dcal.task import DCALClassificationTask, DCALReIDTask
from interplay.vision.modules.tcpa.backbone import build_vit_backbone
from interplay.vision.registry import REGISTRY


@REGISTRY.models.register(
    "dcal_vit", "DCAL: SA + global-local + pair-wise cross-attention on a ViT (CVPR 2022)"
)
def dcal_vit(
    num_classes: int = 1000,
    backbone: str = "vit_base_patch16_224",
    pretrained_file: str | None = None,
    backbone_params: dict[str, Any] | None = None,
    local_ratio: float = 0.1,
    glca: bool = True,
    pwca: bool = True,
    rollout_residual: float = 0.5,
    detach_distractor: bool = False,
) -> DCALViT:
    """DCAL on the registry ViT ``backbone`` (weights from ``pretrained_file``, an official ViT
    checkpoint or an ``interplay-vision train`` checkpoint); ``glca=False, pwca=False`` is the plain ViT."""
    vit = build_vit_backbone(
        backbone, num_classes, pretrained_file=pretrained_file, params=backbone_params, what="dcal_vit"
    )
    return DCALViT(
        vit,
        local_ratio=local_ratio,
        glca=glca,
        pwca=pwca,
        rollout_residual=rollout_residual,
        detach_distractor=detach_distractor,
    )


__all__ = [
    "PAPER",
    "DCALClassificationTask",
    "DCALOutput",
    "DCALReIDTask",
    "DCALViT",
    "DigitsReID",
    "IdentityBatchSampler",
    "ReIDDataModule",
    "ReIDFolder",
    "ReIDRetrieval",
    "ReIDTransform",
    "UncertaintyWeightedLoss",
    "attention_rollout",
    "batch_hard_triplet_loss",
    "block_attention_map",
    "block_cross_forward",
    "dcal_vit",
    "distractor_permutation",
    "num_local_queries",
    "pairwise_distances",
    "random_views",
    "reid_retrieval",
    "top_response_tokens",
]

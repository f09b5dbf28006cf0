"""ACAM-KD (Lan and Tian, ICCV 2025): adaptive and cooperative attention masking for feature
distillation between any two registry backbones (classification distillation here; the paper's
figures are for detection and segmentation).

Registers the model ``acamkd`` and the task ``acamkd-classification`` in
:data:`interplay.vision.registry.REGISTRY`::

    interplay-vision train --config acamkd-digits-teacher  # step 1: a small HorNet teacher, digits 32x32
    interplay-vision reproduce acamkd-digits               # step 2: ViT-pico student: ACAM-KD vs alone vs MSE
    interplay-vision train --config acamkd-r101-r50 data.root=... \\
        model.params.teacher_pretrained_file=...           # ECA-R101 -> R50 on an image folder
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interplay.vision.modules.acamkd.model import (
    PAPER,
    ACAMDistiller,
    ACAMStage,
    ChannelMaskGenerator,
    DistillOutput,
    SpatialMaskGenerator,
    StageDistillation,
    STCAFusion,
    dice_diversity,
    export_student,
    features_and_logits,
    load_backbone,
    logit_kd_loss,
    masked_feature_loss,
)
from interplay.vision.modules.acamkd.task import ACAMKDClassificationTask
from interplay.vision.registry import REGISTRY


@REGISTRY.models.register("acamkd", "ACAM-KD: student distilled from a frozen registry teacher (ICCV 2025)")
def acamkd(
    num_classes: int = 1000,
    student: str = "resnet50",
    teacher: str | None = "eca_resnet101",
    student_params: dict[str, Any] | None = None,
    teacher_params: dict[str, Any] | None = None,
    student_pretrained_file: str | None = None,
    teacher_pretrained_file: str | None = None,
    student_indices: Sequence[int] = (-1,),
    teacher_indices: Sequence[int] = (-1,),
    num_masks: int = 4,
    heads: int = 1,
    channel_reduction: int = 4,
    norm_inputs: bool = True,
    normalize_features: bool = False,
    masking: bool = True,
    mask_grad_to_student: bool = False,
) -> ACAMDistiller:
    """Student ``student`` and frozen teacher ``teacher`` (registry names, built with
    ``*_params`` and the weights of ``*_pretrained_file``: a run checkpoint, glob allowed, or an
    official file) distilled on the stage pairs ``zip(student_indices, teacher_indices)``.
    ``teacher=None`` trains the student alone; ``masking=False`` is the plain feature-MSE ablation."""
    student_model = load_backbone(student, num_classes, student_pretrained_file, student_params, "student")
    teacher_model = None
    if teacher is not None:
        teacher_model = load_backbone(
            teacher, num_classes, teacher_pretrained_file, teacher_params, "teacher"
        )
    return ACAMDistiller(
        student_model,
        teacher_model,
        student_indices=student_indices,
        teacher_indices=teacher_indices,
        num_masks=num_masks,
        heads=heads,
        channel_reduction=channel_reduction,
        norm_inputs=norm_inputs,
        normalize_features=normalize_features,
        masking=masking,
        mask_grad_to_student=mask_grad_to_student,
    )


__all__ = [
    "PAPER",
    "ACAMDistiller",
    "ACAMKDClassificationTask",
    "ACAMStage",
    "ChannelMaskGenerator",
    "DistillOutput",
    "STCAFusion",
    "SpatialMaskGenerator",
    "StageDistillation",
    "acamkd",
    "dice_diversity",
    "export_student",
    "features_and_logits",
    "load_backbone",
    "logit_kd_loss",
    "masked_feature_loss",
]

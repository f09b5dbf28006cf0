"""ACAM-KD (Lan and Tian, "ACAM-KD: Adaptive and Cooperative Attention Masking for Knowledge
Distillation", ICCV 2025, arXiv 2503.06307): feature distillation between any two registry backbones.

Per distilled stage pair (student stage ``i``, teacher stage ``j``), with teacher map
``T [B, C, H, W]`` and student map ``S [B, C_s, H_s, W_s]``:

- alignment: ``S' = resize(Conv1x1_{C_s -> C}(S), (H, W))`` (bilinear when the strides differ);
- STCA-FF (student-teacher cross-attention feature fusion): teacher tokens give the queries,
  student tokens the keys and values, ``F = softmax(Q K^T / sqrt(d)) V`` (core's
  :class:`~interplay.core.nn.MultiHeadAttention`, i.e. :func:`~interplay.core.attention.attend`),
  reshaped to the teacher's grid ``F [B, C, H, W]``;
- ASCM (adaptive spatial-channel masking): ``M`` spatial masks ``M^s = sigmoid(Conv1x1_{C -> M}(F))``
  ``[B, M, H, W]`` (one learnable selection token per mask, dotted with every position of ``F``)
  and ``M`` channel masks ``M^c = sigmoid(MLP(GAP(F)))`` ``[B, M, C]``;
- masked feature loss, each mask's weighted mean of the squared error ``D = (T - S')^2``::

      L_s = 1/M sum_m  sum_{c,h,w} M^s_{m,hw} D_{c,hw} / (C sum_{hw} M^s_{m,hw})
      L_c = 1/M sum_m  sum_{c,h,w} M^c_{m,c}  D_{c,hw} / (HW sum_c M^c_{m,c})
      L_feat = L_s + L_c                                  (averaged over the batch)

  (all-ones masks give twice the plain MSE; normalising by the mask mass means a mask cannot lower
  the loss by shrinking, only by moving its weight);
- mask diversity: the mean Dice coefficient ``2 <a, b> / (|a|^2 + |b|^2)`` over the pairs of
  distinct masks of each kind (MasKD's form), ``L_div = dice(M^s) + dice(M^c)``: 0 for masks with
  disjoint supports, 1 for identical masks.

The classification objective (:class:`~interplay.vision.modules.acamkd.task.ACAMKDClassificationTask`)
is ``CE(student) + lambda L_feat + mu L_div (+ kd T^2 KL(teacher || student))``. The teacher is frozen
(``requires_grad=False``, always in eval mode, run under ``no_grad``); the alignment convolutions,
the fusion attention and the mask generators train with the student and are dropped afterwards
(:func:`export_student`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.errors import ConfigError, DataError
from interplay.core.nn import MultiHeadAttention
from interplay.vision.models import create_model, read_state_dict, resolve_weights_file, run_state_dict
from interplay.vision.models.base import VisionBackbone
from interplay.vision.models.vit import VisionTransformer

PAPER = (
    "Lan and Tian, ACAM-KD: Adaptive and Cooperative Attention Masking for Knowledge Distillation (ICCV 2025)"
)


# ---------------------------------------------------------------------------------------------
# losses (plain functions: the equations of the module docstring)
# ---------------------------------------------------------------------------------------------
def masked_feature_loss(
    student: Tensor,
    teacher: Tensor,
    spatial_masks: Tensor | None,
    channel_masks: Tensor | None,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """``(L_s, L_c)`` for aligned ``student`` and ``teacher`` maps ``[B, C, H, W]``, spatial masks
    ``[B, M, H, W]`` and channel masks ``[B, M, C]`` (``None``: that term is 0)."""
    if student.shape != teacher.shape or student.dim() != 4:
        raise ValueError(
            f"student and teacher maps must both be [B, C, H, W], got {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}"
        )
    b, c, h, w = teacher.shape
    sq = (teacher - student).pow(2)  # [B, C, H, W]
    zero = sq.new_zeros(())
    spatial = channel = zero
    if spatial_masks is not None:
        if spatial_masks.dim() != 4 or spatial_masks.shape[0] != b or spatial_masks.shape[-2:] != (h, w):
            raise ValueError(f"spatial masks must be [{b}, M, {h}, {w}], got {tuple(spatial_masks.shape)}")
        per_pos = sq.sum(1)  # [B, H, W]: squared error summed over channels
        num = torch.einsum("bmhw,bhw->bm", spatial_masks, per_pos)
        den = c * spatial_masks.sum((-2, -1)) + eps
        spatial = (num / den).mean()
    if channel_masks is not None:
        if channel_masks.dim() != 3 or channel_masks.shape[0] != b or channel_masks.shape[-1] != c:
            raise ValueError(f"channel masks must be [{b}, M, {c}], got {tuple(channel_masks.shape)}")
        per_chan = sq.sum((-2, -1))  # [B, C]: squared error summed over positions
        num = torch.einsum("bmc,bc->bm", channel_masks, per_chan)
        den = h * w * channel_masks.sum(-1) + eps
        channel = (num / den).mean()
    return spatial, channel


def dice_diversity(masks: Tensor, eps: float = 1e-12) -> Tensor:
    """Mean Dice coefficient ``2 <a, b> / (|a|^2 + |b|^2)`` over the ordered pairs of distinct masks
    of ``masks [B, M, ...]`` (0 when ``M == 1``): 0 for disjoint supports, 1 for identical masks."""
    if masks.dim() < 3:
        raise ValueError(f"masks must be [B, M, ...], got {tuple(masks.shape)}")
    m = masks.shape[1]
    if m < 2:
        return masks.new_zeros(())
    flat = masks.flatten(2)  # [B, M, N]
    inner = flat @ flat.transpose(1, 2)  # [B, M, M]
    sq = inner.diagonal(dim1=1, dim2=2)  # [B, M]
    dice = 2 * inner / (sq[:, :, None] + sq[:, None, :] + eps)
    off = ~torch.eye(m, dtype=torch.bool, device=masks.device)
    return dice[:, off].mean()


def logit_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton et al.'s ``T^2 KL(softmax(z_t / T) || softmax(z_s / T))``, averaged over the batch."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------
def map_to_tokens(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, H W, C]`` (row-major positions)."""
    return x.flatten(2).transpose(1, 2)


class STCAFusion(nn.Module):
    """Student-teacher cross-attention feature fusion: queries from the teacher's tokens, keys and
    values from the student's (any width ``student_channels`` and any grid), output on the teacher's
    grid with the teacher's width. Inputs are layer-normalised first (our choice: teacher and
    student activations differ in scale by orders of magnitude across families)."""

    def __init__(
        self, teacher_channels: int, student_channels: int, heads: int = 1, norm_inputs: bool = True
    ):
        super().__init__()
        if teacher_channels % heads:
            raise ConfigError(f"acamkd: heads={heads} must divide the teacher's {teacher_channels} channels")
        self.norm_t = nn.LayerNorm(teacher_channels) if norm_inputs else nn.Identity()
        self.norm_s = nn.LayerNorm(student_channels) if norm_inputs else nn.Identity()
        self.attn = MultiHeadAttention(teacher_channels, heads, kv_dim=student_channels)

    def forward(self, teacher: Tensor, student: Tensor) -> Tensor:
        """``teacher [B, C, H, W]``, ``student [B, C_s, H_s, W_s]`` -> fused ``[B, C, H, W]``."""
        b, c, h, w = teacher.shape
        fused = self.attn(self.norm_t(map_to_tokens(teacher)), self.norm_s(map_to_tokens(student)))
        return fused.transpose(1, 2).reshape(b, c, h, w)


class SpatialMaskGenerator(nn.Module):
    """``M`` spatial masks ``sigmoid(<p_m, F_hw> + b_m)`` ``[B, M, H, W]``: one learnable selection
    token ``p_m`` per mask (a 1x1 convolution ``C -> M``)."""

    def __init__(self, channels: int, num_masks: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num_masks, 1)
        nn.init.normal_(self.proj.weight, std=channels**-0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, fused: Tensor) -> Tensor:
        return self.proj(fused).sigmoid()


class ChannelMaskGenerator(nn.Module):
    """``M`` channel masks ``sigmoid(MLP(GAP(F)))`` ``[B, M, C]`` (an SE-style bottleneck
    ``C -> C / reduction -> M C``)."""

    def __init__(self, channels: int, num_masks: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // max(1, reduction))
        self.num_masks, self.channels = num_masks, channels
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, num_masks * channels)
        )

    def forward(self, fused: Tensor) -> Tensor:
        pooled = fused.mean((-2, -1))
        return self.mlp(pooled).view(-1, self.num_masks, self.channels).sigmoid()


@dataclass
class StageDistillation:
    """What one stage pair contributed: the loss terms and the masks (``None`` without masking)."""

    spatial_loss: Tensor
    channel_loss: Tensor
    diversity_loss: Tensor
    spatial_masks: Tensor | None = None
    channel_masks: Tensor | None = None
    fused: Tensor | None = None

    @property
    def feature_loss(self) -> Tensor:
        return self.spatial_loss + self.channel_loss


class ACAMStage(nn.Module):
    """Alignment, STCA-FF, ASCM and the masked loss for one (student stage, teacher stage) pair.

    ``masking=False`` is the plain feature-mimicking ablation (FitNets-style): the same alignment,
    no fusion nor masks, ``L_feat = 2 MSE(S', T)`` (what all-ones masks would give) and no diversity term.
    ``normalize_features`` standardises ``T`` and ``S'`` over channels at every position before
    the loss (for backbones whose activation scales differ a lot; off in the paper).
    ``mask_grad_to_student`` lets the mask terms (fusion -> masks -> masked loss and diversity)
    back-propagate into the student's features too (off: the student's keys and values enter
    STCA-FF detached, so only the alignment, fusion and mask generators learn from the mask path).
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        *,
        num_masks: int = 4,
        heads: int = 1,
        channel_reduction: int = 4,
        norm_inputs: bool = True,
        normalize_features: bool = False,
        masking: bool = True,
        mask_grad_to_student: bool = False,
    ) -> None:
        super().__init__()
        if num_masks < 1:
            raise ConfigError(f"acamkd: num_masks must be >= 1, got {num_masks}")
        self.align = nn.Conv2d(student_channels, teacher_channels, 1)
        self.masking = masking
        self.normalize_features = normalize_features
        self.mask_grad_to_student = mask_grad_to_student
        if masking:
            self.fusion = STCAFusion(teacher_channels, student_channels, heads, norm_inputs)
            self.spatial_masks = SpatialMaskGenerator(teacher_channels, num_masks)
            self.channel_masks = ChannelMaskGenerator(teacher_channels, num_masks, channel_reduction)

    def aligned(self, student: Tensor, size: Sequence[int]) -> Tensor:
        """``Conv1x1(student)`` resized to the teacher's ``size`` when the strides differ."""
        s = self.align(student)
        if tuple(s.shape[-2:]) != tuple(size):
            s = F.interpolate(s, size=tuple(size), mode="bilinear", align_corners=False)
        return s

    def forward(self, student: Tensor, teacher: Tensor) -> StageDistillation:
        aligned = self.aligned(student, teacher.shape[-2:])
        s, t = aligned, teacher
        if self.normalize_features:
            s = F.layer_norm(s.movedim(1, -1), s.shape[1:2]).movedim(-1, 1)
            t = F.layer_norm(t.movedim(1, -1), t.shape[1:2]).movedim(-1, 1)
        if not self.masking:
            mse = F.mse_loss(s, t)
            return StageDistillation(mse, mse, mse.new_zeros(()))
        # the masks read the student's current features; by default the student learns only from what
        # they weight (the CE and the masked MSE), not from moving its features to shape the masks
        fused = self.fusion(teacher, student if self.mask_grad_to_student else student.detach())
        ms, mc = self.spatial_masks(fused), self.channel_masks(fused)
        spatial, channel = masked_feature_loss(s, t, ms, mc)
        diversity = dice_diversity(ms) + dice_diversity(mc)
        return StageDistillation(spatial, channel, diversity, ms, mc, fused)


@dataclass
class DistillOutput:
    """One distillation pass: student logits, teacher logits (when asked), summed loss terms over
    the stage pairs and each pair's :class:`StageDistillation`."""

    logits: Tensor
    feature_loss: Tensor
    diversity_loss: Tensor
    spatial_loss: Tensor
    channel_loss: Tensor
    teacher_logits: Tensor | None = None
    stages: list[StageDistillation] = field(default_factory=list)


def _single_pass(model: nn.Module) -> bool:
    """Whether ``forward(x) == forward_head(forward_intermediates(x)[-1])`` by construction (the
    model keeps the base class's ``forward`` and ``forward_features``), so stage maps and logits come
    from one pass."""
    kind = type(model)
    return (
        isinstance(model, VisionBackbone)
        and kind.forward_features is VisionBackbone.forward_features
        and kind.forward is VisionBackbone.forward
    )


def _vit_single_pass(model: VisionTransformer, x: Tensor, idx: list[int]) -> tuple[list[Tensor], Tensor]:
    """A plain ViT's block maps (as ``forward_intermediates``) and logits (as ``forward``) from one
    run of its blocks (``prepare_tokens`` -> blocks -> ``norm`` -> head)."""
    h, w = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
    p = model.num_prefix_tokens
    tokens = model.prepare_tokens(x)
    kept: dict[int, Tensor] = {}
    for i, block in enumerate(model.blocks):
        tokens = block(tokens)
        if i in idx:
            kept[i] = tokens[:, p : p + h * w].transpose(1, 2).reshape(x.shape[0], -1, h, w)
    return [kept[i] for i in idx], model.forward_head(model.norm(tokens))


def features_and_logits(
    model: VisionBackbone, x: Tensor, indices: Sequence[int], *, logits: bool = True
) -> tuple[list[Tensor], Tensor | None]:
    """The maps of stages ``indices`` (``forward_intermediates``) and, when ``logits``, the model's
    output, in one pass where the model allows it (plain ViTs, models keeping the base class's
    ``forward_features``) and two otherwise."""
    n = len(model.feature_info)
    idx = [i % n for i in indices]
    if logits and type(model) is VisionTransformer:
        return _vit_single_pass(model, x, idx)
    if logits and _single_pass(model):
        maps = model.forward_intermediates(x, indices=list(range(n)))
        return [maps[i] for i in idx], model.forward_head(maps[-1])
    maps = model.forward_intermediates(x, indices=idx)
    return list(maps), (model(x) if logits else None)


class ACAMDistiller(nn.Module):
    """A student classifier distilled from a frozen teacher with ACAM-KD on ``len(student_indices)``
    stage pairs.

    ``forward(x)`` returns the student's logits; in training mode (with a teacher) it also runs the
    teacher and the ACAM stages and keeps the result in :attr:`last` (a :class:`DistillOutput`) for
    the task to add the loss terms (:meth:`distill` does the same explicitly). ``teacher=None`` makes
    it the plain student (the "student alone" baseline).
    """

    def __init__(
        self,
        student: VisionBackbone,
        teacher: VisionBackbone | None,
        *,
        student_indices: Sequence[int] = (-1,),
        teacher_indices: Sequence[int] = (-1,),
        num_masks: int = 4,
        heads: int = 1,
        channel_reduction: int = 4,
        norm_inputs: bool = True,
        normalize_features: bool = False,
        masking: bool = True,
        mask_grad_to_student: bool = False,
        teacher_logits: bool = False,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.teacher_logits = teacher_logits
        self.last: DistillOutput | None = None
        self.student_indices = _check_indices(student, student_indices, "student_indices")
        self.teacher_indices: list[int] = []
        self.stages = nn.ModuleList()
        if teacher is None:
            return
        self.teacher_indices = _check_indices(teacher, teacher_indices, "teacher_indices")
        if len(self.student_indices) != len(self.teacher_indices):
            raise ConfigError(
                f"acamkd: student_indices {list(student_indices)} and teacher_indices "
                f"{list(teacher_indices)} must pair up (same length)"
            )
        teacher.requires_grad_(False)
        teacher.eval()
        for si, ti in zip(self.student_indices, self.teacher_indices):
            self.stages.append(
                ACAMStage(
                    student.feature_info[si].num_chs,
                    teacher.feature_info[ti].num_chs,
                    num_masks=num_masks,
                    heads=heads,
                    channel_reduction=channel_reduction,
                    norm_inputs=norm_inputs,
                    normalize_features=normalize_features,
                    masking=masking,
                    mask_grad_to_student=mask_grad_to_student,
                )
            )

    def train(self, mode: bool = True) -> ACAMDistiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    def no_weight_decay(self) -> set[str]:
        names = getattr(self.student, "no_weight_decay", None)
        return {f"student.{n}" for n in names()} if callable(names) else set()

    def distill(self, x: Tensor, *, teacher_logits: bool | None = None) -> DistillOutput:
        """Student logits plus the ACAM-KD terms on ``x`` (the teacher under ``no_grad``)."""
        if self.teacher is None:
            raise ConfigError("acamkd: no teacher (teacher=None trains the student alone)")
        want_t_logits = self.teacher_logits if teacher_logits is None else teacher_logits
        s_maps, logits = features_and_logits(self.student, x, self.student_indices)
        with torch.no_grad():
            t_maps, t_logits = features_and_logits(
                self.teacher, x, self.teacher_indices, logits=want_t_logits
            )
        results = [stage(s, t.detach()) for stage, s, t in zip(self.stages, s_maps, t_maps)]
        total = logits.new_zeros(())
        return DistillOutput(
            logits=logits,
            feature_loss=sum((r.feature_loss for r in results), total),
            diversity_loss=sum((r.diversity_loss for r in results), total),
            spatial_loss=sum((r.spatial_loss for r in results), total),
            channel_loss=sum((r.channel_loss for r in results), total),
            teacher_logits=None if t_logits is None else t_logits.detach(),
            stages=results,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.teacher is not None:
            self.last = self.distill(x)
            return self.last.logits
        self.last = None
        return self.student(x)


def _check_indices(model: VisionBackbone, indices: Sequence[int], what: str) -> list[int]:
    n = len(model.feature_info)
    out = []
    for i in indices:
        if not -n <= int(i) < n:
            name = getattr(model, "pretrained_cfg", {}).get("name", type(model).__name__)
            raise ConfigError(f"acamkd: {what} has {i}, but '{name}' has {n} stages (0..{n - 1})")
        out.append(int(i) % n)
    if not out:
        raise ConfigError(f"acamkd: {what} is empty")
    return out


# ---------------------------------------------------------------------------------------------
# weights: teacher / student checkpoints in, distilled student out
# ---------------------------------------------------------------------------------------------
def load_backbone(
    name: str,
    num_classes: int,
    pretrained_file: str | os.PathLike | None,
    params: dict[str, Any] | None,
    what: str,
) -> VisionBackbone:
    """``create_model(name, num_classes=num_classes, **params)`` with the weights of ``pretrained_file``
    (an ``interplay-vision train`` or ``acamkd`` run checkpoint, or an official one remapped by the
    model's filter; a glob pattern picks the newest run)."""
    path = None
    if pretrained_file is not None:
        path = resolve_weights_file(pretrained_file, f"acamkd: {what}_pretrained_file")
    try:
        model = create_model(name, num_classes=num_classes, pretrained_file=path, **(params or {}))
    except TypeError as err:  # a factory forwarding **kwargs to its class: name the config key
        raise ConfigError(f"acamkd: {what}_params {dict(params or {})} do not fit '{name}': {err}") from err
    if not isinstance(model, VisionBackbone):
        raise ConfigError(f"acamkd: {what} '{name}' is not a registry backbone")
    if path is None and what == "teacher":
        warnings.warn(
            f"acamkd: the teacher '{name}' has random weights (set model.params.teacher_pretrained_file)",
            stacklevel=3,
        )
    return model


def export_student(checkpoint: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the distilled student's weights of an ``acamkd`` run ``checkpoint`` to ``output``
    (``.safetensors`` or a torch file), keyed as ``create_model(<student>)`` expects, so that
    ``create_model(student, pretrained_file=output)`` loads it. The EMA weights win when present."""
    state = read_state_dict(resolve_weights_file(checkpoint, "acamkd: checkpoint"))
    student = run_state_dict(state, "student.")
    if student is state:
        raise DataError(f"acamkd: {checkpoint} holds no 'model.student.*' weights (not an acamkd run)")
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tensors = {k: v.contiguous() for k, v in student.items()}
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(tmp))
    else:
        torch.save(tensors, tmp)
    tmp.replace(out)
    return out

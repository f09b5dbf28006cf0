"""DCAL: Dual Cross-Attention Learning (Zhu, Ke, Li, Dong, Xie, Han, Zhang, Ding and Zhang,
"Dual Cross-Attention Learning for Fine-Grained Visual Categorization and Object Re-Identification",
CVPR 2022) on a plain ViT of the registry.

Three branches over one backbone of ``L`` self-attention (SA) blocks:

- **SA**: the ViT itself (eq. 1), with its classifier.
- **GLCA** (eq. 3), ``M = 1`` block with its *own* weights (initialised as a copy of the last SA block,
  and its own norm and classifier): queries are the class token plus the top ``R`` patch tokens by
  the class token's attention rollout through all ``L`` SA blocks (eq. 2, :mod:`.rollout`;
  ``R`` = 10 % for FGVC, 30 % for re-ID), keys and values are *all* tokens, all taken at the input of
  the last SA block: ``softmax(Q_l K_g^T / sqrt(d)) V_g``.
- **PWCA** (eq. 4), training only, ``T = L`` blocks *sharing* the SA weights: image ``I_1``'s queries
  attend to its own keys/values concatenated with those of a distractor ``I_2`` of the batch,
  ``softmax(Q_1 [K_1; K_2]^T / sqrt(d)) [V_1; V_2]``; ``I_2``'s keys and values at block ``i`` come
  from its SA tokens at block ``i``. Its class token goes through the SA classifier (same target).

Inference uses SA and GLCA only (so an image's output never depends on the rest of its batch): FGVC
adds the two branches' class probabilities, re-ID concatenates their class-token features. Every
attention product runs through :func:`interplay.core.attention.attend`; the rollout uses the exact
softmax maps of the SA blocks, recomputed without gradient.

The class token is kept among GLCA's queries (the paper concatenates "the final class tokens of SA
and GLCA"), so GLCA sees ``1 + R`` queries.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.attention import attend
from interplay.core.errors import ConfigError
from interplay.vision.models.base import ClassifierHead
from interplay.vision.models.vit import Block, VisionTransformer, attention_probs
from interplay.vision.modules.dcal.rollout import attention_rollout, top_response_tokens

PAPER = (
    "Zhu et al., Dual Cross-Attention Learning for Fine-Grained Visual Categorization and Object "
    "Re-Identification, CVPR 2022"
)


def block_cross_forward(block: Block, x: Tensor, context: Tensor) -> Tensor:
    """One pre-norm ViT block whose attention takes its queries from ``x [B, Lq, C]`` and its keys and
    values from ``context [B, Lk, C]`` (both through the block's ``norm1`` and ``qkv`` weights);
    residual and MLP act on ``x``. With ``context = x`` it is the block itself."""
    attn = block.attn
    b, n, c = x.shape
    weight, bias = attn.qkv.weight, attn.qkv.bias
    h, hc = block.norm1(x), block.norm1(context)
    q = F.linear(h, weight[:c], None if bias is None else bias[:c])
    kv = F.linear(hc, weight[c:], None if bias is None else bias[c:])
    q = q.reshape(b, n, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(b, hc.shape[1], 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    dropout = attn.attn_drop if block.training else 0.0
    out = attend(q, k, v, scale=attn.scale, dropout_p=dropout)
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(b, n, c)))
    x = x + block.drop_path1(block.ls1(out))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


@torch.no_grad()
def block_attention_map(block: Block, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """The exact attention probabilities ``[B, heads, L, L]`` (float32) of ``block`` on input ``x``."""
    attn = block.attn
    b, n, c = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    return attention_probs(qkv[0], qkv[1], attn.scale, attn_mask)


def distractor_permutation(batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """A pairing ``i -> perm[i]`` with ``perm[i] != i`` (a random cyclic shift of the batch) when
    ``batch > 1``: PWCA's distractor of each image is another image of the same batch."""
    if batch < 2:
        return torch.zeros(batch, dtype=torch.long, device=device)
    shift = int(torch.randint(1, batch, (1,), generator=generator))
    return (torch.arange(batch, device=device) + shift) % batch


@dataclass
class DCALOutput:
    """Per-branch class-token features (after the final norms) and logits; PWCA's only in training."""

    sa_features: Tensor
    sa_logits: Tensor
    glca_features: Tensor | None = None
    glca_logits: Tensor | None = None
    pwca_features: Tensor | None = None
    pwca_logits: Tensor | None = None
    local_indices: Tensor | None = None  # [B, R] GLCA's local queries (token indices)
    rollout: Tensor | None = None  # [B, L, L]


class DCALViT(nn.Module):
    """SA + GLCA + PWCA over a :class:`~interplay.vision.models.vit.VisionTransformer`.

    Args:
        backbone: the ViT (its classifier, sized to the task's classes, is the SA classifier).
        local_ratio: ``R`` as a fraction of the patch tokens (0.1 FGVC, 0.3 re-ID).
        glca, pwca: switch the branches (both off: the plain ViT baseline).
        rollout_residual: identity weight of the rollout (0.5).
        detach_distractor: stop PWCA's gradient at the distractor's keys and values (off: the
            distractor's SA tokens learn from the pair's loss as well; the paper does not say).

    ``forward(x)`` returns classification scores: ``log((softmax(SA) + softmax(GLCA)) / 2)`` (a
    log-probability, so its argmax is the paper's summed-probability prediction); :meth:`embed` returns
    the re-ID feature ``[SA class token; GLCA class token]``; :meth:`branches` returns everything
    (with ``distractors`` in training, the PWCA branch too).
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        *,
        local_ratio: float = 0.1,
        glca: bool = True,
        pwca: bool = True,
        rollout_residual: float = 0.5,
        detach_distractor: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, VisionTransformer):
            raise ConfigError(
                f"DCAL needs a plain ViT backbone (VisionTransformer), got {type(backbone).__name__}"
            )
        self.backbone = backbone
        self.num_classes = backbone.num_classes
        self.num_features = backbone.num_features
        self.local_ratio = local_ratio
        self.use_glca, self.use_pwca = glca, pwca
        self.rollout_residual = rollout_residual
        self.detach_distractor = detach_distractor
        if glca:
            # own weights (the paper: GLCA does not share weights with SA), started from the last SA block
            self.glca_block = copy.deepcopy(backbone.blocks[-1])
            self.glca_norm = copy.deepcopy(backbone.norm)
            self.glca_head = ClassifierHead(backbone.num_features, backbone.num_classes, pool="token")
            if isinstance(self.glca_head.fc, nn.Linear):
                nn.init.normal_(self.glca_head.fc.weight, std=0.02)
                nn.init.zeros_(self.glca_head.fc.bias)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.backbone.reset_classifier(num_classes)
        if self.use_glca:
            self.glca_head.reset(num_classes)

    # -- branches -----------------------------------------------------------------------------------
    def _self_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """SA branch: final tokens (before the norm) and every block's input tokens."""
        z = self.backbone.prepare_tokens(x)
        inputs = []
        for block in self.backbone.blocks:
            inputs.append(z)
            z = block(z)
        return z, inputs

    def _glca(self, inputs: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """GLCA tokens ``[B, 1 + R, C]`` (normalised), the local indices and the rollout."""
        vit = self.backbone
        maps = [block_attention_map(block, z) for block, z in zip(vit.blocks, inputs)]
        rollout = attention_rollout(maps, residual=self.rollout_residual)
        local = top_response_tokens(rollout, self.local_ratio, vit.num_prefix_tokens)
        z_global = inputs[-1]  # GLCA sits beside the last SA block: same input
        index = local.unsqueeze(-1).expand(-1, -1, z_global.shape[-1])
        queries = torch.cat([z_global[:, : vit.num_prefix_tokens], z_global.gather(1, index)], dim=1)
        tokens = block_cross_forward(self.glca_block, queries, z_global)
        return self.glca_norm(tokens), local, rollout

    def _pwca(self, x: Tensor, inputs: list[Tensor], distractors: Tensor) -> Tensor:
        """PWCA branch (SA weights): final normalised tokens of every image with its distractor's
        keys and values concatenated in every block."""
        vit = self.backbone
        y = inputs[0]
        for block, z in zip(vit.blocks, inputs):
            other = z[distractors].detach() if self.detach_distractor else z[distractors]
            y = block_cross_forward(block, y, torch.cat([y, other], dim=1))
        return vit.norm(y)

    def branches(self, x: Tensor, distractors: Tensor | None = None) -> DCALOutput:
        """All branch outputs; PWCA runs only in training and when ``distractors [B]`` (the batch index
        of each image's distractor) is given."""
        vit = self.backbone
        z, inputs = self._self_attention(x)
        sa_tokens = vit.norm(z)
        out = DCALOutput(
            sa_features=vit.forward_head(sa_tokens, pre_logits=True), sa_logits=vit.forward_head(sa_tokens)
        )
        if self.use_glca:
            tokens, out.local_indices, out.rollout = self._glca(inputs)
            out.glca_features = self.glca_head(tokens, pre_logits=True)
            out.glca_logits = self.glca_head(tokens)
        if self.use_pwca and self.training and distractors is not None:
            if distractors.shape != (x.shape[0],):
                raise ConfigError(f"distractors must be [B] = [{x.shape[0]}], got {tuple(distractors.shape)}")
            tokens = self._pwca(x, inputs, distractors)
            out.pwca_features = vit.forward_head(tokens, pre_logits=True)
            out.pwca_logits = vit.forward_head(tokens)
        return out

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches(x)
        if out.glca_logits is None:
            return out.sa_logits
        probs = 0.5 * (out.sa_logits.softmax(-1) + out.glca_logits.softmax(-1))
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()

    def embed(self, x: Tensor) -> Tensor:
        """Re-ID feature: SA and GLCA class tokens concatenated ``[B, 2C]`` (SA's alone without GLCA)."""
        out = self.branches(x)
        if out.glca_features is None:
            return out.sa_features
        return torch.cat([out.sa_features, out.glca_features], dim=-1)

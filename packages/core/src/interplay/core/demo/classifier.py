"""Reference Transformer classifier over image patches (a ViT for small images).

Images ``[B, C, H, W]`` are cut into ``patch_size`` x ``patch_size`` patches, each patch becomes a
token (linear embedding + learned position embedding), a [CLS] token is prepended, and pre-norm
:class:`~interplay.core.nn.TransformerBlock` layers mix them; the head reads the [CLS] token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interplay.core.demo.registry import REGISTRY
from interplay.core.nn import TransformerBlock


@REGISTRY.models.register(
    "transformer-classifier", "ViT-style Transformer over image patches (reference model)"
)
class TransformerClassifier(nn.Module):
    def __init__(
        self,
        num_classes: int,
        image_size: int = 8,
        in_channels: int = 1,
        patch_size: int = 2,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        drop_path: float = 0.1,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not divisible by patch_size={patch_size}")
        self.image_size, self.in_channels, self.patch_size = image_size, in_channels, patch_size
        num_patches = (image_size // patch_size) ** 2
        self.embed = nn.Linear(in_channels * patch_size**2, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio=mlp_ratio, dropout=dropout, drop_path=r) for r in rates
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def patchify(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, num_patches, C * p * p]``."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape [B, {', '.join(map(str, expected))}], got {tuple(images.shape)}"
            )
        p = self.patch_size
        b, c, h, w = images.shape
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def forward_features(self, images: Tensor) -> Tensor:
        x = self.embed(self.patchify(images))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features[:, 0])

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

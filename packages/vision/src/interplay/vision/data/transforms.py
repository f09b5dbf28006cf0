"""Image transforms: per-image resizing (Pillow), batch augmentation (kornia), Mixup / CutMix.

Images travel as ``uint8 [3, H, W]`` tensors of one size per dataset (cheap to collate and to pin);
everything random happens on whole batches on the training device:

- :class:`BatchAugment`: ``RandomResizedCrop -> RandomHorizontalFlip -> ColorJitter`` (kornia) on
  float images in ``[0, 1]``, then ``Normalize``; evaluation batches are only normalised.
- :class:`MixupCutmix`: Mixup (Zhang et al., ICLR 2018) or CutMix (Yun et al., ICCV 2019) of each
  image with the batch's mirror (``x.flip(0)``), labels mixed into soft targets with label smoothing:
  ``t = lam * smooth(y) + (1 - lam) * smooth(y.flip(0))``, ``smooth(y) = (1 - eps) onehot(y) + eps / K``
  (timm's ``Mixup`` in batch mode); CutMix's ``lam`` is corrected to the pasted box's area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from interplay.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- per image (Pillow) ----------------------------------------------------------------------------------
def resize_center_crop(img: Image.Image, size: int, crop_pct: float = 1.0) -> Image.Image:
    """Resize the shorter side to ``size / crop_pct`` (bicubic), then centre-crop ``size`` x ``size``
    (the usual evaluation transform; ``crop_pct = 0.875`` gives 256 -> 224)."""
    if not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    scale_size = int(math.floor(size / crop_pct))
    w, h = img.size
    if w <= h:
        new_w, new_h = scale_size, max(scale_size, round(h * scale_size / w))
    else:
        new_w, new_h = max(scale_size, round(w * scale_size / h)), scale_size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_uint8(img: Image.Image) -> Tensor:
    """RGB Pillow image -> ``uint8 [3, H, W]``."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def resize_batch_uint8(images: Tensor, size: int) -> Tensor:
    """``uint8 [N, C, h, w]`` -> ``uint8 [N, C, size, size]`` (bilinear, antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return out.round().clamp(0, 255).to(torch.uint8)


# -- per batch (kornia) -------------------------------------------------------------------------------------
class BatchAugment(nn.Module):
    """Training / evaluation transforms of a batch of ``uint8`` (or ``[0, 1]`` float) images.

    ``train=True`` applies ``RandomResizedCrop(size, scale, ratio)`` (skipped when ``scale`` is
    ``None``), ``RandomHorizontalFlip(hflip)`` (skipped at 0), ``ColorJitter(color_jitter x 3, hue
    0)`` (skipped at 0), then ``Normalize(mean, std)``; ``train=False`` only normalises.
    """

    def __init__(
        self,
        size: int,
        *,
        scale: Sequence[float] | None = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        color_jitter: float = 0.4,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if scale is not None and not (0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(f"scale must satisfy 0 < min <= max <= 1, got {list(scale)}")
        if not 0 <= hflip <= 1:
            raise ConfigError(f"hflip must be a probability in [0, 1], got {hflip}")
        if color_jitter < 0:
            raise ConfigError(f"color_jitter must be >= 0, got {color_jitter}")
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"mean and std need 3 values (RGB), got {list(mean)} and {list(std)}")
        ops: list[nn.Module] = []
        if scale is not None:
            ops.append(K.RandomResizedCrop((size, size), scale=tuple(scale), ratio=tuple(ratio)))
        if hflip > 0:
            ops.append(K.RandomHorizontalFlip(p=hflip))
        if color_jitter > 0:
            ops.append(K.ColorJitter(color_jitter, color_jitter, color_jitter, 0.0, p=1.0))
        self.size = size
        self.augment = nn.Sequential(*ops)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def to_float(self, images: Tensor) -> Tensor:
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()

    def normalize(self, images: Tensor) -> Tensor:
        return (images - self.mean.to(images.device)) / self.std.to(images.device)

    def forward(self, images: Tensor, train: bool = False) -> Tensor:
        x = self.to_float(images)
        if train and len(self.augment):
            x = self.augment(x)
            if x.shape[-2:] != (self.size, self.size):  # no crop configured: bring to the model size
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        elif x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.normalize(x)


# -- Mixup / CutMix ---------------------------------------------------------------------------------------
def smooth_one_hot(targets: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """``(1 - smoothing) onehot + smoothing / K`` (``[B, K]`` float)."""
    off = smoothing / num_classes
    out = torch.full((targets.shape[0], num_classes), off, device=targets.device, dtype=torch.float32)
    return out.scatter_(1, targets.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box ``(y0, y1, x0, x1)`` covering about ``1 - lam`` of the image, centred uniformly at random
    and clipped at the borders (CutMix, Yun et al. 2019)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    return y0, y1, x0, x1


class MixupCutmix:
    """Mix each image with the batch's mirror image; return ``(mixed images, soft targets [B, K])``.

    With probability ``prob`` a batch is mixed: by CutMix with probability ``switch_prob`` when both
    alphas are > 0 (else by whichever is > 0), by Mixup otherwise, with ``lam ~ Beta(alpha, alpha)``.
    Unmixed batches still get smoothed one-hot targets. The last ``lam`` and mode are kept in
    ``last_lam`` / ``last_mode`` (for tests and logging).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        rng: np.random.Generator | None = None,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        if not (0 <= prob <= 1 and 0 <= switch_prob <= 1 and 0 <= label_smoothing < 1):
            raise ConfigError("mix prob and switch_prob must be in [0, 1], label_smoothing in [0, 1)")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing
        # drawn from numpy's global state by default, which seed_everything seeds
        self.rng = rng if rng is not None else np.random.default_rng(np.random.randint(0, 2**31 - 1))
        self.last_lam, self.last_mode = 1.0, "none"

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _choose(self) -> tuple[str, float]:
        if not self.active or self.rng.random() >= self.prob:
            return "none", 1.0
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or self.rng.random() < self.switch_prob)
        if use_cutmix:
            return "cutmix", float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        return "mixup", float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        mode, lam = self._choose()
        if mode == "mixup":
            images = images * lam + images.flip(0) * (1.0 - lam)
        elif mode == "cutmix":
            h, w = images.shape[-2:]
            y0, y1, x0, x1 = cutmix_box(h, w, lam, self.rng)
            images = images.clone()
            images[..., y0:y1, x0:x1] = images.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        one = smooth_one_hot(targets, self.num_classes, self.label_smoothing)
        soft = one * lam + one.flip(0) * (1.0 - lam)
        self.last_lam, self.last_mode = lam, mode
        return images, soft

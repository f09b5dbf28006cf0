"""Exponential moving average of a model's weights (Polyak averaging, as timm's ``ModelEmaV2``).

After each optimiser step ``update(model)`` sets, for every floating-point parameter,
``e <- d e + (1 - d) w``; so after ``k`` updates from ``e_0 = w_0``:
``e_k = d^k w_0 + (1 - d) sum_{i=1..k} d^(k-i) w_i``. Buffers (BatchNorm statistics, counters) are
copied, not averaged (ModelEmaV3's ``use_buffers=False`` behaviour): the running statistics are
already averages. The averaged copy is never trained (``requires_grad=False``) and stays in eval mode.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma(nn.Module):
    """A frozen copy of ``model`` whose parameters follow ``model``'s as an exponential moving average."""

    def __init__(self, model: nn.Module, decay: float = 0.9998) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> ModelEma:
        super().train(mode)
        self.module.eval()  # the average is only ever evaluated
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        own = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            ema = own[name]
            if ema.dtype.is_floating_point:
                ema.lerp_(param.detach().to(ema.dtype), 1.0 - self.decay)
            else:
                ema.copy_(param.detach())
        own_buffers = dict(self.module.named_buffers())
        for name, buf in model.named_buffers():
            if name in own_buffers:
                own_buffers[name].copy_(buf)
        self.num_updates += 1

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Reset the average to ``model``'s current weights."""
        self.module.load_state_dict(model.state_dict())

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

"""A small causal decoder whose token mixer is chosen by name (:mod:`interplay.core.lm.mixers`).

Pre-norm blocks (RMSNorm), a GELU feed-forward (:class:`~interplay.core.nn.FeedForward`), a final
RMSNorm and an output layer tied to the byte embedding (Press and Wolf 2017, "Using the Output
Embedding to Improve Language Models")::

    x <- x + Mixer(RMSNorm(x));   x <- x + FFN(RMSNorm(x));   logits = RMSNorm(x) E^T

(a mixer that brings its own norm and residual, RAT's layer, replaces the first line).

Equal parameters: mixers differ in size (RAT's gated projections are 6 d^2, a token shift 2 d^2),
so each layer's feed-forward width is set to bring the layer to the size of a softmax layer with
``mlp_ratio * dim`` hidden units (:func:`ffn_hidden_for`); :func:`parameter_table` reports the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.core.lm.mixers import MixerOptions, layer_mixers, make_mixer
from interplay.core.nn import FeedForward

__all__ = ["CausalLM", "ModelSpec", "build_model", "ffn_hidden_for", "parameter_table"]

VOCAB_SIZE = 256  # bytes


@dataclass
class ModelSpec:
    """Architecture of :class:`CausalLM` (the ``model`` section of the LM config)."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0  # feed-forward width of the reference (softmax) layer
    match_params: bool = True  # resize each feed-forward to the reference layer's parameter count
    dropout: float = 0.0
    options: MixerOptions = field(default_factory=MixerOptions)

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _ffn_params(dim: int, hidden: int) -> int:
    return 2 * dim * hidden + hidden + dim  # two Linear layers with biases


def ffn_hidden_for(dim: int, budget: int, minimum: int = 8) -> int:
    """Hidden width whose feed-forward holds about ``budget`` parameters (at least ``minimum``)."""
    return max(minimum, round((budget - dim) / (2 * dim + 1)))


class DecoderLayer(nn.Module):
    """``x + Mixer(RMSNorm(x))`` (or the mixer's own residual form), then ``x + FFN(RMSNorm(x))``."""

    def __init__(self, dim: int, mixer: nn.Module, ffn_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.owns_residual = bool(getattr(mixer, "owns_residual", False))
        self.mixer_norm = None if self.owns_residual else nn.RMSNorm(dim)
        self.mixer = mixer
        self.ffn_norm = nn.RMSNorm(dim)
        self.ffn = FeedForward(dim, ffn_hidden, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mixer(x) if self.owns_residual else x + self.drop(self.mixer(self.mixer_norm(x)))
        return x + self.ffn(self.ffn_norm(x))


class CausalLM(nn.Module):
    """Byte-level causal decoder: ``forward(tokens [B, L]) -> logits [B, L, 256]``.

    ``mixer``: a name of :data:`~interplay.core.lm.mixers.MIXERS` or a hybrid
    (``hybrid:linear@softmax=0,3``); ``spec``: widths, depth, heads and mixer options.
    """

    def __init__(self, mixer: str, spec: ModelSpec | None = None) -> None:
        super().__init__()
        spec = spec or ModelSpec()
        self.spec, self.mixer_name = spec, mixer
        self.layer_mixers = layer_mixers(mixer, spec.depth)
        dim = spec.dim
        self.embed = nn.Embedding(VOCAB_SIZE, dim)
        reference = make_mixer("softmax", dim, spec.heads, spec.options)
        default_hidden = round(spec.mlp_ratio * dim)
        layer_budget = _count(reference) + dim + _ffn_params(dim, default_hidden) + dim  # + two norms
        layers = []
        for name in self.layer_mixers:
            mixer_module = make_mixer(name, dim, spec.heads, spec.options)
            hidden = default_hidden
            if spec.match_params:
                norms = dim * (1 if getattr(mixer_module, "owns_residual", False) else 2)
                hidden = ffn_hidden_for(dim, layer_budget - _count(mixer_module) - norms)
            layers.append(DecoderLayer(dim, mixer_module, hidden, spec.dropout))
        self.layers = nn.ModuleList(layers)
        self.norm = nn.RMSNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # tied output: logits = h E^T with h of unit RMS, so E must start small (GPT-2's 0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        for layer in self.layers:
            # residual branches' last projections scaled down with depth (GPT-2, Sec. 2.3)
            last = layer.ffn.net[3]
            nn.init.normal_(last.weight, std=0.02 / math.sqrt(2 * len(self.layers)))
            nn.init.zeros_(last.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must have shape [B, L], got {shape}")
        if tokens.dtype not in (torch.int64, torch.int32, torch.uint8):
            raise ValueError(f"tokens must be integer byte values, got dtype {tokens.dtype}")
        x = self.embed(tokens.long())
        for layer in self.layers:
            x = layer(x)
        return F.linear(self.norm(x), self.embed.weight)

    def loss(self, tokens: Tensor) -> Tensor:
        """Mean next-byte cross-entropy (nats) of ``tokens [B, L + 1]``: inputs ``[:, :-1]``."""
        logits = self(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB_SIZE).float(), tokens[:, 1:].reshape(-1).long())

    def num_parameters(self) -> int:
        return _count(self)


def build_model(mixer: str, spec: ModelSpec | None = None) -> CausalLM:
    """:class:`CausalLM` for ``mixer``; unknown names raise :class:`~interplay.core.errors.ConfigError`."""
    try:
        return CausalLM(mixer, spec)
    except ConfigError:
        raise
    except ValueError as err:  # a mixer rejecting the widths (e.g. odd head dims for RoPE)
        raise ConfigError(f"mixer {mixer!r}: {err}") from err


def parameter_table(mixers: list[str], spec: ModelSpec | None = None) -> list[dict]:
    """Parameter count of each mixer's model (and of its mixers alone) at ``spec``."""
    rows = []
    for name in mixers:
        model = build_model(name, spec)
        mixer_params = sum(_count(layer.mixer) for layer in model.layers)
        rows.append({"mixer": name, "params": model.num_parameters(), "mixer_params": mixer_params})
    return rows

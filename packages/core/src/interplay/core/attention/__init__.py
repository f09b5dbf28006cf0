"""Attention primitives: one ``attend`` API over math / SDPA / FlexAttention backends, mask and bias
libraries, and graph, optimal-transport and channel attention.

    from interplay.core.attention import attend, masks
    out = attend(q, k, v, mask=masks.sliding_window(128) & masks.key_padding(lengths))
"""

from interplay.core.attention import masks
from interplay.core.attention.api import BACKENDS, AttentionBackendError, attend, choose_backend, flex_compile
from interplay.core.attention.bias import (
    ALiBi,
    AttentionBias,
    DenseBias,
    DynamicPositionBias,
    LeViTAttentionBias,
    RelativePositionBias1D,
    RelativePositionBias2D,
    TableBias,
    alibi_slopes,
    relative_position_index_2d,
)
from interplay.core.attention.channel import ChannelAttention, TransposedAttention, channel_attention
from interplay.core.attention.graph import GraphAttention, aggregate, edge_softmax, graph_attention
from interplay.core.attention.masks import (
    MaskSpec,
    block_mask,
    block_sparse,
    causal,
    chunk_local,
    concentric_causal,
    concentric_position_ids,
    dilated_2d,
    halo,
    key_padding,
    sinks,
    sliding_window,
    window_2d,
)
from interplay.core.attention.reference import attention_reference
from interplay.core.attention.rope import RotaryEmbedding, apply_rope, apply_rope_2d
from interplay.core.attention.transport import OTCoAttention, ot_coattention, sinkhorn, sinkhorn_pot

__all__ = [
    "ALiBi",
    "DynamicPositionBias",
    "LeViTAttentionBias",
    "RelativePositionBias1D",
    "RelativePositionBias2D",
    "RotaryEmbedding",
    "alibi_slopes",
    "apply_rope",
    "apply_rope_2d",
    "relative_position_index_2d",
    "ChannelAttention",
    "GraphAttention",
    "OTCoAttention",
    "TransposedAttention",
    "aggregate",
    "channel_attention",
    "edge_softmax",
    "graph_attention",
    "ot_coattention",
    "sinkhorn",
    "sinkhorn_pot",
    "BACKENDS",
    "AttentionBackendError",
    "AttentionBias",
    "DenseBias",
    "MaskSpec",
    "TableBias",
    "attend",
    "attention_reference",
    "block_mask",
    "block_sparse",
    "causal",
    "choose_backend",
    "chunk_local",
    "concentric_causal",
    "concentric_position_ids",
    "dilated_2d",
    "flex_compile",
    "halo",
    "key_padding",
    "masks",
    "sinks",
    "sliding_window",
    "window_2d",
]

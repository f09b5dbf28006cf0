"""Neural-network building blocks shared by every domain package."""

from interplay.core.nn.attention import MultiHeadAttention
from interplay.core.nn.blocks import DropPath, FeedForward, TransformerBlock

__all__ = ["DropPath", "FeedForward", "MultiHeadAttention", "TransformerBlock"]

"""Feature embeddings shared by every CTR model.

:class:`FeatureEmbedding` turns a batch (see :mod:`interplay.recsys.layout`) into field tokens
``[B, F, d]``: one embedding table per categorical field (``F_cat`` tokens) and one learned vector
per numeric field scaled by its value (``F_num`` tokens, as in AutoInt). The behaviour sequence
is embedded with the table of the field it shares its vocabulary with (``embed_sequence``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interplay.recsys.layout import FeatureLayout


class FeatureEmbedding(nn.Module):
    def __init__(self, layout: FeatureLayout, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"embedding dim must be >= 1, got {dim}")
        self.layout, self.dim = layout, dim
        self.tables = nn.ModuleList(nn.Embedding(max(1, f.vocab_size), dim) for f in layout.categorical)
        self.numeric = nn.Parameter(torch.empty(layout.n_numeric, dim))
        self.numeric_bias = nn.Parameter(torch.zeros(layout.n_numeric, dim))
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.01)
        nn.init.normal_(self.numeric, std=0.01)

    @property
    def n_tokens(self) -> int:
        return self.layout.n_fields

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Field tokens ``[B, n_categorical + n_numeric, dim]`` (categorical first)."""
        tokens = []
        categorical = batch["categorical"]
        if categorical.shape[1] != self.layout.n_categorical:
            raise ValueError(
                f"batch has {categorical.shape[1]} categorical columns, layout {self.layout.n_categorical}"
            )
        for j, table in enumerate(self.tables):
            tokens.append(table(categorical[:, j]))
        if self.layout.n_numeric:
            numeric = batch["numeric"]
            if numeric.shape[1] != self.layout.n_numeric:
                raise ValueError(
                    f"batch has {numeric.shape[1]} numeric columns, the layout {self.layout.n_numeric}"
                )
            tokens.extend((numeric.unsqueeze(-1) * self.numeric + self.numeric_bias).unbind(1))
        return torch.stack(tokens, dim=1)

    def embed_sequence(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Behaviour items ``[B, L, dim]`` (shared table; padding rows are zero) and their mask ``[B, L]``."""
        if self.layout.sequence is None:
            raise ValueError("this feature layout has no behaviour sequence")
        ids = batch["sequence"]
        mask = ids != 0
        items = self.tables[self.layout.target_index](ids) * mask.unsqueeze(-1)
        return items, mask

    def target(self, batch: dict[str, Tensor]) -> Tensor:
        """Embedding of the target item ``[B, dim]`` (the field the sequence shares)."""
        index = self.layout.target_index
        if index is None:
            raise ValueError("this feature layout has no behaviour sequence (and so no target item field)")
        return self.tables[index](batch["categorical"][:, index])

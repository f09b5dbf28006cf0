"""What a CTR model sees: the feature layout and the batch format shared by readers and models.

Readers (``interplay.recsys.data``) turn raw rows into batches; models (``interplay.recsys.models``)
read only this layout, never raw column names, so every model runs on every dataset.

Batch (a dict of tensors, ``B`` examples):

* ``"categorical"``: ``LongTensor [B, n_categorical]``; column ``j`` holds an id in
  ``[0, layout.categorical[j].vocab_size)`` of field ``j`` (0 = out-of-vocabulary / missing).
  Numeric fields transformed by binning appear here as categorical fields.
* ``"numeric"``: ``FloatTensor [B, n_numeric]``, already transformed (log / standardised); absent
  or ``[B, 0]`` when there are no numeric fields.
* ``"sequence"``: ``LongTensor [B, L]`` behaviour item ids, left-aligned, 0 = padding; ids live in
  the vocabulary of ``layout.sequence.shares_with`` (the target item field), so models share that
  field's embedding table. ``"sequence_length"``: ``LongTensor [B]``. Both absent without a sequence.
* ``"user"``: ``LongTensor [B]`` user ids for GAUC and long-tail metrics (absent when unknown).
* ``"label"``: ``FloatTensor [B]`` in {0, 1}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class FieldInfo:
    name: str
    kind: Literal["categorical", "numeric", "sequence"]
    vocab_size: int = 0  # categorical and sequence fields; 0 for numeric
    shares_with: str | None = None  # sequence: the categorical field whose embedding it uses


@dataclass(frozen=True)
class FeatureLayout:
    categorical: tuple[FieldInfo, ...] = ()
    numeric: tuple[FieldInfo, ...] = ()
    sequence: FieldInfo | None = None
    max_sequence_length: int = 0

    def __post_init__(self) -> None:
        if self.sequence is not None:
            names = [f.name for f in self.categorical]
            if self.sequence.shares_with not in names:
                raise ValueError(
                    f"sequence field '{self.sequence.name}' shares embeddings with "
                    f"'{self.sequence.shares_with}', which is not a categorical field ({', '.join(names)})"
                )

    @property
    def n_categorical(self) -> int:
        return len(self.categorical)

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    @property
    def n_fields(self) -> int:
        """Feature tokens of a field-per-token model (categorical + numeric)."""
        return self.n_categorical + self.n_numeric

    @property
    def target_index(self) -> int | None:
        """Column of the categorical field the behaviour sequence shares its vocabulary with."""
        if self.sequence is None:
            return None
        return [f.name for f in self.categorical].index(self.sequence.shares_with)

    def to_dict(self) -> dict:
        def field(f: FieldInfo) -> dict:
            return {"name": f.name, "kind": f.kind, "vocab_size": f.vocab_size, "shares_with": f.shares_with}

        return {
            "categorical": [field(f) for f in self.categorical],
            "numeric": [field(f) for f in self.numeric],
            "sequence": field(self.sequence) if self.sequence else None,
            "max_sequence_length": self.max_sequence_length,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureLayout:
        return cls(
            categorical=tuple(FieldInfo(**f) for f in data.get("categorical", [])),
            numeric=tuple(FieldInfo(**f) for f in data.get("numeric", [])),
            sequence=FieldInfo(**data["sequence"]) if data.get("sequence") else None,
            max_sequence_length=int(data.get("max_sequence_length", 0)),
        )


def random_batch(
    layout: FeatureLayout, batch: int = 8, *, seed: int = 0, with_user: bool = True
) -> dict[str, Tensor]:
    """A valid random batch for ``layout`` (for tests and benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {
        "categorical": torch.stack(
            [torch.randint(0, max(1, f.vocab_size), (batch,), generator=gen) for f in layout.categorical],
            dim=1,
        )
        if layout.categorical
        else torch.zeros(batch, 0, dtype=torch.long),
        "numeric": torch.randn(batch, layout.n_numeric, generator=gen),
        "label": torch.randint(0, 2, (batch,), generator=gen).float(),
    }
    if layout.sequence is not None:
        length = layout.max_sequence_length
        vocab = layout.categorical[layout.target_index].vocab_size
        lengths = torch.randint(0, length + 1, (batch,), generator=gen)
        ids = torch.randint(1, max(2, vocab), (batch, length), generator=gen)
        ids = ids.masked_fill(torch.arange(length)[None, :] >= lengths[:, None], 0)
        out["sequence"], out["sequence_length"] = ids, lengths
    if with_user:
        out["user"] = torch.randint(0, max(2, batch // 2), (batch,), generator=gen)
    return out

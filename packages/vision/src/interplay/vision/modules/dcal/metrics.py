"""Re-identification retrieval metrics: mean average precision and the CMC (rank-k) of every query
against the gallery, with the Market-1501 protocol's exclusion of gallery images of the query's
identity taken by the query's camera (those are too easy); queries without a valid match are skipped.
Distances are Euclidean between L2-normalised features (cosine ranking)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from interplay.core.errors import DataError


def reid_retrieval(
    query_features: Tensor,
    query_ids: Tensor,
    gallery_features: Tensor,
    gallery_ids: Tensor,
    query_cams: Tensor | None = None,
    gallery_cams: Tensor | None = None,
    ranks: Sequence[int] = (1, 5),
) -> dict[str, Tensor]:
    """``{"map", "rank1", "rank5", ...}`` (fractions in ``[0, 1]``) of the queries against the gallery."""
    if len(query_features) == 0 or len(gallery_features) == 0:
        raise DataError("re-ID evaluation needs at least one query and one gallery image")
    q = F.normalize(query_features.float(), dim=-1)
    g = F.normalize(gallery_features.float(), dim=-1)
    dist = torch.cdist(q, g)
    order = dist.argsort(dim=1, stable=True)
    matches = gallery_ids[order] == query_ids.unsqueeze(1)
    keep = torch.ones_like(matches)
    if query_cams is not None and gallery_cams is not None:
        keep = ~(matches & (gallery_cams[order] == query_cams.unsqueeze(1)))
    aps, cmc_hits = [], {k: [] for k in ranks}
    for i in range(len(q)):
        hits = matches[i][keep[i]]
        if not bool(hits.any()):
            continue
        positions = torch.nonzero(hits).flatten().float()  # 0-based ranks of the true matches
        precision = torch.arange(1, len(positions) + 1, dtype=torch.float32) / (positions + 1.0)
        aps.append(precision.mean())
        first = int(positions[0])
        for k in ranks:
            cmc_hits[k].append(float(first < k))
    if not aps:
        raise DataError("no query has a valid match in the gallery (check the identities and cameras)")
    out = {"map": torch.stack(aps).mean()}
    out.update({f"rank{k}": torch.tensor(sum(v) / len(v)) for k, v in cmc_hits.items()})
    return out


class ReIDRetrieval(torchmetrics.Metric):
    """Accumulates ``(features, ids, cams, is_query)`` over an epoch; ``compute`` gives
    :func:`reid_retrieval`'s dict (``map``, ``rank1``, ``rank5``)."""

    full_state_update = False

    def __init__(self, ranks: Sequence[int] = (1, 5), **kwargs) -> None:
        super().__init__(**kwargs)
        self.ranks = tuple(ranks)
        for name in ("features", "ids", "cams", "is_query"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, ids: Tensor, cams: Tensor, is_query: Tensor) -> None:
        self.features.append(features.detach().float())
        self.ids.append(ids.long())
        self.cams.append(cams.long())
        self.is_query.append(is_query.bool())

    def compute(self) -> dict[str, Tensor]:
        def cat(x):
            return torch.cat(x) if isinstance(x, list) else x

        feats, ids, cams, query = (cat(self.features), cat(self.ids), cat(self.cams), cat(self.is_query))
        return reid_retrieval(
            feats[query], ids[query], feats[~query], ids[~query], cams[query], cams[~query], self.ranks
        )

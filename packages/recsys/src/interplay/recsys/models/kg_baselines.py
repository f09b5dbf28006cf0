"""Baselines of KGAT's comparison (Wang et al., KDD 2019, "KGAT: Knowledge Graph Attention Network
for Recommendation", Section 4.1.2): BPR-MF, CKE, and the KG-free graph model LightGCN.

* **BPR-MF** (Rendle et al., UAI 2009, "BPR: Bayesian Personalized Ranking from Implicit
  Feedback"): ``y_ui = e_u . e_i``; loss ``softplus(-(y_ui - y_uj))`` plus ``l2`` times the L2 norm
  of the batch embeddings divided by the batch size (as KGAT's reference ``BPRMF.py``).
* **CKE** (Zhang et al., KDD 2016, "Collaborative Knowledge Base Embedding for Recommender
  Systems", structural part): item representation ``e_i = v_i + x_i`` with ``x_i`` the item's entity
  embedding trained by TransR on the KG (``||W_r x_h + e_r - W_r x_t||^2`` with L2-normalised
  projections, as the reference ``CKE.py``). The CF and KG losses are minimised jointly, one KG
  batch inside each CF batch (training mode ``joint``); regularisation as the reference code
  (``cf_l2`` / ``kg_l2`` times the L2 norms, not divided by the batch size).
* **LightGCN** (He et al., SIGIR 2020, "LightGCN: Simplifying and Powering Graph Convolution Network
  for Recommendation", Eq. 3-5): on the user-item graph only, ``E^{k+1} = D^{-1/2} A D^{-1/2} E^k``
  and ``e = mean_k E^k``; BPR with ``l2`` on the layer-0 embeddings. The propagation is the same
  sparse product as KGAT's (:class:`~interplay.recsys.models.kgat.SparsePropagation`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interplay.core.errors import ConfigError
from interplay.recsys.data.kg import CollaborativeGraph
from interplay.recsys.models.kgat import SparsePropagation, bpr_loss, l2_half
from interplay.recsys.registry import REGISTRY

__all__ = ["CKE", "BPRMF", "LightGCN"]


def _xavier(rows: int, cols: int) -> nn.Parameter:
    bound = math.sqrt(6.0 / (rows + cols))
    return nn.Parameter(torch.empty(rows, cols).uniform_(-bound, bound))


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"model.params.{key} must be >= 1, got {value}")


@REGISTRY.models.register("bprmf", "BPR-MF: matrix factorisation with the BPR loss (Rendle et al., UAI 2009)")
class BPRMF(nn.Module):
    training_mode = "cf"

    def __init__(self, n_users: int, n_items: int, embed_dim: int = 64, l2: float = 1e-5) -> None:
        super().__init__()
        _check_positive(embed_dim=embed_dim)
        self.n_users, self.n_items, self.l2 = n_users, n_items, l2
        self.user_embedding = _xavier(n_users, embed_dim)
        self.item_embedding = _xavier(n_items, embed_dim)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding, self.item_embedding

    def cf_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.user_embedding[batch["users"]]
        pos, neg = self.item_embedding[batch["pos_items"]], self.item_embedding[batch["neg_items"]]
        base = bpr_loss(u, pos, neg)
        reg = self.l2 * l2_half(u, pos, neg) / u.size(0)
        return base + reg, {"bpr": base.detach(), "reg": reg.detach()}


@REGISTRY.models.register(
    "cke", "CKE: BPR-MF + TransR item entity embeddings, trained jointly (Zhang et al., KDD 2016)"
)
class CKE(nn.Module):
    training_mode = "joint"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_entities: int,
        n_relations: int,
        embed_dim: int = 64,
        relation_dim: int = 64,
        cf_l2: float = 1e-5,
        kg_l2: float = 1e-5,
    ) -> None:
        super().__init__()
        _check_positive(embed_dim=embed_dim, relation_dim=relation_dim)
        self.n_users, self.n_items = n_users, n_items
        self.cf_l2, self.kg_l2 = cf_l2, kg_l2
        self.user_embedding = _xavier(n_users, embed_dim)
        self.item_embedding = _xavier(n_items, embed_dim)
        self.entity_embedding = _xavier(max(n_entities, n_items), embed_dim)
        self.relation_embedding = _xavier(max(1, n_relations), relation_dim)
        bound = math.sqrt(6.0 / (max(1, n_relations) * (embed_dim + relation_dim)))
        self.projection = nn.Parameter(
            torch.empty(max(1, n_relations), embed_dim, relation_dim).uniform_(-bound, bound)
        )

    def item_representation(self, items: Tensor | None = None) -> Tensor:
        if items is None:
            return self.item_embedding + self.entity_embedding[: self.n_items]
        return self.item_embedding[items] + self.entity_embedding[items]

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding, self.item_representation()

    def cf_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.user_embedding[batch["users"]]
        pos, neg = self.item_representation(batch["pos_items"]), self.item_representation(batch["neg_items"])
        base = bpr_loss(u, pos, neg)
        reg = self.cf_l2 * l2_half(u, pos, neg)
        parts = {"bpr": base.detach()}
        loss = base + reg
        if "heads" in batch:
            projection = self.projection[batch["relations"]]
            stacked = self.entity_embedding[
                torch.stack([batch["heads"], batch["pos_tails"], batch["neg_tails"]])
            ]
            h, t_pos, t_neg = F.normalize(torch.einsum("nbd,bdk->nbk", stacked, projection), dim=-1).unbind(0)
            r = F.normalize(self.relation_embedding[batch["relations"]], dim=-1)
            g_pos = (h + r - t_pos).pow(2).sum(-1)
            g_neg = (h + r - t_neg).pow(2).sum(-1)
            transr = F.softplus(g_pos - g_neg).mean()
            kg_reg = self.kg_l2 * l2_half(h, r, t_pos, t_neg)
            loss = loss + transr + kg_reg
            reg = reg + kg_reg
            parts["transr"] = transr.detach()
        parts["reg"] = reg.detach()
        return loss, parts


@REGISTRY.models.register(
    "lightgcn", "LightGCN: linear propagation on the user-item graph, no KG (He et al., SIGIR 2020)"
)
class LightGCN(nn.Module):
    training_mode = "cf"

    def __init__(
        self,
        graph: CollaborativeGraph,
        embed_dim: int = 64,
        layers: int = 3,
        l2: float = 1e-4,
        backend: str = "pyg",
    ) -> None:
        super().__init__()
        _check_positive(embed_dim=embed_dim)
        if layers < 0:
            raise ConfigError(f"model.params.layers must be >= 0, got {layers}")
        self.n_users, self.n_items = graph.n_users, graph.n_items
        self.n_layers, self.l2 = layers, l2
        n_nodes = self.n_users + self.n_items  # the interaction edges only touch users and items
        heads, tails = graph.interaction_edges()
        self.propagation = SparsePropagation(torch.stack([tails, heads]), n_nodes, backend)
        degree = torch.bincount(heads, minlength=n_nodes).float()
        self.register_buffer("weights", (degree[heads] * degree[tails]).rsqrt(), persistent=False)
        self.embedding = nn.Parameter(torch.empty(n_nodes, embed_dim))
        nn.init.normal_(self.embedding, std=0.1)

    def propagate(self) -> Tensor:
        layer = self.embedding
        total = layer
        for _ in range(self.n_layers):
            layer = self.propagation(layer, self.weights)
            total = total + layer
        return total / (self.n_layers + 1)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        nodes = self.propagate()
        return nodes[: self.n_users], nodes[self.n_users :]

    def cf_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        users = batch["users"]
        index = torch.cat([users, self.n_users + batch["pos_items"], self.n_users + batch["neg_items"]])
        u, pos, neg = self.propagate()[index].split(users.numel())
        base = bpr_loss(u, pos, neg)
        reg = self.l2 * l2_half(*self.embedding[index].split(users.numel())) / users.numel()
        return base + reg, {"bpr": base.detach(), "reg": reg.detach()}

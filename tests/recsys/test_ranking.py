"""Full-ranking evaluation: metrics on hand-computed rankings, exclusion, chunking, the metric state."""

from __future__ import annotations

import math

import pytest
import torch

from interplay.core.errors import ConfigError
from interplay.recsys.data.kg import KGData, KGDataModule
from interplay.recsys.ranking import TopKMetrics, evaluate_full_ranking, rank_items, ranking_metrics


def csr(lists):
    ptr = [0]
    for items in lists:
        ptr.append(ptr[-1] + len(items))
    return torch.tensor(ptr), torch.tensor([i for items in lists for i in items])


def d(rank: int) -> float:
    """Discount of 1-based rank ``rank``."""
    return 1.0 / math.log2(rank + 1)


# user 0: truth {2, 5, 7}, ranking 5 1 2 9 7 -> hits at ranks 1, 3, 5
# user 1: truth {3, 4, 6, 8}, ranking 0 4 1 2 9 -> hit at rank 2
# user 2: truth {9}, ranking 1 2 3 4 0 -> no hit
TOP = torch.tensor([[5, 1, 2, 9, 7], [0, 4, 1, 2, 9], [1, 2, 3, 4, 0]])
TRUTH = csr([[2, 5, 7], [3, 4, 6, 8], [9]])
EXPECTED = {
    "recall@2": [1 / 3, 1 / 4, 0.0],
    "precision@2": [1 / 2, 1 / 2, 0.0],
    "hit@2": [1.0, 1.0, 0.0],
    "ndcg@2": [d(1) / (d(1) + d(2)), d(2) / (d(1) + d(2)), 0.0],
    "recall@5": [1.0, 1 / 4, 0.0],
    "precision@5": [3 / 5, 1 / 5, 0.0],
    "hit@5": [1.0, 1.0, 0.0],
    "ndcg@5": [
        (d(1) + d(3) + d(5)) / (d(1) + d(2) + d(3)),
        d(2) / (d(1) + d(2) + d(3) + d(4)),  # ideal over min(|T| = 4, K = 5) = 4 ranks
        0.0,
    ],
    # the reference code's NDCG: the ideal ranking only holds the hits found in the top max(ks)
    "ndcg_kgat@2": [d(1) / (d(1) + d(2)), d(2) / d(1), 0.0],
    "ndcg_kgat@5": [(d(1) + d(3) + d(5)) / (d(1) + d(2) + d(3)), d(2) / d(1), 0.0],
}


def test_metrics_on_a_hand_computed_ranking():
    out = ranking_metrics(TOP, *TRUTH, ks=(2, 5), kgat_compat=True)
    assert set(out) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        torch.testing.assert_close(out[name], torch.tensor(expected, dtype=torch.float64), msg=name)


def test_standard_ndcg_never_exceeds_the_compat_one_and_compat_is_opt_in():
    torch.manual_seed(0)
    top = torch.stack([torch.randperm(50)[:20] for _ in range(40)])
    truth = csr([torch.randperm(50)[: int(n)].tolist() for n in torch.randint(1, 12, (40,))])
    out = ranking_metrics(top, *truth, ks=(5, 20), kgat_compat=True)
    assert torch.all(out["ndcg@20"] <= out["ndcg_kgat@20"] + 1e-12)
    assert "ndcg_kgat@5" not in ranking_metrics(top, *truth, ks=(5, 20))


def test_invalid_entries_never_count_as_hits():
    valid = torch.tensor([[True, True, False, False, False]] * 3)
    out = ranking_metrics(TOP, *TRUTH, ks=(5,), valid=valid)
    torch.testing.assert_close(out["recall@5"], torch.tensor([1 / 3, 1 / 4, 0.0], dtype=torch.float64))


def test_ks_are_validated():
    with pytest.raises(ConfigError, match="task.params.ks"):
        ranking_metrics(TOP, *TRUTH, ks=())


def test_rank_items_masks_excluded_items():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[3.0, 0.1], [2.0, 0.2], [1.0, 0.3], [0.0, 5.0], [0.0, 4.0]])
    top, valid = rank_items(users, items, *csr([[0], [3]]), k=2)
    assert top.tolist() == [[1, 2], [4, 2]]
    assert valid.all()
    # more positions than candidates left: the tail is marked invalid
    top, valid = rank_items(users, items, *csr([[0, 1, 2], [0]]), k=4)
    assert valid.tolist() == [[True, True, False, False], [True, True, True, True]]


class FixedEmbeddings(torch.nn.Module):
    def __init__(self, users, items):
        super().__init__()
        self.users, self.items = users, items

    def final_embeddings(self):
        return self.users, self.items


def small_data() -> KGData:
    g = torch.Generator().manual_seed(3)
    pairs = torch.unique(
        torch.stack(
            [torch.randint(0, 30, (400,), generator=g), torch.randint(0, 40, (400,), generator=g)], 1
        ),
        dim=0,
    )
    split = torch.rand(len(pairs), generator=g)
    train, val, test = pairs[split < 0.6], pairs[(split >= 0.6) & (split < 0.75)], pairs[split >= 0.75]
    return KGData(30, 40, 40, 0, train.numpy(), val.numpy(), test.numpy(), torch.zeros(0, 3).long().numpy())


def brute_force(data: KGData, users: torch.Tensor, items: torch.Tensor, k: int) -> float:
    """recall@k by a per-user loop over sets (an independent reference)."""
    known = {(int(u), int(i)) for u, i in list(data.train) + list(data.val)}
    truth: dict[int, set[int]] = {}
    for u, i in data.test:
        truth.setdefault(int(u), set()).add(int(i))
    recalls = []
    for u, positives in truth.items():
        scores = users[u] @ items.T
        ranked = [int(i) for i in torch.argsort(scores, descending=True) if (u, int(i)) not in known][:k]
        recalls.append(len(positives & set(ranked)) / len(positives))
    return sum(recalls) / len(recalls)


def test_full_ranking_matches_a_per_user_loop_and_does_not_depend_on_the_chunk():
    data = small_data()
    torch.manual_seed(1)
    model = FixedEmbeddings(torch.randn(30, 4), torch.randn(40, 4))
    results = [
        evaluate_full_ranking(model, KGDataModule(data, eval_batch_size=chunk), "test", ks=(5, 10))
        for chunk in (1, 7, 1000)
    ]
    for other in results[1:]:
        for name in results[0]:
            assert other[name] == pytest.approx(results[0][name], abs=1e-12)
    assert results[0]["recall@10"] == pytest.approx(
        brute_force(data, model.users, model.items, 10), abs=1e-12
    )


def test_topk_metrics_accumulate_means_over_users():
    metric = TopKMetrics(ks=(2, 5), kgat_compat=True)
    out = ranking_metrics(TOP, *TRUTH, ks=(2, 5), kgat_compat=True)
    metric.update({k: v[:2] for k, v in out.items()})
    metric.update({k: v[2:] for k, v in out.items()})
    result = metric.compute()
    assert result["recall@5"].item() == pytest.approx((1 + 1 / 4 + 0) / 3)
    assert result["ndcg_kgat@2"].item() == pytest.approx(sum(EXPECTED["ndcg_kgat@2"]) / 3)

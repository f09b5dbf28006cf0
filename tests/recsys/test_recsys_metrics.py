"""CTR metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from interplay.recsys.metrics import CTRMetrics, auc, gauc, logloss, long_tail_auc


def test_auc_hand_case_and_ties():
    labels = torch.tensor([0, 0, 1, 1])
    assert auc(labels, torch.tensor([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert auc(labels, torch.tensor([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)  # all ties
    assert auc(labels, torch.tensor([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert math.isnan(auc(torch.tensor([1, 1]), torch.tensor([0.2, 0.3])))


def test_auc_and_logloss_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500), 2)  # rounding creates ties
    assert auc(torch.tensor(y), torch.tensor(p)) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert logloss(torch.tensor(y), torch.tensor(p)) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))


def test_gauc_hand_case():
    # user 1: 4 impressions, AUC 0.75; user 2: 2 impressions, AUC 0.0; user 3: only clicks -> skipped
    labels = torch.tensor([0, 0, 1, 1, 1, 0, 1])
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.5])
    users = torch.tensor([1, 1, 1, 1, 2, 2, 3])
    assert gauc(labels, scores, users) == pytest.approx((4 * 0.75 + 2 * 0.0) / 6)


def test_long_tail_auc_selects_users_with_few_behaviours():
    labels = torch.tensor([0, 1, 0, 1])
    scores = torch.tensor([0.9, 0.1, 0.2, 0.8])
    counts = torch.tensor([1, 2, 10, 10])
    assert long_tail_auc(labels, scores, counts, k=3) == 0.0  # only the first two examples
    assert long_tail_auc(labels, scores, counts, k=10) == auc(labels, scores)


def test_ctr_metrics_accumulate_over_batches():
    m = CTRMetrics(long_tail_k=2)
    labels = torch.tensor([0, 0, 1, 1, 1, 0.0])
    probs = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    users = torch.tensor([1, 1, 1, 1, 2, 2])
    lengths = torch.tensor([5, 5, 5, 5, 1, 1])
    m.update(probs[:3], labels[:3], users[:3], lengths[:3])
    m.update(probs[3:], labels[3:], users[3:], lengths[3:])
    out = m.compute()
    assert out["auc"].item() == pytest.approx(auc(labels, probs), abs=1e-6)
    assert out["gauc"].item() == pytest.approx(gauc(labels, probs, users), abs=1e-6)
    assert out["auc_longtail"].item() == pytest.approx(0.0)
    assert set(out) == {"auc", "logloss", "gauc", "auc_longtail"}
    m.reset()
    m.update(probs, labels)
    assert set(m.compute()) == {"auc", "logloss"}

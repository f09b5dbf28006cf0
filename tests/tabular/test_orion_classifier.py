"""OrionMSPClassifier: scikit-learn's estimator checks, the ensemble, preprocessing and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from interplay.core.errors import DataError
from interplay.tabular.icl import OrionInputError, OrionMSPClassifier, PretrainConfig, PriorSampler, pretrain
from interplay.tabular.icl.classifier import SMALL_MODEL
from interplay.tabular.icl.model import OrionMSP, OrionMSPConfig
from interplay.tabular.icl.prior import PriorConfig

# A randomly initialised model cannot learn: the accuracy check is the only one it fails by nature.
EXPECTED_FAILED = {
    "check_classifiers_train": "an untrained (random) in-context model predicts near chance",
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


# the narrowest model that still has every stage (two scales, memory, ICL): the checks fit it often
CHECK_MODEL = dict(embed_dim=8, col_num_inds=4, row_scales=[1, 4], perc_num_latents=2, icl_num_blocks=1)


def random_classifier(**kwargs) -> OrionMSPClassifier:
    return OrionMSPClassifier(**{"n_estimators": 2, "random_state": 0, "model_params": {}, **kwargs})


@parametrize_with_checks(
    [random_classifier(model_params=CHECK_MODEL)], expected_failed_checks=lambda est: EXPECTED_FAILED
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n=60, n_features=5, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.normal(size=(n, n_features)) + y[:, None] * 2.0
    return x, y


def test_probabilities_labels_and_fitted_attributes():
    x, y = blobs()
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = random_classifier().fit(x[:40], labels[:40])
    proba = clf.predict_proba(x[40:])
    assert proba.shape == (20, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    assert list(clf.classes_) == ["cat", "dog", "eel"] and clf.n_features_in_ == 5
    assert set(clf.predict(x[40:])) <= set(clf.classes_)
    np.testing.assert_array_equal(clf.predict(x[40:]), clf.classes_[proba.argmax(1)])


def test_test_rows_are_scored_independently_so_chunking_changes_nothing():
    x, y = blobs()
    whole = random_classifier().fit(x[:40], y[:40]).predict_proba(x[40:])
    chunked = random_classifier(max_test_rows=3).fit(x[:40], y[:40]).predict_proba(x[40:])
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-6)
    single = random_classifier().fit(x[:40], y[:40]).predict_proba(x[45:46])
    np.testing.assert_allclose(single[0], whole[5], rtol=1e-5, atol=1e-6)


def test_class_shift_is_undone():
    # member 1 sees labels shifted by one; after undoing the shift its logits must be those of the
    # model given the shifted labels, read at the shifted positions
    x, y = blobs(n=30)
    clf = random_classifier(n_estimators=2, feature_shuffle=False).fit(x[:20], y[:20])
    logits = clf._member_logits(clf._prepare(x[20:]))
    model = clf.model_
    table = torch.as_tensor(np.concatenate([clf.X_context_, clf._prepare(x[20:])]))[None]
    shifted = torch.as_tensor((clf.y_context_ + 1) % 3)[None]
    with torch.no_grad():
        raw = model(table, shifted, n_classes=3)[0, :, :3].double().numpy()
    np.testing.assert_allclose(logits[1], raw[:, [1, 2, 0]], rtol=1e-5, atol=1e-6)


def test_missing_values_are_imputed_with_training_means():
    x, y = blobs()
    clf = random_classifier().fit(x[:40], y[:40])
    holes = x[40:].copy()
    holes[:, 2] = np.nan
    filled = x[40:].copy()
    filled[:, 2] = x[:40, 2].mean()
    np.testing.assert_allclose(clf.predict_proba(holes), clf.predict_proba(filled), rtol=1e-6)
    train_holes = x[:40].copy()
    train_holes[::4, 1] = np.nan
    assert np.isfinite(random_classifier().fit(train_holes, y[:40]).predict_proba(x[40:])).all()


def test_too_many_classes_or_features_and_bad_values_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(OrionInputError, match="12 classes.*at most 10"):
        random_classifier().fit(rng.normal(size=(48, 3)), np.arange(48) % 12)
    with pytest.raises(OrionInputError, match="101 features.*at most 100"):
        random_classifier().fit(rng.normal(size=(20, 101)), np.arange(20) % 2)
    x, y = blobs()
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        random_classifier().fit(x, y)
    with pytest.raises(DataError, match="n_estimators"):
        random_classifier(n_estimators=0).fit(*blobs())
    clf = random_classifier().fit(*blobs())
    with pytest.raises(ValueError, match="5 features"):
        clf.predict(np.zeros((2, 4)))


def test_checkpoint_is_used_and_warning_without_one(tmp_path):
    torch.manual_seed(0)
    model = OrionMSP(OrionMSPConfig(**SMALL_MODEL))
    sampler = PriorSampler(PriorConfig(max_features=5, min_rows=12, max_rows=16, max_classes=3), batch_size=2)
    pretrain(model, sampler, PretrainConfig(steps=1, save_every=1, progress=False), tmp_path / "m.pt")
    x, y = blobs()
    clf = OrionMSPClassifier(checkpoint=str(tmp_path / "m.pt"), n_estimators=1).fit(x[:40], y[:40])
    for a, b in zip(clf.model_.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.warns(UserWarning, match="randomly initialised"):
        OrionMSPClassifier(n_estimators=1).fit(x[:40], y[:40])

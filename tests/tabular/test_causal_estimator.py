"""The EconML / scikit-learn style estimators: shapes, parameters, input checks, reference learners."""

from __future__ import annotations

import importlib.util
import pickle

import lightgbm
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from interplay.core.errors import DataError
from interplay.tabular.causal import (
    DragonNetRegressor,
    LightGBMSLearner,
    LightGBMTLearner,
    TARNetRegressor,
    TransTEERegressor,
    VCNetRegressor,
)
from interplay.tabular.causal.data import make_synthetic_categorical, make_synthetic_dosage, simulate_vcnet

TINY = dict(dim=8, ff_dim=16, epochs=3, batch_size=64)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def _binary(n=240, seed=0, effect=2.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    t = (x[:, 0] + rng.normal(size=n) > 0).astype(int)
    y = x[:, 1] + effect * t + 0.1 * rng.normal(size=n)
    return x, t, y


def test_fit_effect_and_predict_outcome_shapes_for_binary_treatments():
    x, t, y = _binary()
    est = TransTEERegressor(**TINY).fit(x, t, y)
    assert est.treatment_ == "binary" and est.n_features_in_ == 4 and est.n_treatments_ == 2
    assert est.effect(x[:7]).shape == (7,)
    assert est.predict_outcome(x[:7], 1).shape == (7,)
    np.testing.assert_allclose(
        est.effect(x[:7]), est.predict_outcome(x[:7], 1) - est.predict_outcome(x[:7], 0), rtol=1e-6
    )
    # per-row treatments and the reverse contrast
    np.testing.assert_allclose(est.effect(x[:5], 1, 0), -est.effect(x[:5]), rtol=1e-6)
    assert est.predict_outcome(x[:5], t[:5]).shape == (5,)
    assert 0 <= est.best_epoch_ < 3 and est.best_val_loss_ > 0


def test_categorical_continuous_and_dosage_treatments():
    cat = make_synthetic_categorical(300, 3, n_covariates=5, seed=0)
    est = TARNetRegressor(hidden=16, head_hidden=8, epochs=2).fit(cat.x, cat.t, cat.y)
    assert est.treatment_ == "categorical" and est.n_treatments_ == 3
    assert est.effect(cat.x[:4], 0, 2).shape == (4,)
    cont = simulate_vcnet(300, seed=0)
    vc = VCNetRegressor(hidden=16, epochs=2).fit(cont.x, cont.t, cont.y)
    assert vc.treatment_ == "continuous"
    curve = vc.dose_response(cont.x, [0.1, 0.5, 0.9])
    assert curve.shape == (3,) and np.isfinite(curve).all()
    np.testing.assert_allclose(curve[1], vc.predict_outcome(cont.x, 0.5).mean(), rtol=1e-6)
    tt = TransTEERegressor(**TINY).fit(cont.x, cont.t, cont.y)
    assert tt.dose_response(cont.x, [0.2, 0.4]).shape == (2,)
    dose = make_synthetic_dosage(300, 3, seed=0)
    td = TransTEERegressor(**TINY).fit(dose.x, dose.t, dose.y, dosage=dose.dosage)
    assert td.treatment_ == "dosage"
    assert td.dose_response(dose.x, [0.1, 0.9], t=2).shape == (2,)
    assert td.predict_outcome(dose.x[:3], 1, dosage=0.5).shape == (3,)
    with pytest.raises(DataError, match="pass dosage"):
        td.predict_outcome(dose.x[:3], 1)


def test_scikit_learn_parameter_protocol():
    est = TransTEERegressor(dim=8, epochs=5)
    params = est.get_params()
    assert params["dim"] == 8 and params["epochs"] == 5 and params["adversarial"] == "tr"
    est.set_params(dim=12, adversarial="ptr")
    assert est.dim == 12 and est.adversarial == "ptr"
    copy = clone(est)
    assert copy.get_params() == est.get_params() and copy is not est
    assert "TransTEERegressor(" in repr(est)
    with pytest.raises(NotFittedError):
        est.effect(np.zeros((2, 3)))
    for cls in (TARNetRegressor, VCNetRegressor, LightGBMTLearner, LightGBMSLearner):
        assert clone(cls()).get_params() == cls().get_params()


@pytest.mark.parametrize(
    "cls",
    [
        TransTEERegressor,
        TARNetRegressor,
        DragonNetRegressor,
        VCNetRegressor,
        LightGBMSLearner,
        LightGBMTLearner,
    ],
)
def test_scikit_learn_estimator_checks_that_do_not_need_fit_x_y(cls):
    from sklearn.utils.estimator_checks import (
        check_get_params_invariance,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_set_params,
    )

    # scikit-learn's own checks of the parameter protocol (its fit-based checks assume fit(X, y))
    for check in (
        check_parameters_default_constructible,
        check_no_attributes_set_in_init,
        check_get_params_invariance,
        check_set_params,
    ):
        check(cls.__name__, cls())


def test_random_state_makes_fits_reproducible_without_touching_the_global_rng():
    x, t, y = _binary(120)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = TransTEERegressor(**TINY, random_state=7).fit(x, t, y)
    assert torch.equal(torch.rand(3), expected_next)  # fit() left the global stream where it was
    b = TransTEERegressor(**TINY, random_state=7).fit(x, t, y)
    np.testing.assert_allclose(a.effect(x), b.effect(x), rtol=1e-6)
    c = TransTEERegressor(**TINY, random_state=8).fit(x, t, y)
    assert not np.allclose(a.effect(x), c.effect(x))


def test_pickled_estimator_predicts_the_same():
    x, t, y = _binary(120)
    est = TARNetRegressor(hidden=16, head_hidden=8, epochs=2).fit(x, t, y)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(back.effect(x), est.effect(x))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            lambda x, t, y: (x, np.column_stack([t, t]), y),
            r"t must be 1-D \[n_samples\], got shape \(240, 2\)",
        ),
        (lambda x, t, y: (np.where(np.arange(4) == 2, np.nan, x), t, y), "X contains NaN or inf"),
        (lambda x, t, y: (x, t[:-3], y), "t has 237 rows but X has 240"),
        (lambda x, t, y: (x[0], t, y), r"X must be 2-D"),
        (lambda x, t, y: (x, t, np.full(len(y), np.inf)), "y contains NaN or inf"),
    ],
)
def test_bad_inputs_raise_clear_errors(args, message):
    x, t, y = _binary()
    with pytest.raises(DataError, match=message) as info:
        TransTEERegressor(**TINY).fit(*args(x, t, y))
    assert isinstance(info.value, ValueError)  # scikit-learn code that catches ValueError still works


def test_prediction_inputs_are_checked_against_the_fit():
    x, t, y = _binary(120)
    est = LightGBMTLearner(n_estimators=10).fit(x, t, y)
    with pytest.raises(DataError, match="has 3 covariates, the estimator was fitted on 4"):
        est.effect(x[:, :3])
    with pytest.raises(DataError, match=r"treatment indices in 0\.\.1"):
        est.predict_outcome(x, 2)
    with pytest.raises(DataError, match="val_fraction"):
        TransTEERegressor(val_fraction=0.0).fit(x, t, y)


def test_lightgbm_t_learner_is_one_model_per_arm():
    x, t, y = _binary(300, seed=3)
    est = LightGBMTLearner(n_estimators=30, learning_rate=0.1, num_leaves=7).fit(x, t, y)
    kw = dict(
        n_estimators=30,
        learning_rate=0.1,
        num_leaves=7,
        min_child_samples=20,
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    treated = lightgbm.LGBMRegressor(**kw).fit(x[t == 1], y[t == 1])
    control = lightgbm.LGBMRegressor(**kw).fit(x[t == 0], y[t == 0])
    np.testing.assert_allclose(est.effect(x), treated.predict(x) - control.predict(x))
    # the S-learner puts t in the design matrix; with a constant effect both recover it roughly
    s = LightGBMSLearner(n_estimators=200).fit(x, t, y)
    assert abs(s.effect(x).mean() - 2.0) < 0.5 and abs(est.effect(x).mean() - 2.0) < 0.5


def test_a_short_training_recovers_a_constant_effect():
    x, t, y = _binary(400, seed=1)
    est = TARNetRegressor(hidden=32, head_hidden=16, epochs=40, lr=3e-3).fit(x, t, y)
    assert abs(est.effect(x).mean() - 2.0) < 0.4


@pytest.mark.skipif(importlib.util.find_spec("econml") is None, reason="econml is not installed")
def test_econml_learners_share_the_api():
    from interplay.tabular.causal import EconMLCausalForest, EconMLDRLearner

    x, t, y = _binary(300, seed=2)
    for est in (EconMLDRLearner(n_estimators=30), EconMLCausalForest(n_estimators=40)):
        est.fit(x, t, y)
        tau = est.effect(x[:10])
        assert tau.shape == (10,) and np.isfinite(tau).all()
        with pytest.raises(NotImplementedError, match="not outcome levels"):
            est.predict_outcome(x, 1)

"""TransTEE and the neural baselines: shapes per treatment kind, tokens, the adversarial propensity step."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from interplay.core.nn import MultiHeadAttention
from interplay.core.train import OptimizerConfig, TrainerConfig
from interplay.tabular.causal import DragonNet, TARNet, TransTEE, VCNet
from interplay.tabular.causal.baselines import DensityHead, truncated_power_basis
from interplay.tabular.causal.data import CausalInputError, make_synthetic_ihdp
from interplay.tabular.causal.datasets import holdout_splits
from interplay.tabular.causal.tasks import CausalDataModule, TreatmentEffectTask, fit_task


@pytest.fixture(autouse=True)
def seeded_one_thread(one_thread):
    torch.manual_seed(0)


def _batch(n=16, p=5, kind="binary", k=2):
    x = torch.randn(n, p)
    t = torch.rand(n) if kind == "continuous" else torch.randint(0, k, (n,))
    batch = {"x": x, "t": t, "y": torch.randn(n)}
    if kind == "dosage":
        batch["dosage"] = torch.rand(n)
    return batch


@pytest.mark.parametrize(("kind", "k"), [("binary", 2), ("categorical", 4), ("continuous", 1), ("dosage", 3)])
def test_transtee_outputs_per_treatment_kind(kind, k):
    model = TransTEE(5, treatment=kind, n_treatments=k, dim=8, adversarial="ptr")
    batch = _batch(kind=kind, k=k)
    out = model(batch["x"], batch["t"], batch.get("dosage"))
    assert out["outcome"].shape == (16,) and out["representation"].shape == (16, 8)
    assert torch.isfinite(out["outcome"]).all()
    loss, parts = model.loss(out, batch)
    assert loss.shape == () and "mse" in parts
    if kind != "continuous":
        potential = model.potential_outcomes(batch["x"], batch.get("dosage"))
        assert potential.shape == (16, k)
        # the column of the observed treatment is the model's prediction for it
        model.eval()
        observed = model.predict_outcome(batch["x"], batch["t"], batch.get("dosage"))
        potential = model.potential_outcomes(batch["x"], batch.get("dosage"))
        torch.testing.assert_close(potential.gather(1, batch["t"].view(-1, 1)).squeeze(1), observed)
    # the adversary: categorical -> k logits, otherwise PTR's mean and log-variance
    assert model.propensity_head.net[-1].out_features == (k if kind == "categorical" else 2)


def test_transtee_is_built_on_core_attention_and_the_treatment_token_queries_the_covariates():
    model = TransTEE(6, dim=8, heads=2, layers=1).eval()
    assert isinstance(model.encoder[0].attn, MultiHeadAttention)
    assert isinstance(model.decoder[0].cross_attn, MultiHeadAttention)
    assert model.decoder[0].cross_attn.heads == 2
    x = torch.randn(10, 6)
    treated = model.predict_outcome(x, torch.ones(10, dtype=torch.long))
    control = model.predict_outcome(x, torch.zeros(10, dtype=torch.long))
    assert not torch.allclose(treated, control)  # the treatment token matters
    other = model.predict_outcome(x + 1.0, torch.ones(10, dtype=torch.long))
    assert not torch.allclose(treated, other)  # the covariates reach the output through cross-attention


def test_column_identity_embedding_tells_covariates_apart():
    x = torch.randn(12, 5)
    swapped = x[:, [1, 0, 2, 3, 4]]
    t = torch.ones(12, dtype=torch.long)
    # without identities, attention over covariate tokens (LayerNorm, no per-covariate BatchNorm)
    # cannot tell which value belongs to which covariate: swapping two columns changes nothing
    plain = TransTEE(5, dim=8, norm="layer", column_embedding=False).eval()
    torch.testing.assert_close(plain.predict_outcome(x, t), plain.predict_outcome(swapped, t))
    with_ids = TransTEE(5, dim=8, norm="layer", column_embedding=True).eval()
    assert not torch.allclose(with_ids.predict_outcome(x, t), with_ids.predict_outcome(swapped, t))


def test_propensity_head_gradients_flow_where_they_should():
    model = TransTEE(5, dim=8, adversarial="tr")
    batch = _batch()
    out = model(batch["x"], batch["t"])
    # the discriminator's own step: detached features, gradients only in the head
    model.adversary_loss(out["representation"].detach(), batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adversary_parameters())
    assert all(p.grad is None for p in model.outcome_parameters())
    model.zero_grad(set_to_none=True)
    # the generator's step: the adversarial term reaches the covariate tokens and the encoder
    out = model(batch["x"], batch["t"])
    model.adversary_loss(out["representation"], batch).backward()
    assert model.covariates.value.weight.grad.abs().sum() > 0
    assert model.encoder[0].attn.q_proj.weight.grad.abs().sum() > 0
    assert model.decoder[0].cross_attn.q_proj.weight.grad is None  # the decoder does not feed the head
    head = {id(p) for p in model.adversary_parameters()}
    assert head and not head & {id(p) for p in model.outcome_parameters()}


def test_the_generator_step_makes_the_discriminator_worse():
    """MSE - alpha * L_D: descending it on the outcome model must raise the (fixed) discriminator's loss."""
    torch.manual_seed(1)
    n = 256
    x = torch.randn(n, 5)
    t = (x[:, 0] + 0.3 * torch.randn(n) > 0).long()  # confounded: x0 reveals the treatment
    batch = {"x": x, "t": t, "y": x[:, 1] + t.float()}
    model = TransTEE(5, dim=8, adversarial="tr", propensity_features="encoder", norm="layer")
    head_opt = torch.optim.Adam(model.adversary_parameters(), 1e-2)
    for _ in range(150):  # train the discriminator alone on the fixed representation
        loss = model.adversary_loss(model(x, t)["representation"].detach(), batch)
        head_opt.zero_grad()
        loss.backward()
        head_opt.step()
    before = model.adversary_loss(model(x, t)["representation"], batch).item()
    generator = torch.optim.SGD(model.outcome_parameters(), lr=0.05)
    for _ in range(20):  # only the adversarial part of the generator's loss
        out = model(x, t)
        loss = -model.adversarial_weight * model.adversary_loss(out["representation"], batch)
        generator.zero_grad()
        loss.backward()
        generator.step()
    after = model.adversary_loss(model(x, t)["representation"], batch).item()
    assert after > before * 1.05


def _tiny_module(n=120, seed=0):
    data = make_synthetic_ihdp(1, seed=seed, n=n, n_treated=30)
    splits = holdout_splits(n, test_fraction=0.2, val_fraction=0.2, split_seed=0, treatment=data.t)
    return CausalDataModule(data, splits, batch_size=32, seed=0)


def test_task_trains_with_two_optimisers_and_restores_the_best_epoch():
    pl.seed_everything(0, verbose=False)
    module = _tiny_module()
    model = TransTEE(25, dim=8, adversarial="tr")
    task = TreatmentEffectTask(model, OptimizerConfig(name="sgd", lr=1e-2, scheduler="cosine"))
    head_before = [p.detach().clone() for p in model.adversary_parameters()]
    config = TrainerConfig(max_epochs=4, accelerator="cpu", devices=1, progress_bar=False, tensorboard=False)
    summary = fit_task(task, module, config)
    assert summary["epochs"] == 4 and 0 <= summary["best_epoch"] < 4
    optimizers = summary["trainer"].optimizers
    assert len(optimizers) == 2 and optimizers[0].defaults["nesterov"]  # SGD with Nesterov, as the paper
    assert all(not torch.equal(a, b) for a, b in zip(head_before, model.adversary_parameters()))
    # the scaling buffers were fitted on the training split
    train = module.split("train")
    assert model.y_mean.item() == pytest.approx(train.y.mean(), rel=1e-5)
    # the weights in the model are the best epoch's: the validation loss recomputed equals the best one
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    val = trainer.validate(task, datamodule=module, verbose=False)[0]["val/loss"]
    assert val == pytest.approx(summary["best_val"], rel=1e-4)
    test = trainer.test(task, datamodule=module, verbose=False)[0]
    assert {"test/loss", "test/sqrt_pehe", "test/ate_error"} <= set(test)


def test_baselines_shapes_and_losses():
    batch = _batch(p=5)
    tarnet = TARNet(5, hidden=16, head_hidden=8)
    assert tarnet(batch["x"], batch["t"])["outcome"].shape == (16,)
    assert tarnet.potential_outcomes(batch["x"]).shape == (16, 2)
    dragon = DragonNet(5, hidden=16, head_hidden=8)
    out = dragon(batch["x"], batch["t"])
    assert ((out["propensity"] > 0) & (out["propensity"] < 1)).all()
    loss, parts = dragon.loss(out, batch)
    assert set(parts) == {"mse", "bce", "targeted"}
    loss.backward()
    assert dragon.epsilon.grad is not None and dragon.epsilon.grad.abs() > 0  # targeted regularisation
    cont = _batch(kind="continuous", p=5)
    vcnet = VCNet(5, hidden=16)
    out = vcnet(cont["x"], cont["t"])
    assert out["outcome"].shape == (16,) and (out["density"] > 0).all()
    with pytest.raises(CausalInputError, match="handles continuous"):
        VCNet(5, treatment="binary", n_treatments=2)
    with pytest.raises(CausalInputError, match="handles binary"):
        DragonNet(5, treatment="categorical", n_treatments=3)


def test_spline_basis_and_density_head_by_hand():
    t = torch.tensor([0.0, 0.5, 1.0])
    basis = truncated_power_basis(t, 2, (0.33, 0.66))
    expected = [
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.5, 0.25, 0.17**2, 0.0],
        [1.0, 1.0, 1.0, 0.67**2, 0.34**2],
    ]
    torch.testing.assert_close(basis, torch.tensor(expected), atol=1e-6, rtol=0)
    head = DensityHead(3, grid=4)
    z = torch.randn(2, 3)
    probs = torch.softmax(head.linear(z), 1)
    # on a grid point the density is that point's probability; half-way it is the mean of the two
    torch.testing.assert_close(head(z, torch.tensor([0.25, 0.25])), probs[:, 1])
    torch.testing.assert_close(head(z, torch.tensor([0.375, 0.375])), (probs[:, 1] + probs[:, 2]) / 2)


def test_scaling_buffers_make_predictions_in_data_units():
    model = TransTEE(3, dim=8, adversarial="none").eval()
    x = np.random.default_rng(0).normal(5.0, 2.0, size=(50, 3))
    y = np.random.default_rng(1).normal(100.0, 10.0, size=50)
    model.set_scaling(x, y)
    out = model(torch.as_tensor(x, dtype=torch.float32), torch.zeros(50, dtype=torch.long))["outcome"]
    level = model.predict_outcome(torch.as_tensor(x, dtype=torch.float32), torch.zeros(50, dtype=torch.long))
    torch.testing.assert_close(level, out * float(y.std()) + float(y.mean()))
    state = model.state_dict()
    assert {"x_mean", "x_scale", "y_mean", "y_scale"} <= set(state)  # saved with the weights

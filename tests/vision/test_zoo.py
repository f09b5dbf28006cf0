"""The sweep every registered backbone must pass (issue 10, point 5): output shape, finite values,
gradients reaching every parameter, forward_features against feature_info, reset_classifier(0),
features_only levels and reductions, gradient checkpointing, and parameter counts against the
paper's (within 0.5 %). Small inputs (each model's ``test_input_size``), batch 2, CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from interplay.core.errors import ConfigError, UnknownNameError
from interplay.vision.models import MODEL_CFGS, FeatureExtractor, count_parameters, create_model, list_models

MODELS = list_models()
NUM_CLASSES = 7


def _smallest_of_each_family() -> set[str]:
    best: dict[str, tuple[float, str]] = {}
    for name in MODELS:
        cfg = MODEL_CFGS[name]
        if cfg["paper_params"] is None:  # count it (on the meta device: no memory, no init)
            with torch.device("meta"):
                size = (float(count_parameters(create_model(name))), name)
        else:
            size = (cfg["paper_params"], name)
        if cfg["family"] not in best or size < best[cfg["family"]]:
            best[cfg["family"]] = size
    return {name for _, name in best.values()}


SMALLEST_OF_FAMILY = _smallest_of_each_family()


@pytest.fixture(scope="module", params=MODELS)
def built(request) -> torch.nn.Module:
    # initialising an 80M-parameter model costs seconds: a module-scoped parametrized fixture makes
    # pytest build each model once and run every test of it in a row on copies
    torch.manual_seed(0)
    return create_model(request.param, num_classes=NUM_CLASSES)


def _input(name: str, batch: int = 2) -> torch.Tensor:
    size = MODEL_CFGS[name]["test_input_size"]
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_zoo_is_not_empty():
    assert len(MODELS) > 0


@pytest.mark.parametrize("name", [m for m in MODELS if MODEL_CFGS[m]["paper_params"]])
def test_parameter_count_matches_the_paper(name):
    with torch.device("meta"):
        model = create_model(name)
    n = count_parameters(model)
    ref = MODEL_CFGS[name]["paper_params"]
    assert abs(n - ref) / ref < 0.005, f"{name}: {n / 1e6:.3f}M parameters vs the paper's {ref / 1e6:.3f}M"


def test_forward_backward_features_and_head(built):
    model, name = copy.deepcopy(built), built.pretrained_cfg["name"]
    model.train()
    x = _input(name)
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:8]}"

    model.eval()
    with torch.no_grad():
        stages = model.forward_intermediates(x)
        assert len(stages) == len(model.feature_info)
        size = x.shape[-1]
        for out, info in zip(stages, model.feature_info, strict=True):
            assert out.shape[:2] == (2, info.num_chs), (info, out.shape)
            assert out.shape[-1] == size // info.reduction, (info, out.shape)
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)


def test_features_only_and_checkpointing(built):
    model, name = copy.deepcopy(built), built.pretrained_cfg["name"]
    model.eval()
    x = _input(name)
    n = len(model.feature_info)
    extractor = FeatureExtractor(copy.deepcopy(model), out_indices=(-2, -1))  # create_model's wrapper
    with torch.no_grad():
        maps = extractor(x)
        full = model.forward_intermediates(x)
    assert [m.shape[1] for m in maps] == extractor.channels()
    assert extractor.reduction() == [model.feature_info[i].reduction for i in (n - 2, n - 1)]
    for got, want in zip(maps, full[-2:], strict=True):
        torch.testing.assert_close(got, want)

    # checkpointing recomputes in backward: same loss and gradients. Each family's forward has one
    # checkpointing path, so it is compared on the family's smallest variant (the large ones would
    # spend minutes of CI on the same code path)
    if name not in SMALLEST_OF_FAMILY:
        return
    model.train()
    torch.manual_seed(1)
    loss = model(x).sum()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    loss2 = model(x).sum()
    loss2.backward()
    torch.testing.assert_close(loss2, loss)
    for k, p in model.named_parameters():
        if k in grads:
            torch.testing.assert_close(p.grad, grads[k], rtol=1e-4, atol=1e-5)


def test_unknown_model_and_bad_arguments_are_user_errors():
    with pytest.raises(UnknownNameError):
        create_model("no_such_model")
    if MODELS:
        with pytest.raises(ConfigError):
            create_model(MODELS[0], out_indices=(0,))
        with pytest.raises(ConfigError):
            create_model(MODELS[0], pretrained=True)


def test_create_model_features_only_wraps_the_backbone():
    name = min(MODELS, key=lambda m: MODEL_CFGS[m]["paper_params"] or float("inf"))
    extractor = create_model(name, features_only=True, out_indices=(0, -1))
    assert isinstance(extractor, FeatureExtractor)
    n = len(extractor.model.feature_info)
    assert extractor.out_indices == [0, n - 1]
    assert extractor.channels() == [extractor.model.feature_info[i].num_chs for i in (0, n - 1)]
    with pytest.raises(ConfigError):
        create_model(name, features_only=True, out_indices=(n,))

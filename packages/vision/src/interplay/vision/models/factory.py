"""timm-style model factory: ``register_model``, ``create_model``, ``list_models``, checkpoint loading.

Models are registered in the vision domain's registry (``interplay.vision.registry.REGISTRY.models``),
so the CLI lists and builds them like every other domain's models::

    @register_model(paper_params=28.3e6, paper_gmacs=4.5, paper_top1=82.8, input_size=224)
    def davit_tiny(num_classes: int = 1000, **kw) -> DaViT:
        \"\"\"DaViT-T (Ding et al., ECCV 2022): dual spatial / channel attention.\"\"\"
        return DaViT(dims=(96, 192, 384, 768), depths=(1, 1, 3, 1), num_classes=num_classes, **kw)

    model = create_model("davit_tiny", num_classes=10)
    backbone = create_model("davit_tiny", features_only=True, out_indices=(1, 2, 3))

``pretrained=True`` never downloads: it reads ``pretrained_file`` (``.safetensors``, ``.pt``,
``.pth``, ``.bin``) or ``$INTERPLAY_WEIGHTS/<name>.safetensors`` / ``.pth``, remaps official key
names with the model's ``checkpoint_filter_fn`` when it has one, and drops a classifier whose shape
does not match ``num_classes``. ``pretrained_file`` may also be the checkpoint of an
``interplay-vision train`` run (its EMA weights when it kept them; the distilled student of an
``acamkd`` run) and may be a glob pattern, e.g.
``runs/vision/tcpa-digits-upstream/*/checkpoints/best-*.ckpt``: the last match in sorted order is
used, i.e. the newest run, as run directories are timestamped.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from interplay.core.errors import ConfigError, DataError
from interplay.vision.models.base import FeatureExtractor, VisionBackbone
from interplay.vision.registry import REGISTRY

# name -> metadata (paper figures, default input size, family); filled by register_model
MODEL_CFGS: dict[str, dict[str, Any]] = {}


def register_model(
    fn: Callable[..., VisionBackbone] | None = None,
    *,
    paper_params: float | None = None,
    paper_gmacs: float | None = None,
    paper_top1: float | None = None,
    input_size: int = 224,
    test_input_size: int | None = None,
    family: str | None = None,
    checkpoint_filter_fn: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]] | None = None,
    source: str = "",
) -> Any:
    """Register a model factory under its function name (decorator, with or without arguments).

    ``paper_params`` (absolute count) and ``paper_gmacs`` / ``paper_top1`` are the figures of the
    paper or official table at ``input_size``; the test sweep checks parameter counts against
    ``paper_params`` (0.5 %) and runs each model at ``test_input_size`` (the smallest size its windows
    and strides allow). The first docstring line is the registry description.
    """

    def decorator(factory: Callable[..., VisionBackbone]) -> Callable[..., VisionBackbone]:
        name = factory.__name__
        doc = (factory.__doc__ or "").strip().splitlines()
        description = doc[0].strip() if doc else name
        REGISTRY.models.register(name, description, tags=("vision", family or name.split("_")[0]))(factory)
        MODEL_CFGS[name] = {
            "name": name,
            "family": family or name.split("_")[0],
            "paper_params": paper_params,
            "paper_gmacs": paper_gmacs,
            "paper_top1": paper_top1,
            "input_size": input_size,
            "test_input_size": test_input_size or input_size,
            "checkpoint_filter_fn": checkpoint_filter_fn,
            "source": source,
        }
        return factory

    return decorator(fn) if fn is not None else decorator


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (e.g. ``"davit_*"``)."""
    names = [n for n in MODEL_CFGS if fnmatch.fnmatch(n, pattern)]
    if family is not None:
        names = [n for n in names if MODEL_CFGS[n]["family"] == family]
    return sorted(names)


def model_cfg(name: str) -> dict[str, Any]:
    if name not in MODEL_CFGS:
        REGISTRY.models.get(name)  # raises UnknownNameError with close matches
    return MODEL_CFGS[name]


def create_model(
    name: str,
    pretrained: bool = False,
    num_classes: int = 1000,
    *,
    pretrained_file: str | os.PathLike | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    grad_checkpointing: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (see the module docstring for ``pretrained``)."""
    _load_models()
    cfg = model_cfg(name)
    model = REGISTRY.models.create(name, num_classes=num_classes, **kwargs)
    model.pretrained_cfg = {k: v for k, v in cfg.items() if k != "checkpoint_filter_fn"}
    if pretrained or pretrained_file is not None:
        path = _weights_path(name, pretrained_file)
        official = cfg["checkpoint_filter_fn"]

        def remap(state: dict[str, Tensor], target: nn.Module) -> dict[str, Tensor]:
            run = run_state_dict(state)
            if run is not state:  # one of our run checkpoints: keys are ours already
                return run
            return official(state, target) if official is not None else state

        load_checkpoint(model, path, filter_fn=remap, num_classes=num_classes)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    if features_only:
        return FeatureExtractor(model, out_indices)
    if out_indices is not None:
        raise ConfigError("out_indices is only meaningful with features_only=True")
    return model


def _load_models() -> None:
    import interplay.vision.models  # noqa: F401  (registers the zoo)


def resolve_weights_file(pattern: str | os.PathLike, what: str = "pretrained_file") -> Path:
    """``pattern`` itself, or its last match in sorted order (the newest timestamped run directory)
    when it holds ``*``, ``?`` or ``[``; ``what`` names the setting in the error when nothing is there."""
    text = os.path.expanduser(str(pattern))
    if not any(ch in text for ch in "*?["):
        path = Path(text)
        if not path.is_file():
            raise DataError(f"{what} {path} does not exist")
        return path
    matches = sorted(m for m in glob.glob(text) if os.path.isfile(m))
    if not matches:
        raise DataError(f"{what}: no file matches '{text}' (train that model first)")
    return Path(matches[-1])


def run_state_dict(state: dict[str, Tensor], prefix: str | None = None) -> dict[str, Tensor]:
    """The model weights of one of our run checkpoints, keyed as the model's own: the EMA copy
    (``model_ema.module.``, what was validated) before the trained one (``model.``); with
    ``prefix=None`` the student of an ``acamkd`` run (``model.student.``) first, then a plain
    ``interplay-vision train`` run. Any other state dict (an official file) is returned as is."""
    prefixes = ["student.", ""] if prefix is None else [prefix]
    for head in (f"{root}{p}" for p in prefixes for root in ("model_ema.module.", "model.")):
        picked = {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
        if picked:
            return picked
    return state


def _weights_path(name: str, pretrained_file: str | os.PathLike | None) -> Path:
    if pretrained_file is not None:
        return resolve_weights_file(pretrained_file)
    root = os.environ.get("INTERPLAY_WEIGHTS")
    if root:
        for ext in (".safetensors", ".pth", ".pt", ".bin"):
            path = Path(root) / f"{name}{ext}"
            if path.is_file():
                return path
    raise ConfigError(
        f"pretrained weights for '{name}' are not available offline: pass pretrained_file=<path to the "
        f"official .pth / .safetensors> or put {name}.safetensors under $INTERPLAY_WEIGHTS"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A checkpoint's tensors: ``.safetensors`` or a torch pickle (a bare state dict, or one under
    the usual ``model`` / ``state_dict`` / ``model_ema`` keys)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file: say which
        raise DataError(f"cannot read checkpoint {path}: {err}") from err
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_ema", "module"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DataError(f"checkpoint {path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    filter_fn: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]] | None = None,
    num_classes: int | None = None,
    strict: bool = True,
) -> None:
    """Load ``path`` into ``model`` after ``filter_fn`` (official -> our key names); a classifier of a
    different class count is skipped (fine-tuning), every other mismatch raises a DataError that lists
    the missing and unexpected keys."""
    state = read_state_dict(path)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    skipped = []
    for key in list(state):
        if key in own and own[key].shape != state[key].shape:
            if key.startswith("head.") and num_classes is not None:
                skipped.append(key)
                del state[key]
            else:
                raise DataError(
                    f"checkpoint {path}: '{key}' has shape {tuple(state[key].shape)}, "
                    f"the model expects {tuple(own[key].shape)}"
                )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if strict and (missing or unexpected):
        raise DataError(
            f"checkpoint {path} does not match the model: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}"
        )


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_gmacs(model: nn.Module, input_size: int | Sequence[int] = 224, *, channels: int = 3) -> float:
    """Multiply-accumulates (in 1e9) of one forward pass on one image, from torch's FLOP counter
    (a multiply-add counts 2 FLOPs there, so MACs = FLOPs / 2; the papers report MACs as "FLOPs")."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    x = torch.zeros(1, channels, h, w)
    was_training = model.training
    model.eval()

    # torch's counter has no formula for the CPU flash-attention kernel SDPA dispatches to: count it
    # like the CUDA kernels (2 B H Lq Lk (D + Dv) FLOPs), or attention would count as free
    def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops}
    # SDPA's math backend: attention products counted at the model's own head sizes (core's attend
    # pads unequal query / value head sizes only for the fused kernel)
    with (
        torch.no_grad(),
        sdpa_kernel([SDPBackend.MATH]),
        FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter,
    ):
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 2e9

"""``interplay-vision`` console script (also ``interplay vision ...``).

Besides the shared sub-commands, ``train`` (and ``reproduce``) accept ``--model NAME``: without
``--config`` it trains NAME with the default ``vision-classification`` config (an image folder given
by ``data.root=...``) at the model's input size; with ``--config`` it replaces the config's model::

    interplay-vision train --model davit_tiny data.root=/data/imagenet
    interplay-vision train --config vit-pico-digits --model vit_tiny_patch16_224
"""

from __future__ import annotations

from collections.abc import Sequence

from interplay.core.cli import run_domain_cli

DEFAULT_CONFIG = "vision-classification"


def _load() -> None:
    # task modules (TCPA, DCAL, MANIQA, TransDAE, ACAM-KD): each sub-package registers its entries
    import importlib
    import pkgutil

    import interplay.vision.data
    import interplay.vision.models
    import interplay.vision.modules as modules
    import interplay.vision.tasks  # noqa: F401  (registers the entries)

    for info in pkgutil.iter_modules(modules.__path__):
        importlib.import_module(f"{modules.__name__}.{info.name}")


def translate_model_option(argv: Sequence[str]) -> list[str]:
    """``train --model NAME [...]`` -> ``train [--config vision-classification] [...] model.name=NAME
    data.params.image_size=<NAME's input size>`` (an explicit ``data.params.image_size=`` wins)."""
    args = list(argv)
    if not args or args[0] not in ("train", "reproduce"):
        return args
    name, rest, i = None, [], 0
    while i < len(args):
        a = args[i]
        if a == "--model":
            if i + 1 >= len(args):
                return args  # let argparse report the missing value
            name, i = args[i + 1], i + 2
            continue
        if a.startswith("--model="):
            name = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if name is None:
        return args
    if args[0] == "train" and not any(a in ("--config", "-c") or a.startswith("--config=") for a in rest):
        rest[1:1] = ["--config", DEFAULT_CONFIG]
    rest.append(f"model.name={name}")
    if not any(a.startswith("data.params.image_size=") for a in rest):
        from interplay.vision.models import MODEL_CFGS

        if name in MODEL_CFGS:  # unknown names are reported by the registry when the model is built
            rest.append(f"data.params.image_size={MODEL_CFGS[name]['input_size']}")
    return rest


def main(argv: Sequence[str] | None = None, prog: str = "interplay-vision") -> int:
    import sys

    from interplay.vision.registry import REGISTRY

    _load()
    argv = translate_model_option(sys.argv[1:] if argv is None else argv)
    return run_domain_cli(REGISTRY, argv, prog=prog)

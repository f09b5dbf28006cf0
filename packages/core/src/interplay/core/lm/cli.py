"""``interplay lm``: train the byte-level language model with a chosen token mixer.

    interplay lm train --mixer rat --steps 300 --seq-len 256 [--dim 128 --depth 4 ...] [key.sub=value ...]
    interplay lm train --config my-lm.yaml model.options.rat_chunk=32
    interplay lm mixers [--dim 128 --depth 4 --heads 4]     # names, descriptions, parameter counts

Flags fill :class:`~interplay.core.lm.train.LMConfig`; ``key.sub=value`` overrides come last and are
validated like every Interplay config (an unknown key or a wrong type is an error naming the key).
User mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from interplay.core.cli import EXIT_USER_ERROR, format_table
from interplay.core.errors import InterplayError

__all__ = ["main"]

# flag -> dotted config key
FLAGS = {
    "mixer": "mixer",
    "steps": "steps",
    "seq_len": "seq_len",
    "batch_size": "batch_size",
    "lr": "lr",
    "warmup_steps": "warmup_steps",
    "eval_every": "eval_every",
    "seed": "seed",
    "threads": "threads",
    "dim": "model.dim",
    "depth": "model.depth",
    "heads": "model.heads",
    "data_root": "data.root",
    "budget_bytes": "data.budget_bytes",
    "val_tokens": "data.val_tokens",
    "run_root": "run_root",
    "name": "name",
    "accelerator": "accelerator",
    "precision": "precision",
}


def _config(args: argparse.Namespace):
    from interplay.core.config import load_config
    from interplay.core.lm.train import LMConfig

    overrides = [
        f"{key}={getattr(args, flag)}" for flag, key in FLAGS.items() if getattr(args, flag, None) is not None
    ]
    if getattr(args, "no_progress", False):
        overrides.append("progress_bar=false")
    overrides += list(args.overrides)
    return load_config(LMConfig, args.config if args.config else {}, overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from interplay.core.lm.train import train_lm

    cfg = _config(args)
    result = train_lm(cfg)
    m = result.metrics
    rows = [
        ["mixer", m["mixer"]],
        ["val bits per character", m["val_bpc"]],
        ["parameters", m["params"]],
        ["steps", m["steps"]],
        ["train seconds", m["train_seconds"]],
        ["tokens / s", m["tokens_per_second"]],
    ]
    print(format_table(rows, ["metric", "value"]))
    print(f"run directory: {result.run_dir}")
    return 0


def _cmd_mixers(args: argparse.Namespace) -> int:
    from interplay.core.lm.mixers import MIXERS
    from interplay.core.lm.model import parameter_table

    cfg = _config(args)
    last = cfg.model.depth - 1
    hybrid = f"hybrid:linear@softmax=0,{last}" if last > 0 else "hybrid:linear@softmax=0"
    rows = parameter_table([*MIXERS, hybrid], cfg.model)
    descriptions = {name: text for name, (_, text) in MIXERS.items()}
    descriptions[hybrid] = f"hybrid: linear, softmax in layers {hybrid.split('=')[1]}"
    table = [[r["mixer"], r["params"], r["mixer_params"], descriptions[r["mixer"]]] for r in rows]
    print(format_table(table, ["mixer", "params", "mixer params", "description"]))
    return 0


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Byte-level language model with a chosen mixer.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    overrides_help = "config overrides as key.sub=value (e.g. model.options.rat_chunk=32)"

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="YAML file with LMConfig fields")
        p.add_argument("--dim", type=int, help="model width (default 128)")
        p.add_argument("--depth", type=int, help="layers (default 4)")
        p.add_argument("--heads", type=int, help="attention heads (default 4)")
        p.add_argument("overrides", nargs="*", help=overrides_help)

    p = sub.add_parser("train", help="train one mixer and write runs/lm/<mixer>/<time>/")
    common(p)
    p.add_argument(
        "--mixer",
        "-m",
        help="softmax, window, linear, nala, moba, rat, mla, cmha, chunked, "
        "shift, fixed, or hybrid:BASE@OTHER=i,j (see 'mixers')",
    )
    p.add_argument("--steps", type=int, help="optimiser steps (default 300)")
    p.add_argument("--seq-len", dest="seq_len", type=int, help="bytes per training window (default 256)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="windows per step (default 8)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, help="linear warm-up steps (default 20)")
    p.add_argument(
        "--eval-every", dest="eval_every", type=int, help="validate every N steps (default: end only)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--data-root", dest="data_root", help="directory of *.py text (default: the stdlib)")
    p.add_argument("--budget-bytes", dest="budget_bytes", type=int, help="bytes of text read (default 3e6)")
    p.add_argument(
        "--val-tokens", dest="val_tokens", type=int, help="validation bytes scored (default 65536)"
    )
    p.add_argument("--run-root", dest="run_root", help="directory of run directories (default ./runs)")
    p.add_argument("--name", help="run name (default: the mixer)")
    p.add_argument("--accelerator", help="auto, cpu, gpu")
    p.add_argument("--precision", help="32-true, bf16-mixed, ...")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("mixers", help="list the mixers with their parameter counts")
    common(p)
    p.set_defaults(handler=_cmd_mixers)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "interplay lm") -> int:
    parser = build_parser(prog)
    args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    stray = [a for a in extra if "=" not in a or a.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *extra]
    try:
        return args.handler(args)
    except InterplayError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""Write docs/reproductions/vision-backbones.md: our parameter counts and GMACs beside the papers'.

For every registered vision model: parameters counted on the meta device, GMACs of one image at the
model's ``input_size`` (``count_gmacs`` with SDPA's math backend, so that attention products are
counted), and the paper's parameters / GMACs / ImageNet-1k top-1 from ``MODEL_CFGS`` (the
``register_model`` arguments). The table is generated from the registry, so it lists whatever
models are registered when it runs::

    python scripts/vision_model_table.py [--models 'davit_*'] [--no-gmacs] [--out FILE.md]

When ``benchmarks/results/vision_backbones.json`` exists (``benchmarks/vision/backbones.py``), its CPU
throughput and peak-memory table and plot are added (``--bench FILE``, ``--bench none`` to leave out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from interplay.core.data import atomic_write
from interplay.vision.models import MODEL_CFGS, count_gmacs, count_parameters, create_model, list_models
from interplay.vision.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python scripts/vision_model_table.py"
TOLERANCE = 0.005  # the zoo's test: parameter counts within 0.5 % of the paper's


def count_on_meta(name: str) -> int:
    try:
        with torch.device("meta"):
            return count_parameters(create_model(name))
    except Exception:  # a model that cannot be built on meta: count a real one
        return count_parameters(create_model(name))


def gmacs(name: str) -> float:
    torch.manual_seed(0)
    model = create_model(name)
    with sdpa_kernel([SDPBackend.MATH]):
        return count_gmacs(model, MODEL_CFGS[name]["input_size"])


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"


def build_rows(names: list[str], with_gmacs: bool) -> list[dict]:
    rows = []
    for name in names:
        cfg = MODEL_CFGS[name]
        row = {"name": name, "family": cfg["family"], "size": cfg["input_size"], "error": None}
        try:
            row["params"] = count_on_meta(name)
            row["gmacs"] = gmacs(name) if with_gmacs else None
        except Exception as err:  # reported in the table, not fatal
            row.update(params=None, gmacs=None, error=f"{type(err).__name__}: {err}"[:160])
        row.update(
            paper_params=cfg["paper_params"], paper_gmacs=cfg["paper_gmacs"], paper_top1=cfg["paper_top1"]
        )
        rows.append(row)
        print(f"{name}: {row['params']} parameters, {row['gmacs']} GMACs", flush=True)
    return rows


def bench_section(path: Path, out: Path) -> list[str]:
    """The throughput / memory table of a ``benchmarks/vision/backbones.py`` result file."""
    data = json.loads(path.read_text())
    meta, rows = data.get("meta", {}), data.get("rows", [])
    machine = meta.get("machine", {})
    plot = path.with_suffix(".png")
    try:
        rel = (
            Path("..", "..", plot.resolve().relative_to(ROOT)) if out.resolve().is_relative_to(ROOT) else plot
        )
    except ValueError:
        rel = plot
    lines = [
        "",
        "## CPU inference throughput and peak memory",
        "",
        f"`python benchmarks/vision/backbones.py --threads {machine.get('torch_threads', '?')} --repeats "
        f"{meta.get('repeats', '?')} --batch {meta.get('batch', '?')}` on {data.get('date', '?')}: fp32, "
        f"`torch.inference_mode`, batch {meta.get('batch', '?')}, input {meta.get('sizes', '?')}, "
        f"{machine.get('torch_threads', '?')} torch thread(s) on a {machine.get('cpu_count', '?')}-core "
        f"{machine.get('processor', '')} development machine (absolute figures are "
        "indicative; models of one family ran back to back). *img/s*: batch / median wall time of a "
        "forward pass after a warm-up; *peak MB*: the peak tensor memory of one forward pass above the "
        "weights and input (torch.profiler allocation records); *GMACs* at the benchmark size.",
        "",
        "| model | size | params (M) | GMACs | img/s | peak MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r.get("family", ""), r.get("params_m") or 0)):
        if "error" in r and "cpu_img_s" not in r:
            lines.append(f"| `{r['model']}` | {r.get('size')} | error: {r['error'][:80]} | | | |")
            continue
        lines.append(
            f"| `{r['model']}` | {r.get('size')} | {_fmt(r.get('params_m'))} | {_fmt(r.get('gmacs'))} "
            f"| {_fmt(r.get('cpu_img_s'))} | {_fmt(r.get('cpu_peak_mb'), 0)} |"
        )
    if plot.is_file():
        lines += ["", f"![CPU throughput vs GMACs]({rel.as_posix()})"]
    if not meta.get("cuda"):
        lines += [
            "",
            "No GPU took part in this run. On one, `python benchmarks/vision/backbones.py --cuda --compile "
            "--no-cpu --name vision_backbones_gpu` measures fp32, bf16 autocast with channels-last, and the "
            "same under `torch.compile`, with `torch.cuda.max_memory_allocated`.",
        ]
    if meta.get("gmacs_note"):
        lines += ["", f"Note: {meta['gmacs_note']}."]
    return lines


def render(rows: list[dict], with_gmacs: bool, pattern: str, bench: list[str] | None = None) -> str:
    lines = [
        "# Vision backbones: parameters and GMACs against the papers",
        "",
        "Generated from the model registry by",
        "",
        "```",
        COMMAND
        + (f" --models '{pattern}'" if pattern != "*" else "")
        + ("" if with_gmacs else " --no-gmacs"),
        "```",
        "",
        f"on {time.strftime('%Y-%m-%d')} with torch {torch.__version__}. *Params* are counted on the meta "
        "device (1000 classes); *GMACs* are multiply-accumulates of one image at the model's input size "
        "from `count_gmacs` (torch's FLOP counter, MACs = FLOPs / 2; convolutions, linear layers and both "
        "attention products, with SDPA forced to its math backend so the attention products are seen; "
        "norms, activations and softmax are not counted, as in fvcore / the papers). *Paper* columns "
        "are the `register_model` figures (the paper's or the official table's, ImageNet-1k top-1 at "
        "224² unless the model's input size says otherwise). Δ is ours vs the paper; the test sweep "
        f"(`tests/vision/test_zoo.py`) requires |Δ params| < {TOLERANCE:.1%}. Top-1 is the paper's: "
        "we train nothing on ImageNet here.",
        "",
        "| model | input | params (M) | paper params (M) | Δ params | GMACs | paper GMACs | Δ GMACs "
        "| paper top-1 (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["error"]:
            lines.append(f"| `{r['name']}` | {r['size']} | error: {r['error']} | | | | | | |")
            continue
        pp, pg = r["paper_params"], r["paper_gmacs"]
        dp = f"{(r['params'] - pp) / pp:+.2%}" if pp else "–"
        dg = f"{(r['gmacs'] - pg) / pg:+.1%}" if pg and r["gmacs"] is not None else "–"
        lines.append(
            f"| `{r['name']}` | {r['size']} | {r['params'] / 1e6:.2f} | {_fmt(pp and pp / 1e6)} | {dp} "
            f"| {_fmt(r['gmacs'])} | {_fmt(pg)} | {dg} | {_fmt(r['paper_top1'], 1)} |"
        )
    misses = [
        r
        for r in rows
        if r["paper_params"] and r["params"] and abs(r["params"] / r["paper_params"] - 1) >= TOLERANCE
    ]
    if misses:
        lines += [
            "",
            "Parameter counts outside the 0.5 % tolerance: "
            + ", ".join(f"`{r['name']}`" for r in misses)
            + ".",
        ]
    lines += bench or []
    lines += ["", "## Papers and sources", ""]
    by_family: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r["name"])
    for family in sorted(by_family):
        names = by_family[family]
        sources = sorted({MODEL_CFGS[n]["source"] for n in names if MODEL_CFGS[n]["source"]})
        lines.append(f"- **{family}**" + (f" (code: {'; '.join(sources)})" if sources else ""))
        lines += [f"  - `{n}`: {REGISTRY.models.get(n).description}" for n in names]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="write docs/reproductions/vision-backbones.md from the registry"
    )
    parser.add_argument("--models", default="*", help="shell pattern of model names (default: all)")
    parser.add_argument("--no-gmacs", action="store_true", help="skip the FLOP count (parameters only)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "reproductions" / "vision-backbones.md"))
    parser.add_argument(
        "--bench",
        default=str(ROOT / "benchmarks" / "results" / "vision_backbones.json"),
        help="a benchmarks/vision/backbones.py result to add ('none': leave out)",
    )
    args = parser.parse_args(argv)
    names = list_models(args.models)
    if not names:
        parser.error(f"no registered model matches '{args.models}'")
    rows = build_rows(names, not args.no_gmacs)
    out = Path(args.out)
    bench_file = None if args.bench == "none" else Path(args.bench)
    bench = bench_section(bench_file, out) if bench_file is not None and bench_file.is_file() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write(render(rows, not args.no_gmacs, args.models, bench))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

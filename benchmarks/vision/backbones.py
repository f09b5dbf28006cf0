"""Vision backbones: parameters, GMACs, inference throughput and peak memory of every registered model.

Per model (or those matching ``--models``):

- parameters, counted on the meta device;
- GMACs of one image at the benchmark size (``count_gmacs``, with SDPA forced to its math
  backend so that the attention products are counted: torch's FLOP counter has no formula for the
  CPU flash kernel SDPA picks otherwise);
- CPU inference throughput in images/s (``torch.inference_mode``, fp32, batch ``--batch`` = 32 at
  ``--size`` = 224 for every model (``--size native``: each model's own ``input_size``, e.g. 600 for
  HaloNet-H7; a model that cannot run at 224, such as the 32-pixel test ViT, falls back to its own);
  median of ``--repeats`` timed calls after a warm-up;
  ``--quick``: batch 4, 2 repeats, which keeps a sweep of the whole zoo near ten minutes on 2 cores);
- CPU peak memory: the peak of the tensor memory allocated during one forward pass above what
  was allocated before it (activations and kernel workspaces; weights and input excluded), from
  ``torch.profiler``'s allocation records (the process's RSS cannot tell: the C library keeps freed
  memory resident, so a second model reuses the first one's pages);
- with CUDA (``--cuda``, default when available): fp32 throughput, bf16 autocast + channels-last, and
  the same under ``torch.compile`` (``--compile``), with ``torch.cuda.max_memory_allocated``.

Prints one table, writes ``benchmarks/results/vision_backbones.json`` and a throughput-vs-GMACs
scatter plot ``vision_backbones.png``::

    python benchmarks/vision/backbones.py --threads 1 --repeats 2   # whole zoo, batch 32 at 224
    python benchmarks/vision/backbones.py --quick                   # batch 4
    python benchmarks/vision/backbones.py --models 'halonet_*' --size native
    python benchmarks/vision/backbones.py --cuda --compile --models 'vit_*' --name vision_backbones_gpu
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from interplay.core.bench import machine, save_results, time_call
from interplay.core.cli import format_table
from interplay.vision.models import MODEL_CFGS, count_gmacs, count_parameters, create_model, list_models


def peak_forward_memory_mb(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Peak of the tensor memory allocated during one forward pass above what was allocated before
    it (weights and input excluded), in MiB: the running sum of the allocation / free records of
    ``torch.profiler`` (``profile_memory=True``), i.e. what the CPU allocator handed out, whatever
    the C library keeps resident afterwards."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for e in sorted(records, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def gmacs_of(model: torch.nn.Module, size: int) -> float:
    with sdpa_kernel([SDPBackend.MATH]):
        return count_gmacs(model, size)


def cpu_row(name: str, size: int, batch: int, warmup: int, repeats: int) -> dict:
    torch.manual_seed(0)
    with torch.device("meta"):
        params = count_parameters(create_model(name))
    model = create_model(name).eval()
    row: dict = {"model": name, "family": MODEL_CFGS[name]["family"], "size": size, "params_m": params / 1e6}
    row["gmacs"] = gmacs_of(model, size)
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        timing = time_call(lambda: model(x), warmup=warmup, repeats=repeats)
    row["cpu_img_s"] = batch / timing["median_s"]
    row["cpu_s_per_batch"] = timing["median_s"]
    row["cpu_peak_mb"] = peak_forward_memory_mb(model, x)  # one more, untimed pass under the profiler
    return row


def cuda_rows(name: str, size: int, batch: int, warmup: int, repeats: int, compile_: bool) -> dict:
    """fp32, bf16 + channels-last, and (with ``compile_``) compiled bf16 + channels-last on CUDA."""
    torch.manual_seed(0)
    model = create_model(name).eval().cuda()
    x = torch.randn(batch, 3, size, size, device="cuda")
    out: dict = {}

    def run(tag: str, fn) -> None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            with torch.inference_mode():
                t = time_call(fn, warmup=warmup, repeats=repeats, device="cuda")
            out[f"cuda_{tag}_img_s"] = batch / t["median_s"]
            out[f"cuda_{tag}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        except Exception as err:  # one failing mode must not end the sweep
            out[f"cuda_{tag}_error"] = f"{type(err).__name__}: {err}"[:300]

    run("fp32", lambda: model(x))
    model_cl = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def bf16(m):
        def call():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return m(x_cl)

        return call

    run("bf16_cl", bf16(model_cl))
    if compile_:
        start = time.perf_counter()
        compiled = torch.compile(model_cl)
        run("bf16_cl_compiled", bf16(compiled))
        out["cuda_compile_s"] = time.perf_counter() - start
    return out


def plot(rows: list[dict], path: Path, key: str = "cpu_img_s") -> Path | None:
    pts = [r for r in rows if r.get(key) and r.get("gmacs")]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    families = sorted({r["family"] for r in pts})
    cmap = plt.get_cmap("tab20")
    for i, fam in enumerate(families):
        sel = [r for r in pts if r["family"] == fam]
        ax.scatter([r["gmacs"] for r in sel], [r[key] for r in sel], s=30, color=cmap(i % 20), label=fam)
        for r in sel:
            ax.annotate(
                r["model"], (r["gmacs"], r[key]), fontsize=6, xytext=(3, 2), textcoords="offset points"
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per image (at the benchmark input size)")
    ax.set_ylabel("images / s" + (" (CPU, fp32)" if key.startswith("cpu") else f" ({key})"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="*", help="shell pattern of model names (default: all)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 32, --quick 4)")
    parser.add_argument(
        "--size", default="224", help="input size for every model (default 224; 'native': each model's own)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 3, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU measurements (GPU runs)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on CUDA")
    parser.add_argument("--cuda-batch", type=int, default=None, help="CUDA batch (default: --batch, or 64)")
    parser.add_argument("--name", default="vision_backbones", help="result name (JSON and PNG)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (4 if args.quick else 32)
    repeats = args.repeats or (2 if args.quick else 3)
    use_cuda = torch.cuda.is_available() if args.cuda is None else args.cuda
    if use_cuda and not torch.cuda.is_available():
        parser.error("--cuda given but CUDA is not available")
    names = list_models(args.models)
    if not names:
        parser.error(f"no registered model matches '{args.models}'")

    if args.size != "native" and not args.size.isdigit():
        parser.error(f"--size must be a number of pixels or 'native', got '{args.size}'")
    rows = []
    for name in names:
        native = MODEL_CFGS[name]["input_size"]
        sizes = (
            [native] if args.size == "native" else [int(args.size)] + [native] * (int(args.size) != native)
        )
        start = time.perf_counter()
        for size in sizes:  # the requested size, then the model's own if it cannot run at that one
            row: dict = {"model": name, "family": MODEL_CFGS[name]["family"], "size": size}
            try:
                if not args.no_cpu:
                    row = cpu_row(name, size, batch, 1, repeats)
                if use_cuda:
                    row.update(
                        cuda_rows(name, size, args.cuda_batch or args.batch or 64, 3, 10, args.compile)
                    )
                break
            except Exception as err:  # a model that cannot run at this size is reported, not fatal
                row["error"] = f"{type(err).__name__}: {err}"[:300]
        row["paper_gmacs"] = MODEL_CFGS[name]["paper_gmacs"] if row["size"] == native else None
        row["bench_s"] = time.perf_counter() - start
        rows.append(row)
        print(f"{name}: {row.get('cpu_img_s', row.get('cuda_fp32_img_s', row.get('error')))}", flush=True)
        gc.collect()

    header = ["model", "size", "params (M)", "GMACs", "paper GMACs", "CPU img/s", "CPU peak MB"]
    table = [
        [r["model"], r["size"], r.get("params_m"), r.get("gmacs"), r["paper_gmacs"], r.get("cpu_img_s"),
         r.get("cpu_peak_mb")]
        for r in rows
    ]  # fmt: skip
    if use_cuda:
        header += ["GPU fp32", "GPU bf16 CL", "GPU compiled"]
        for t, r in zip(table, rows):
            t += [r.get("cuda_fp32_img_s"), r.get("cuda_bf16_cl_img_s"), r.get("cuda_bf16_cl_compiled_img_s")]
    print(format_table(table, header))
    errors = [r for r in rows if "error" in r]
    for r in errors:
        print(f"error: {r['model']}: {r['error']}", file=sys.stderr)

    meta = {
        "batch": batch,
        "repeats": repeats,
        "quick": args.quick,
        "sizes": "each model's input_size"
        if args.size == "native"
        else f"{args.size} (own size if it fails)",
        "cpu_timing": "median wall time of a forward pass, torch.inference_mode, fp32",
        "cpu_peak": "peak tensor memory of one forward above the weights (torch.profiler allocation records)",
        "gmacs": "count_gmacs at the input size, SDPA's math backend (attention products counted)",
        "cuda": use_cuda,
        "machine": machine(),
    }
    path = save_results(args.name, rows, meta=meta, directory=args.out)
    png = plot(
        rows, Path(args.out) / f"{args.name}.png", "cpu_img_s" if not args.no_cpu else "cuda_bf16_cl_img_s"
    )
    print(f"results: {path}" + (f", plot: {png}" if png else ""))
    return 1 if errors and len(errors) == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())

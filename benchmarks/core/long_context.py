"""Long context: prefill time and memory, decode time per token, cache bytes per token (issue 12).

Prefill (inference, fp32, B=1, H=8, D=64; S = 1k .. 64k): SDPA causal (``attend`` with the causal
mask: SDPA's own causal kernel), causal linear attention in chunks (elu+1, PyTorch chunked form on
CPU, Triton on CUDA), RAT's mixer (chunk 16), MoBA (blocks of 512, top-3) and sliding window +
sinks (``attend`` with ``sinks(4, 1024)``: compiled FlexAttention on long CPU inputs). A method is
skipped at the next length when its time there is projected past ``--max-seconds`` (quadratic growth
for SDPA, linear for the others), and the skip is recorded. Target: linear chunked at 16k at least
5x faster than SDPA causal (both measured in this run).

Decode (one attention layer, width 512 = 8 heads x 64, per generated token, at positions 1k .. 32k):

* full KV cache: project the new token, RoPE at its position, append to a preallocated cache,
  attend over every cached key (time grows with the position);
* sink cache: :class:`~interplay.core.attention.streaming.SinkKVCache` (4 sinks + 1020 recent
  tokens, keys cached before RoPE and rotated by their in-cache index): constant work;
* sliding-window recomputation (window 1024; StreamingLLM's baseline): for every new token the layer
  recomputes keys and values of the last 1024 tokens from their hidden states and runs causal
  attention over that window, which is what each layer of a deeper model must do (its inputs are
  the previous layer's recomputed outputs).

Targets: sink-cache time per token flat (at most 1.2x from position 1k to 32k) and at least 10x faster
than recomputation. Cache bytes per token and layer: MLA (``d_c + d_rope`` values) beside MHA and GQA,
for DeepSeek-V2's sizes (bf16, from the formulas) and for this benchmark's width (fp32, measured from
an :class:`~interplay.core.attention.latent.MLACache` after decoding).

Peak memory on CPU is the growth of the resident set while a call runs, on GPU
``torch.cuda.max_memory_allocated``. For the memory pass only, glibc is told to serve buffers over
64 KiB with mmap (``mallopt``), so that freed memory leaves the resident set and each measurement
starts from a clean baseline; timings run with a 32 MiB mmap threshold (freed buffers are reused),
since page-faulting every fresh buffer would slow the allocation-heavy methods (chunked linear
attention: 2x at 4k) against SDPA's fused kernel.

    python benchmarks/core/long_context.py [--quick] [--threads 1] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from interplay.core.attention import attend, causal, causal_linear_attention, sinks
from interplay.core.attention.latent import MLACache, MultiHeadLatentAttention, kv_cache_bytes_per_token
from interplay.core.attention.recurrent import rat_attention
from interplay.core.attention.rope import RotaryEmbedding
from interplay.core.attention.sparse import moba_attention
from interplay.core.attention.streaming import SinkKVCache
from interplay.core.bench import PeakRSS, save_results, synchronize, time_call
from interplay.core.cli import format_table

HEADS, HEAD_DIM = 8, 64
WIDTH = HEADS * HEAD_DIM
N_SINK, WINDOW = 4, 1024
RAT_CHUNK = 16
MOBA_BLOCK, MOBA_TOP_K = 512, 3
QUADRATIC = {"sdpa_causal"}


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_TIMING = 32 * 2**20
MMAP_THRESHOLD_MEMORY = 64 * 2**10


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _mallopt(value: int) -> bool:
    libc = _libc()
    return bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(M_MMAP_THRESHOLD, value))


@contextlib.contextmanager
def mmap_large_buffers():
    """Buffers over 64 KiB come from mmap while inside (freed memory leaves the resident set), and the
    free heap pages left by earlier calls are returned first (``malloc_trim``), so that reusing them
    counts as growth again."""
    _mallopt(MMAP_THRESHOLD_MEMORY)
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    try:
        yield
    finally:
        _mallopt(MMAP_THRESHOLD_TIMING)


def peak_memory(fn, device) -> int:
    """Peak growth of memory while ``fn()`` runs, its output included."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        synchronize(device)
        del out
        return torch.cuda.max_memory_allocated() - base
    with mmap_large_buffers():
        with PeakRSS() as mem:
            out = fn()
        del out
    return mem.peak


# -- prefill --------------------------------------------------------------------------------------------


def prefill_methods():
    def sdpa(q, k, v, g):
        return attend(q, k, v, mask=causal())

    def linear(q, k, v, g):
        return causal_linear_attention(q, k, v, feature_map="elu")

    def rat(q, k, v, g):
        return rat_attention(q, k, v, g, RAT_CHUNK)

    def moba(q, k, v, g):
        return moba_attention(q, k, v, MOBA_BLOCK, MOBA_TOP_K)

    def window(q, k, v, g):
        return attend(q, k, v, mask=sinks(N_SINK, WINDOW))

    return {
        "sdpa_causal": sdpa,
        "linear_chunked": linear,
        f"rat_chunk{RAT_CHUNK}": rat,
        f"moba_top{MOBA_TOP_K}": moba,
        "window_sinks": window,
    }


def run_prefill(sizes, repeats, device, max_seconds):
    rows = []
    last: dict[str, tuple[int, float]] = {}
    for s in sizes:
        gen = torch.Generator(device=device).manual_seed(s)
        q, k, v = (torch.randn(1, HEADS, s, HEAD_DIM, device=device, generator=gen) for _ in range(3))
        g = torch.sigmoid(torch.randn(1, HEADS, s, HEAD_DIM, device=device, generator=gen) + 1.0)
        for name, fn in prefill_methods().items():
            row = {"S": s, "method": name, "device": device}
            if name in last:
                prev_s, prev_t = last[name]
                growth = (s / prev_s) ** (2 if name in QUADRATIC else 1)
                projected = prev_t * growth
                if projected > max_seconds:
                    row.update(time_s=None, peak_bytes=None, note=f"skipped: projected {projected:.0f} s")
                    rows.append(row)
                    print(f"S={s:>6} {name:<15} skipped (projected {projected:.0f} s > {max_seconds} s)")
                    continue

            def call(fn=fn, q=q, k=k, v=v, g=g):
                with torch.no_grad():
                    return fn(q, k, v, g)

            start = time.perf_counter()
            call()  # first call: compilation (flex), allocations
            synchronize(device)
            first = time.perf_counter() - start
            runs = repeats if first < max_seconds / 4 else 1
            timing = time_call(call, warmup=0, repeats=runs, device=device)
            peak = peak_memory(call, device)
            row.update(
                time_s=timing["min_s"], median_s=timing["median_s"], first_call_s=first, peak_bytes=peak
            )
            rows.append(row)
            last[name] = (s, timing["min_s"])
            print(
                f"S={s:>6} {name:<15} {timing['min_s'] * 1e3:10.1f} ms  {peak / 2**20:9.1f} MiB",
                flush=True,
            )
        del q, k, v, g
    return rows


# -- decode ---------------------------------------------------------------------------------------------


class Layer:
    """The projections of one attention layer (width 512): a new token's q, k, v."""

    def __init__(self, device):
        gen = torch.Generator(device=device).manual_seed(0)
        self.w_qkv = torch.randn(WIDTH, 3 * WIDTH, device=device, generator=gen) / WIDTH**0.5
        self.rope = RotaryEmbedding(HEAD_DIM)
        self.device = device

    def qkv(self, x):
        b, length, _ = x.shape
        q, k, v = (x @ self.w_qkv).view(b, length, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        return q, k, v


def decode_full(layer, position, steps, device):
    cache_len = position + steps + 8
    gen = torch.Generator(device=device).manual_seed(1)
    keys = torch.randn(1, HEADS, cache_len, HEAD_DIM, device=device, generator=gen)
    values = torch.randn(1, HEADS, cache_len, HEAD_DIM, device=device, generator=gen)
    state = {"p": position}

    def step():
        p = state["p"]
        x = torch.randn(1, 1, WIDTH, device=device)
        q, k, v = layer.qkv(x)
        keys[:, :, p : p + 1] = layer.rope(k, offset=p)
        values[:, :, p : p + 1] = v
        out = attend(layer.rope(q, offset=p), keys[:, :, : p + 1], values[:, :, : p + 1])
        state["p"] = p + 1
        return out

    return step


def decode_sink(layer, position, steps, device):
    cache = SinkKVCache(N_SINK, WINDOW - N_SINK, rope=layer.rope)
    gen = torch.Generator(device=device).manual_seed(2)
    filled = 0
    while filled < position:  # fill without attending: only the stored entries matter
        n = min(cache.window, position - filled)
        cache.append(
            torch.randn(1, HEADS, n, HEAD_DIM, device=device, generator=gen),
            torch.randn(1, HEADS, n, HEAD_DIM, device=device, generator=gen),
        )
        filled += n

    def step():
        x = torch.randn(1, 1, WIDTH, device=device)
        q, k, v = layer.qkv(x)
        return cache.attend(q, k, v)

    return step


def decode_recompute(layer, position, steps, device):
    gen = torch.Generator(device=device).manual_seed(3)
    hidden = torch.randn(1, position + steps + 8, WIDTH, device=device, generator=gen)
    state = {"p": position}

    def step():
        p = state["p"]
        start = max(0, p + 1 - WINDOW)
        q, k, v = layer.qkv(hidden[:, start : p + 1])  # keys and values rebuilt for the whole window
        out = attend(layer.rope(q), layer.rope(k), v, mask=causal())  # positions re-indexed from 0
        state["p"] = p + 1
        return out[:, :, -1:]

    return step


DECODERS = {"full_kv_cache": decode_full, "sink_cache": decode_sink, "window_recompute": decode_recompute}


def run_decode(positions, steps, device):
    layer = Layer(device)
    rows = []
    for p in positions:
        for name, make in DECODERS.items():
            fn = make(layer, p, steps + 2, device)
            times = []
            with torch.no_grad():
                for i in range(steps + 2):
                    synchronize(device)
                    start = time.perf_counter()
                    fn()
                    synchronize(device)
                    if i >= 2:  # two warm-up tokens
                        times.append(time.perf_counter() - start)
            row = {
                "position": p,
                "method": name,
                "device": device,
                "min_s": min(times),
                "median_s": statistics.median(times),
                "tokens": len(times),
            }
            rows.append(row)
            print(
                f"pos={p:>6} {name:<17} min {row['min_s'] * 1e3:8.3f} ms  "
                f"median {row['median_s'] * 1e3:8.3f} ms",
                flush=True,
            )
    return rows


# -- cache bytes ----------------------------------------------------------------------------------------


def cache_bytes(device):
    rows = []
    # DeepSeek-V2 (Table 1): 128 heads of 128, d_c 512, d_rope 64, bf16; GQA with 8 groups
    bf16 = torch.bfloat16
    for name, value in (
        ("MHA", kv_cache_bytes_per_token(128, 128, bf16)),
        ("GQA (8 groups)", kv_cache_bytes_per_token(8, 128, bf16)),
        ("MLA (d_c 512 + d_rope 64)", (512 + 64) * 2),
    ):
        rows.append({"setting": "DeepSeek-V2, bf16 (formula)", "cache": name, "bytes_per_token": value})
    # this benchmark's width: 8 heads of 64, fp32; MLA with d_c = 4 * 64, d_rope = 32, measured
    mla = MultiHeadLatentAttention(WIDTH, HEADS, d_c=4 * HEAD_DIM, d_cq=None, d_head=HEAD_DIM, d_rope=32).to(
        device
    )
    cache = MLACache()
    with torch.no_grad():
        mla(torch.randn(1, 64, WIDTH, device=device), cache=cache)
        for _ in range(64):
            mla(torch.randn(1, 1, WIDTH, device=device), cache=cache)
    measured = cache.nbytes() // cache.length
    assert measured == mla.cache_bytes_per_token(torch.float32)
    for name, value in (
        ("MHA", kv_cache_bytes_per_token(HEADS, HEAD_DIM, torch.float32)),
        ("GQA (2 groups)", kv_cache_bytes_per_token(2, HEAD_DIM, torch.float32)),
        ("MLA (d_c 256 + d_rope 32)", measured),
    ):
        rows.append({"setting": "H=8, D=64, fp32 (MLA measured)", "cache": name, "bytes_per_token": value})
    return rows


# -- summary, plot --------------------------------------------------------------------------------------


def _find(rows, **keys):
    return next((r for r in rows if all(r.get(k) == v for k, v in keys.items())), None)


def checks(prefill, decode):
    out = {}
    sdpa, lin = (
        _find(prefill, S=16384, method="sdpa_causal"),
        _find(prefill, S=16384, method="linear_chunked"),
    )
    if sdpa and lin and sdpa.get("time_s") and lin.get("time_s"):
        out["linear_vs_sdpa_speedup_16k"] = sdpa["time_s"] / lin["time_s"]
    positions = sorted({r["position"] for r in decode})
    if positions:
        first, last = positions[0], positions[-1]
        s_first, s_last = (
            _find(decode, position=first, method="sink_cache"),
            _find(decode, position=last, method="sink_cache"),
        )
        out["sink_flatness_min"] = s_last["min_s"] / s_first["min_s"]
        out["sink_flatness_median"] = s_last["median_s"] / s_first["median_s"]
        out["flatness_positions"] = [first, last]
        ratios = [
            _find(decode, position=p, method="window_recompute")["min_s"]
            / _find(decode, position=p, method="sink_cache")["min_s"]
            for p in positions
        ]
        out["recompute_vs_sink_min_ratio"] = min(ratios)
    out["targets"] = {
        "linear_vs_sdpa_speedup_16k": ">= 5",
        "sink_flatness": "<= 1.2",
        "recompute_vs_sink": ">= 10",
    }
    out["passed"] = {
        "linear_vs_sdpa_speedup_16k": out.get("linear_vs_sdpa_speedup_16k", 0) >= 5,
        "sink_flatness": out.get("sink_flatness_min", 99) <= 1.2,
        "recompute_vs_sink": out.get("recompute_vs_sink_min_ratio", 0) >= 10,
    }
    return out


def plot(prefill, decode, png, device):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in prefill_methods():
        pts = [(r["S"], r["time_s"], r["peak_bytes"]) for r in prefill if r["method"] == name and r["time_s"]]
        if pts:
            xs, ts, ms = zip(*pts)
            axes[0].loglog(xs, [t * 1e3 for t in ts], "o-", label=name, base=2)
            axes[1].loglog(xs, [max(m, 1) / 2**20 for m in ms], "o-", label=name, base=2)
    for name in DECODERS:
        pts = [(r["position"], r["min_s"]) for r in decode if r["method"] == name]
        if pts:
            xs, ts = zip(*pts)
            axes[2].loglog(xs, [t * 1e3 for t in ts], "o-", label=name, base=2)
    axes[0].set(title="prefill time", xlabel="sequence length", ylabel="ms")
    axes[1].set(title="prefill peak memory", xlabel="sequence length", ylabel="MiB")
    axes[2].set(title="decode time per token", xlabel="position", ylabel="ms")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"long context, fp32, B=1, H=8, D=64 ({device}, {torch.get_num_threads()} threads)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="prefill 1k-16k, decode 1k-32k, fewer repeats")
    parser.add_argument("--sizes", type=int, nargs="+", help="prefill sequence lengths")
    parser.add_argument("--positions", type=int, nargs="+", help="decode positions")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--decode-steps", type=int, default=None, help="timed tokens per decode position")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="skip calls projected past this")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    _mallopt(MMAP_THRESHOLD_TIMING)
    quick = args.quick
    sizes = args.sizes or ([1024, 4096, 16384] if quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536])
    positions = args.positions or ([1024, 4096, 32768] if quick else [1024, 2048, 4096, 8192, 16384, 32768])
    repeats = args.repeats or (2 if quick else 3)
    steps = args.decode_steps or (20 if quick else 50)

    prefill = run_prefill(sizes, repeats, args.device, args.max_seconds)
    decode = run_decode(positions, steps, args.device)
    caches = cache_bytes(args.device)
    summary = checks(prefill, decode)

    print("\nprefill (ms; peak MiB)")
    methods = list(prefill_methods())
    table = []
    for s in sizes:
        row = [s]
        for m in methods:
            r = _find(prefill, S=s, method=m)
            row.append(
                "skipped"
                if not r or r["time_s"] is None
                else f"{r['time_s'] * 1e3:.1f}; {r['peak_bytes'] / 2**20:.0f}"
            )
        table.append(row)
    print(format_table(table, ["S", *methods]))
    print("\ndecode per token (ms, min / median)")
    table = []
    for p in positions:
        row = [p]
        for m in DECODERS:
            r = _find(decode, position=p, method=m)
            row.append(f"{r['min_s'] * 1e3:.3f} / {r['median_s'] * 1e3:.3f}")
        table.append(row)
    print(format_table(table, ["position", *DECODERS]))
    print("\ncache bytes per token and layer")
    print(
        format_table(
            [[r["setting"], r["cache"], r["bytes_per_token"]] for r in caches], ["setting", "cache", "bytes"]
        )
    )
    print("\ntargets")
    for key in (
        "linear_vs_sdpa_speedup_16k",
        "sink_flatness_min",
        "sink_flatness_median",
        "recompute_vs_sink_min_ratio",
    ):
        if key in summary:
            print(f"  {key}: {summary[key]:.2f}")
    print(f"  passed: {summary['passed']}")

    name = f"core_long_context{'' if args.device == 'cpu' else '_' + args.device}"
    rows = [{"kind": "prefill", **r} for r in prefill] + [{"kind": "decode", **r} for r in decode]
    rows += [{"kind": "cache_bytes", **r} for r in caches]
    meta = {
        "checks": summary,
        "quick": quick,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "settings": {
            "heads": HEADS,
            "head_dim": HEAD_DIM,
            "window": WINDOW,
            "n_sink": N_SINK,
            "rat_chunk": RAT_CHUNK,
            "moba_block": MOBA_BLOCK,
            "moba_top_k": MOBA_TOP_K,
            "max_seconds": args.max_seconds,
            "decode_steps": steps,
        },
    }
    path = save_results(name, rows, meta=meta, directory=args.out)
    plot(prefill, decode, Path(args.out) / f"{name}.png", args.device)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

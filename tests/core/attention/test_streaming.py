"""StreamingLLM sink cache: constant memory, re-indexed RoPE, equal to the direct computation."""

from __future__ import annotations

import pytest
import torch

from interplay.core.attention import attend, sinks
from interplay.core.attention.rope import RotaryEmbedding, apply_rope
from interplay.core.attention.streaming import SinkKVCache, sink_attention_reference, sink_cache_indices

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    fast, ref = fast.double(), ref.double()
    return ((fast - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def make(b, h, hkv, length, d, dv=None, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, length, d, generator=gen, dtype=dtype)
    k = torch.randn(b, hkv, length, d, generator=gen, dtype=dtype)
    v = torch.randn(b, hkv, length, dv or d, generator=gen, dtype=dtype)
    return q, k, v


def decode(cache, q, k, v, step=1):
    outs = []
    for t in range(0, q.shape[2], step):
        outs.append(cache(q[:, :, t : t + step], k[:, :, t : t + step], v[:, :, t : t + step]))
    return torch.cat(outs, dim=2)


def test_cache_indices_rule():
    assert sink_cache_indices(2, 2, 3) == [0, 1, 2]
    assert sink_cache_indices(4, 2, 3) == [0, 1, 2, 3, 4]
    assert sink_cache_indices(5, 2, 3) == [0, 1, 3, 4, 5]
    assert sink_cache_indices(9, 0, 3) == [7, 8, 9]


def test_decoding_1000_steps_constant_memory_and_equal_to_direct_computation():
    n_sink, window, steps = 4, 12, 1000
    q, k, v = make(1, 2, 2, steps, 8, seed=1)
    cache = SinkKVCache(n_sink, window)
    outs, ptrs = [], set()
    for t in range(steps):
        outs.append(cache(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1]))
        assert cache.k.shape[2] == cache.v.shape[2] == n_sink + window  # never more entries
        assert cache.length == min(t + 1, n_sink + window)
        ptrs.add((cache.k.data_ptr(), cache.v.data_ptr()))
        if t % 7 == 0:  # the table-backed rotation of the ring's runs = RoPE at the in-cache positions
            expected = apply_rope(cache.k[:, :, : cache.length], cache.positions())
            torch.testing.assert_close(cache.rotated_keys(), expected, atol=1e-6, rtol=1e-5)
    assert len(ptrs) == 1  # written in place: no reallocation while decoding
    assert cache.nbytes() == 2 * (n_sink + window) * 2 * 8 * 4
    ref = sink_attention_reference(q, k, v, n_sink, window)
    assert rel_rms(torch.cat(outs, dim=2), ref) < 1e-5
    # the cache holds exactly the sinks and the last window tokens, in order
    keys, values = cache.ordered()
    idx = sink_cache_indices(steps - 1, n_sink, window)
    assert torch.equal(keys, k[:, :, idx]) and torch.equal(values, v[:, :, idx])


@pytest.mark.parametrize(
    ("n_sink", "window", "length", "d", "h", "hkv"),
    [(4, 16, 63, 60, 4, 2), (1, 1, 5, 8, 2, 2), (0, 7, 30, 16, 2, 1)],
)
def test_decoding_matches_reference_odd_shapes(n_sink, window, length, d, h, hkv):
    q, k, v = make(2, h, hkv, length, d, dv=d + 4, seed=2)
    for rope in (10000.0, RotaryEmbedding(d, base=500.0, interleaved=True)):
        cache = SinkKVCache(n_sink, window, rope=rope)
        out = decode(cache, q, k, v)
        assert out.shape == (2, h, length, d + 4)
        assert rel_rms(out, sink_attention_reference(q, k, v, n_sink, window, rope=rope)) < 1e-5


def test_reference_is_reindexed_rope_attention_over_sinks_and_window():
    """Token t: keys [sinks + window] rotated by 0..n-1, the query by n-1 (not by t)."""
    n_sink, window, t = 2, 3, 9
    q, k, v = make(1, 1, 1, 10, 8, seed=3)
    idx = [0, 1, 7, 8, 9]
    keys = apply_rope(k[:, :, idx], torch.arange(5))
    query = apply_rope(q[:, :, t : t + 1], torch.tensor([4]))
    expected = torch.softmax(query @ keys.transpose(-2, -1) / 8**0.5, dim=-1) @ v[:, :, idx]
    ref = sink_attention_reference(q, k, v, n_sink, window)
    torch.testing.assert_close(ref[:, :, t : t + 1], expected, atol=1e-6, rtol=1e-5)
    # positions in the text would give another answer: the re-indexing matters
    wrong = apply_rope(k[:, :, idx], torch.tensor(idx))
    wrong_q = apply_rope(q[:, :, t : t + 1], torch.tensor([t]))
    other = torch.softmax(wrong_q @ wrong.transpose(-2, -1) / 8**0.5, dim=-1) @ v[:, :, idx]
    assert rel_rms(other, expected) > 1e-3


def test_without_rope_equals_sinks_mask_over_the_full_sequence():
    n_sink, window = 3, 10
    q, k, v = make(2, 4, 2, 200, 60, seed=4)
    cache = SinkKVCache(n_sink, window, rope=None)
    out = decode(cache, q, k, v)
    full = attend(q, k, v, mask=sinks(n_sink, window), backend="math")
    assert rel_rms(out, full) < 1e-5


def test_prefill_then_decode():
    n_sink, window = 4, 16
    q, k, v = make(1, 2, 2, 60, 8, seed=5)
    cache = SinkKVCache(n_sink, window, rope=RotaryEmbedding(8))
    prompt = cache(q[:, :, :12], k[:, :, :12], v[:, :, :12])
    # a prompt that fits is plain causal RoPE attention at positions 0..L-1
    qr, kr = apply_rope(q[:, :, :12]), apply_rope(k[:, :, :12])
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    expected = attend(qr, kr, v[:, :, :12], mask=causal, backend="math")
    assert rel_rms(prompt, expected) < 1e-5
    rest = decode(cache, q[:, :, 12:], k[:, :, 12:], v[:, :, 12:])
    ref = sink_attention_reference(q, k, v, n_sink, window)
    assert rel_rms(rest, ref[:, :, 12:]) < 1e-5


def test_multi_token_steps_evict_for_space_first():
    """L new tokens on a full cache: the L oldest window entries go first, then the new tokens
    attend causally (StreamingLLM's evict_for_space)."""
    n_sink, window = 2, 6
    q, k, v = make(1, 2, 2, 20, 8, seed=6)
    cache = SinkKVCache(n_sink, window)
    decode(cache, q[:, :, :8], k[:, :, :8], v[:, :, :8])  # full: tokens 0..7
    out = cache(q[:, :, 8:11], k[:, :, 8:11], v[:, :, 8:11])
    keys, _ = cache.ordered()
    idx = [0, 1, 5, 6, 7, 8, 9, 10]
    assert torch.equal(keys, k[:, :, idx])
    kr = apply_rope(k[:, :, idx], torch.arange(8))
    qr = apply_rope(q[:, :, 8:11], torch.arange(5, 8))
    mask = torch.arange(8)[None, :] <= torch.arange(5, 8)[:, None]
    assert rel_rms(out, attend(qr, kr, v[:, :, idx], mask=mask, backend="math")) < 1e-5
    # more tokens than the window are added window by window
    cache.reset()
    big = cache(q, k, v)
    cache.reset()
    pieces = decode(cache, q, k, v, step=window)
    torch.testing.assert_close(big, pieces)
    assert cache.length == n_sink + window and cache.seen == 20


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="n_sink"):
        SinkKVCache(-1, 4)
    with pytest.raises(ValueError, match="window"):
        SinkKVCache(4, 0)
    with pytest.raises(ValueError, match="rope"):
        SinkKVCache(4, 4, rope="yes")
    cache = SinkKVCache(2, 4)
    q, k, v = make(1, 2, 2, 3, 8)
    with pytest.raises(ValueError, match=r"q must have shape \[B, H, L, D\]"):
        cache(q[0], k, v)
    with pytest.raises(ValueError, match="same new tokens"):
        cache(q[:, :, :2], k, v)
    cache(q, k, v)
    with pytest.raises(ValueError, match="do not match the cached keys"):
        cache(*make(1, 2, 2, 1, 16))
    with pytest.raises(ValueError, match="at most window"):
        cache.append(*make(1, 2, 2, 5, 8)[1:])
    with pytest.raises(ValueError, match="empty"):
        SinkKVCache(1, 1).ordered()


@pytest.mark.gpu
def test_sink_cache_on_gpu_matches_reference():
    q, k, v = (t.cuda() for t in make(1, 8, 8, 300, 64, seed=7))
    cache = SinkKVCache(4, 64)
    out = decode(cache, q, k, v)
    assert cache.k.is_cuda and cache.k.shape[2] == 68
    assert rel_rms(out, sink_attention_reference(q.cpu(), k.cpu(), v.cpu(), 4, 64).cuda()) < 1e-4

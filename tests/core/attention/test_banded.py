"""The gather path of the block-sparse pattern equals masked dense attention, forward and backward."""

from __future__ import annotations

import pytest
import torch

from interplay.core.attention import attend, block_sparse
from interplay.core.attention.banded import block_sparse_attention, block_sparse_key_count
from interplay.core.attention.masks import block_sparse_random_links

CASES = [
    # (L, window, n_global, n_random)
    (1, 4, 6, 2),  # fewer tokens than global tokens
    (6, 4, 6, 2),  # only global tokens
    (7, 4, 6, 2),  # one feature
    (9, 4, 6, 2),  # fewer features than the band
    (14, 4, 6, 2),  # band wider than half the features
    (63, 2, 0, 3),  # no global tokens
    (40, 0, 3, 5),  # no band: the query itself only, plus links
    (20, 30, 2, 4),  # window longer than the sequence: dense
    (77, 4, 6, 2),  # features not a multiple of the block
    (300, 40, 6, 2),  # window larger than the block size
    (110, 4, 6, 0),  # no random links
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def _inputs(length: int, heads: int = 3, kv_heads: int | None = None, dim: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    kv_heads = kv_heads or heads
    shapes = [(2, heads, length, dim), (2, kv_heads, length, dim), (2, kv_heads, length, dim)]
    return [torch.randn(*s, generator=gen).requires_grad_() for s in shapes]


@pytest.mark.parametrize("length,window,n_global,n_random", CASES)
def test_outputs_and_gradients_match_masked_dense(length, window, n_global, n_random):
    q, k, v = _inputs(length)
    out = block_sparse_attention(q, k, v, n_global=n_global, window=window, n_random=n_random, seed=7)
    ref = attend(q, k, v, mask=block_sparse(n_global, window, n_random, seed=7), backend="math")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    ref_grads = torch.autograd.grad(ref, (q, k, v), upstream)
    for name, g, r in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5, msg=f"gradient of {name}")


def test_grouped_query_heads_and_custom_scale():
    q, k, v = _inputs(50, heads=4, kv_heads=2)
    out = block_sparse_attention(q, k, v, n_global=3, window=2, n_random=2, seed=1, scale=0.3)
    ref = attend(q, k, v, mask=block_sparse(3, 2, 2, seed=1), scale=0.3, backend="math")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_other_seed_other_links():
    q, k, v = _inputs(60)
    a = block_sparse_attention(q, k, v, n_global=2, window=1, n_random=3, seed=1)
    b = block_sparse_attention(q, k, v, n_global=2, window=1, n_random=3, seed=2)
    assert not torch.allclose(a, b)
    ref = attend(q, k, v, mask=block_sparse(2, 1, 3, seed=2), backend="math")
    torch.testing.assert_close(b, ref, rtol=1e-5, atol=1e-5)


def test_links_inside_the_band_are_counted_once():
    # 5 features, window 1, 4 links per query: every query has links inside its band (itself
    # included), so counting them twice would give those keys double weight
    length, n_global, window, n_random = 7, 2, 1, 4
    links = block_sparse_random_links(length, n_global, n_random, seed=0)
    feature = torch.arange(length - n_global)[:, None] + n_global
    assert ((links - feature).abs() <= window).any(dim=1).all()
    q, k, v = _inputs(length)
    out = block_sparse_attention(q, k, v, n_global=n_global, window=window, n_random=n_random)
    ref = attend(q, k, v, mask=block_sparse(n_global, window, n_random), backend="math")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the same keys with a duplicated link: a different (wrong) distribution
    scores = (q[:, :, 2:3] @ k.transpose(-1, -2))[0, 0, 0] / 8**0.5
    visible = block_sparse(n_global, window, n_random).dense(1, 1, length, length)[0, 0, 2]
    weights = scores.masked_fill(~visible, float("-inf")).exp()
    duplicated = weights.clone()
    duplicated[2] *= 2  # the query itself, once from the band and once as a link
    assert not torch.allclose(weights / weights.sum(), duplicated / duplicated.sum())


def test_random_links_are_those_of_the_mask_table():
    length, n_global, n_random = 30, 4, 3
    table = block_sparse(n_global, 0, n_random, seed=5).dense(1, 1, length, length)[0, 0]
    links = block_sparse_random_links(length, n_global, n_random, seed=5)
    expected = torch.zeros(length - n_global, length, dtype=torch.bool)
    expected[torch.arange(length - n_global)[:, None], links] = True
    expected[:, :n_global] = True
    expected[torch.arange(length - n_global), torch.arange(n_global, length)] = True  # window 0: self
    assert torch.equal(table[n_global:], expected)


def test_key_count_is_linear_in_length():
    assert block_sparse_key_count(2006, 6, 4, 2) == 6 + 9 + 2
    assert block_sparse_key_count(10, 6, 4, 2) == 6 + 7 + 2  # 4 features: band of at most 7 slots
    assert block_sparse_key_count(3, 6, 4, 2) == 3 + 1 + 0


def test_bad_inputs_raise():
    q, k, v = _inputs(10)
    with pytest.raises(ValueError, match=r"\[B, H, L, D\]"):
        block_sparse_attention(q[0], k, v, n_global=1, window=1)
    with pytest.raises(ValueError, match="self-attention"):
        block_sparse_attention(q, k[:, :, :5], v[:, :, :5], n_global=1, window=1)
    with pytest.raises(ValueError, match="non-negative"):
        block_sparse_attention(q, k, v, n_global=1, window=-1)

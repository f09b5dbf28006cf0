"""Language-model harness: mixer references vs fast paths, causality of every mixer, equal parameter
counts, the stdlib corpus, training runs and the ``interplay lm`` command line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from interplay.core.cli import umbrella_main
from interplay.core.errors import ConfigError, DataError
from interplay.core.lm import (
    CausalLM,
    DataSpec,
    LMConfig,
    MixerOptions,
    ModelSpec,
    RandomWindows,
    build_model,
    chunked_attention,
    chunked_attention_reference,
    dilated_causal_conv,
    dilated_causal_conv_reference,
    eval_windows,
    fixed_causal_mixing,
    fixed_causal_mixing_reference,
    layer_mixers,
    load_model,
    mixer_names,
    parameter_table,
    stdlib_corpus,
    train_lm,
)
from interplay.core.lm.cli import main as lm_main

HYBRIDS = ["hybrid:linear@softmax=0", "hybrid:shift@softmax=1@mla=0"]
ALL_MIXERS = [*mixer_names(), *HYBRIDS]
# small structures so that a 40-token input crosses windows, blocks and chunks
SMALL = MixerOptions(
    window=5, n_sink=2, linear_chunk=8, block_size=8, top_k=2, rat_chunk=4, attention_chunk=8, max_len=64
)
TINY = ModelSpec(dim=32, depth=2, heads=2, options=SMALL)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def rel_rms(fast: torch.Tensor, ref: torch.Tensor) -> float:
    """rms(ref - fast) / rms(ref); references that vanish (the gradients of q and k when every row
    sees one key) are compared against an RMS of 0.1 instead."""
    fast, ref = fast.double(), ref.double()
    return ((fast - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(0.1)).item()


def grads(out: torch.Tensor, inputs, seed: int = 0):
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * weight).sum(), inputs)


# -- references vs fast paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "chunk"), [(1, 16), (63, 16), (200, 64), (37, 7), (50, 1)])
def test_chunked_attention_matches_reference(length, chunk):
    gen = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(2, 3, length, 60, generator=gen, requires_grad=True) for _ in range(3))
    fast = chunked_attention(q, k, v, chunk)
    ref = chunked_attention_reference(q, k, v, chunk)
    assert fast.shape == (2, 3, length, 60)
    assert rel_rms(fast, ref) < 1e-5
    for g_fast, g_ref in zip(grads(fast, (q, k, v)), grads(ref, (q, k, v))):
        assert rel_rms(g_fast, g_ref) < 1e-5


def test_chunked_attention_is_local_to_its_chunk():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 24, 8, generator=gen) for _ in range(3))
    out = chunked_attention(q, k, v, 8)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :8] += 5.0  # the first chunk's keys and values: nothing after position 7 may change
    v2[:, :, :8] -= 3.0
    out2 = chunked_attention(q, k2, v2, 8)
    torch.testing.assert_close(out[:, :, 8:], out2[:, :, 8:])
    assert not torch.allclose(out[:, :, :8], out2[:, :, :8])
    # the first row of every chunk sees only itself
    torch.testing.assert_close(out[:, :, ::8], v[:, :, ::8])


@pytest.mark.parametrize(("length", "dilation", "taps"), [(1, 1, 3), (63, 2, 3), (200, 8, 3), (40, 1, 4)])
def test_dilated_causal_conv_matches_reference(length, dilation, taps):
    gen = torch.Generator().manual_seed(length + dilation)
    x = torch.randn(2, length, 60, generator=gen, requires_grad=True)
    w = torch.randn(60, taps, generator=gen, requires_grad=True)
    fast = dilated_causal_conv(x, w, dilation)
    ref = dilated_causal_conv_reference(x, w, dilation)
    assert rel_rms(fast, ref) < 1e-6
    for g_fast, g_ref in zip(grads(fast, (x, w)), grads(ref, (x, w))):
        assert rel_rms(g_fast, g_ref) < 1e-6


def test_dilated_causal_conv_taps_look_back_by_dilation():
    x = torch.zeros(1, 20, 1)
    x[0, 3, 0] = 1.0  # an impulse at t = 3
    w = torch.tensor([[1.0, 2.0, 3.0]])
    out = dilated_causal_conv(x, w, 4)[0, :, 0]
    expected = torch.zeros(20)
    expected[3], expected[7], expected[11] = 1.0, 2.0, 3.0
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("length", [1, 63, 200])
def test_fixed_causal_mixing_matches_reference(length):
    gen = torch.Generator().manual_seed(length)
    v = torch.randn(2, 3, length, 60, generator=gen, requires_grad=True)
    logits = torch.randn(3, 256, generator=gen, requires_grad=True)
    fast = fixed_causal_mixing(v, logits)
    ref = fixed_causal_mixing_reference(v, logits)
    assert rel_rms(fast, ref) < 1e-5
    for g_fast, g_ref in zip(grads(fast, (v, logits)), grads(ref, (v, logits))):
        assert rel_rms(g_fast, g_ref) < 1e-5


def test_fixed_causal_mixing_ignores_content():
    """The weights depend on offsets only: mixing a sum is the sum of the mixings."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 2, 30, 4, generator=gen), torch.randn(1, 2, 30, 4, generator=gen)
    logits = torch.randn(2, 30, generator=gen)
    torch.testing.assert_close(
        fixed_causal_mixing(a + b, logits), fixed_causal_mixing(a, logits) + fixed_causal_mixing(b, logits)
    )


def test_bad_inputs_name_the_argument():
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match="q must have shape"):
        chunked_attention(q[0], q, q, 4)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        chunked_attention(q, q, q, 0)
    with pytest.raises(ValueError, match="must share"):
        chunked_attention(q, q[:, :, :5], q, 4)
    with pytest.raises(ValueError, match="weight must have shape"):
        dilated_causal_conv(torch.randn(1, 8, 4), torch.randn(3, 2), 1)
    with pytest.raises(ValueError, match="dilation"):
        dilated_causal_conv(torch.randn(1, 8, 4), torch.randn(4, 2), 0)
    with pytest.raises(ValueError, match="max_len"):
        fixed_causal_mixing(q, torch.randn(2, 4))
    with pytest.raises(ValueError, match="logits must have shape"):
        fixed_causal_mixing(q, torch.randn(3, 8))
    model = build_model("shift", TINY)
    with pytest.raises(ValueError, match="tokens must have shape"):
        model(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens must be integer"):
        model(torch.zeros(1, 8))


# -- mixers: names, hybrids, causality, parameter counts ---------------------------------------------------


def test_layer_mixers_parses_hybrids():
    assert layer_mixers("rat", 3) == ["rat"] * 3
    assert layer_mixers("hybrid:linear@softmax=0,3", 4) == ["softmax", "linear", "linear", "softmax"]
    assert layer_mixers("hybrid:shift@softmax=3@mla=1", 4) == ["shift", "mla", "shift", "softmax"]
    for bad, match in [
        ("rot", "unknown mixer 'rot'.*did you mean 'rat'"),
        ("hybrid:linear", "names no layers"),
        ("hybrid:linear@softmax=4", "layer 4 outside 0..3"),
        ("hybrid:linear@softmax=a", "not an integer"),
        ("hybrid:linear@sofmax=1", "unknown mixer 'sofmax'"),
        ("hybrid:linear@softmax", "OTHER=i,j"),
        ("", "non-empty"),
    ]:
        with pytest.raises(ConfigError, match=match):
            layer_mixers(bad, 4)


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_every_mixer_is_causal(mixer):
    """Logits at position t do not change when tokens after t change (and later ones do)."""
    torch.manual_seed(0)
    model = build_model(mixer, TINY).eval()
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (2, 40), generator=gen)
    with torch.no_grad():
        base = model(tokens)
        assert base.shape == (2, 40, 256) and torch.isfinite(base).all()
        for t in (0, 13, 30):
            changed = tokens.clone()
            changed[:, t + 1 :] = torch.randint(0, 256, (2, 39 - t), generator=gen)
            out = model(changed)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-4)


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_every_mixer_trains(mixer):
    """Forward and backward give finite gradients for every parameter that takes part."""
    torch.manual_seed(0)
    model = build_model(mixer, TINY)
    tokens = torch.randint(0, 256, (2, 19), generator=torch.Generator().manual_seed(2))
    loss = model.loss(tokens)
    loss.backward()
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(256)) < 0.5  # starts near uniform
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_parameter_counts_match_across_mixers():
    rows = parameter_table([*mixer_names(), "hybrid:linear@softmax=0,3"])  # the default width
    counts = {r["mixer"]: r["params"] for r in rows}
    reference = counts["softmax"]
    assert 700_000 < reference < 1_000_000
    spread = max(counts.values()) / min(counts.values())
    assert spread < 1.10, counts  # the brief's bound; the feed-forward resizing gives well under 1%
    assert spread < 1.01, counts
    # without resizing the mixers differ (RAT's layer is 6 d^2, a token shift 2 d^2)
    unmatched = parameter_table(["rat", "shift"], ModelSpec(match_params=False))
    assert unmatched[0]["params"] / unmatched[1]["params"] > 1.2


def test_model_spec_and_mixer_options_validate():
    with pytest.raises(ValueError, match="heads"):
        ModelSpec(dim=30, heads=4)
    with pytest.raises(ValueError, match="block_size"):
        MixerOptions(block_size=0)
    with pytest.raises(ConfigError, match="even width"):
        build_model("softmax", ModelSpec(dim=12, heads=4))  # head dim 3: RoPE needs pairs


# -- data -----------------------------------------------------------------------------------------------


def write_tree(root, n_files=20, size=2000):
    for i in range(n_files):
        sub = root / f"pkg{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        text = f"# file {i}\n" + "def f(x):\n    return x + 1\n" * (size // 28)
        (sub / f"mod{i:02d}.py").write_text(text)
    (root / "site-packages").mkdir(exist_ok=True)
    (root / "site-packages" / "third_party.py").write_text("x = 1\n" * 1000)
    (root / "notes.txt").write_text("not python\n")


def test_corpus_splits_by_file_deterministically(tmp_path):
    write_tree(tmp_path)
    a = stdlib_corpus(tmp_path, budget_bytes=20_000, val_fraction=0.2)
    b = stdlib_corpus(tmp_path, budget_bytes=20_000, val_fraction=0.2)
    assert a.train_files == b.train_files and a.val_files == b.val_files
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert not set(a.train_files) & set(a.val_files)
    assert all(not f.startswith("site-packages") and f.endswith(".py") for f in a.train_files + a.val_files)
    assert a.train.dtype == torch.uint8
    assert a.train.numel() == 16_000 and a.val.numel() == 4_000  # the budget, split 80 / 20
    assert a.describe()["sha256"] == b.describe()["sha256"]


def test_corpus_errors(tmp_path):
    with pytest.raises(DataError, match="not found: .*missing"):
        stdlib_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \*\.py files"):
        stdlib_corpus(tmp_path / "empty")
    write_tree(tmp_path / "one", n_files=1)
    with pytest.raises(DataError, match="val split is empty"):
        stdlib_corpus(tmp_path / "one")
    with pytest.raises(DataError, match="budget_bytes"):
        stdlib_corpus(tmp_path / "one", budget_bytes=0)


def test_stdlib_corpus_reads_the_standard_library():
    corpus = stdlib_corpus(budget_bytes=200_000)
    assert corpus.train.numel() + corpus.val.numel() == 200_000
    assert b"def " in corpus.train.numpy().tobytes()
    assert len(corpus.val_files) >= 1


def test_windows():
    data = torch.arange(100, dtype=torch.uint8)
    batches = iter(RandomWindows(data, seq_len=9, batch_size=4, seed=3))
    first = next(batches)
    assert first.shape == (4, 10) and first.dtype == torch.int64
    assert torch.equal(first[:, 1:] - first[:, :-1], torch.ones(4, 9, dtype=torch.int64))  # contiguous
    assert torch.equal(first, next(iter(RandomWindows(data, 9, 4, seed=3))))  # seeded
    windows = eval_windows(data, 10)
    assert windows.shape == (9, 11)
    assert torch.equal(windows[1, 0], windows[0, -1])  # consecutive windows share one byte
    assert eval_windows(data, 10, max_tokens=30).shape == (3, 11)
    with pytest.raises(DataError, match="fewer than one window"):
        eval_windows(data[:5], 10)
    with pytest.raises(DataError, match="fewer than one window"):
        RandomWindows(data[:5], 10, 2)


# -- training and the command line ---------------------------------------------------------------------


def tiny_config(tmp_path, mixer="softmax", **kw) -> LMConfig:
    write_tree(tmp_path / "text", n_files=12, size=4000)
    return LMConfig(
        mixer=mixer,
        model=ModelSpec(dim=32, depth=2, heads=2, options=SMALL),
        data=DataSpec(root=str(tmp_path / "text"), budget_bytes=40_000, val_fraction=0.25, val_tokens=1024),
        steps=kw.pop("steps", 40),
        batch_size=8,
        seq_len=32,
        lr=1e-2,
        warmup_steps=5,
        progress_bar=False,
        run_root=str(tmp_path / "runs"),
        **kw,
    )


def test_train_lm_learns_and_writes_a_run_directory(tmp_path):
    cfg = tiny_config(tmp_path, "hybrid:linear@softmax=1", eval_every=20)
    result = train_lm(cfg)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert result.run_dir.parent.name == "hybrid-linear-softmax-1"
    assert result.run_dir.parent.parent.name == "lm"
    assert metrics["steps"] == 40 and metrics["layer_mixers"] == ["linear", "softmax"]
    # uniform guessing is 8 bits per byte; the repetitive text is learnt quickly
    assert metrics["val_bpc"] < 4.0
    assert metrics["val_bpc"] == pytest.approx(metrics["val_loss_nats"] / math.log(2), rel=1e-6)
    assert metrics["params"] == result.model.num_parameters()
    for name in ("config.yaml", "versions.json", "metrics.csv", "checkpoints/last.ckpt"):
        assert (result.run_dir / name).is_file(), name
    assert "val/bpc" in (result.run_dir / "metrics.csv").read_text()
    model, stored = load_model(result.run_dir / "checkpoints" / "last.ckpt")
    assert stored.mixer == cfg.mixer
    tokens = torch.randint(0, 256, (1, 20))
    torch.testing.assert_close(model(tokens), result.model(tokens))


def test_config_rejects_unknown_mixer(tmp_path):
    with pytest.raises(ConfigError, match="unknown mixer 'rot'"):
        tiny_config(tmp_path, "rot")


def test_cli_train_and_errors(tmp_path, capsys):
    text = tmp_path / "text"
    write_tree(text, n_files=12, size=4000)
    common = [
        "--dim", "32", "--depth", "2", "--heads", "2", "--seq-len", "16", "--batch-size", "2",
        "--data-root", str(text), "--budget-bytes", "20000", "--val-tokens", "256",
        "--run-root", str(tmp_path / "runs"), "--no-progress",
    ]  # fmt: skip
    assert (
        umbrella_main(["lm", "train", "--mixer", "rat", "--steps", "2", *common, "model.options.rat_chunk=4"])
        == 0
    )
    out = capsys.readouterr().out
    assert "val bits per character" in out and "run directory:" in out
    (run,) = (tmp_path / "runs" / "lm" / "rat").iterdir()
    assert "rat_chunk: 4" in (run / "config.yaml").read_text()
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2

    assert lm_main(["train", "--mixer", "rot", *common]) == 2
    assert "did you mean 'rat'" in capsys.readouterr().err
    assert lm_main(["train", "--mixer", "rat", *common, "model.dimm=3"]) == 2
    assert "model.dimm" in capsys.readouterr().err
    assert lm_main(["train", "--mixer", "rat", "--data-root", str(tmp_path / "nowhere"), "--steps", "1"]) == 2
    assert "not found" in capsys.readouterr().err
    assert lm_main(["mixers", "--dim", "32", "--depth", "2", "--heads", "2"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in mixer_names())


# -- GPU ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_every_mixer_on_cuda(mixer):
    """CUDA picks the fast paths (SDPA / FlexAttention / Triton): causality and CPU agreement."""
    torch.manual_seed(0)
    model = build_model(mixer, TINY).eval()
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (2, 40), generator=gen)
    with torch.no_grad():
        cpu = model(tokens)
        cuda_model = model.cuda()
        base = cuda_model(tokens.cuda())
        assert (base.cpu() - cpu).abs().max() < 2e-3
        changed = tokens.clone()
        changed[:, 21:] = torch.randint(0, 256, (2, 19), generator=gen)
        out = cuda_model(changed.cuda())
        torch.testing.assert_close(out[:, :21], base[:, :21], rtol=1e-4, atol=1e-4)
    cuda_model.train()
    loss = cuda_model.loss(tokens.cuda())
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in cuda_model.parameters())


def test_causal_lm_default_is_the_issue_width():
    model = CausalLM("softmax")
    assert (model.spec.dim, model.spec.depth, model.spec.heads) == (128, 4, 4)

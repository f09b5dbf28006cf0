"""The zoo's factory: MAC counting, checkpoint reading and loading, errors that name the input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from interplay.core.errors import ConfigError, DataError
from interplay.vision.models import count_gmacs, load_checkpoint, read_state_dict
from interplay.vision.models.factory import _weights_path


class _ConvAttn(nn.Module):
    """A 3x3 convolution then self-attention over its 8x8 positions: MACs known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = self.conv(x).flatten(2).transpose(1, 2)  # [1, 64, 16]
        q = y.view(1, 64, 2, 8).transpose(1, 2)  # 2 heads of 8
        out = F.scaled_dot_product_attention(q, q, q)
        return self.head(out.transpose(1, 2).reshape(1, 64, 16).mean(1))


def test_count_gmacs_counts_convolutions_linears_and_attention():
    conv = 64 * 16 * 3 * 9  # positions x out x in x kernel
    attention = 2 * 64 * 64 * 8 * 2  # heads x Lq x Lk x (QK^T + AV)
    linear = 16 * 5
    assert count_gmacs(_ConvAttn(), 8) * 1e9 == pytest.approx(conv + attention + linear)


def test_read_state_dict_formats_and_errors(tmp_path):
    from safetensors.torch import save_file

    model = nn.Linear(3, 2)
    sd = model.state_dict()
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == {"weight", "bias"}
        torch.testing.assert_close(got["weight"], sd["weight"])
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pth"):
        read_state_dict(tmp_path / "bad.pth")
    with pytest.raises(DataError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")


def test_load_checkpoint_remaps_skips_a_new_classifier_and_reports_mismatches(tmp_path):
    class Net(nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.head = nn.Module()
            self.head.fc = nn.Linear(4, classes)

    source = Net(10)
    official = {k.replace("head.fc", "classifier"): v for k, v in source.state_dict().items()}
    torch.save(official, tmp_path / "official.pt")

    def remap(state, model):
        return {k.replace("classifier", "head.fc"): v for k, v in state.items()}

    target = Net(3)  # fine-tuning to 3 classes: the 10-class classifier is skipped
    load_checkpoint(target, tmp_path / "official.pt", filter_fn=remap, num_classes=3)
    torch.testing.assert_close(target.body.weight, source.body.weight)
    with pytest.raises(DataError, match="missing"):  # without the remap the classifier keys are unknown
        load_checkpoint(Net(10), tmp_path / "official.pt")
    wrong = {"body.weight": torch.zeros(5, 4), "body.bias": torch.zeros(4)}
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(DataError, match="body.weight"):
        load_checkpoint(Net(10), tmp_path / "wrong.pt", num_classes=10)


def test_pretrained_weights_are_looked_up_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("INTERPLAY_WEIGHTS", raising=False)
    with pytest.raises(ConfigError, match="INTERPLAY_WEIGHTS"):
        _weights_path("davit_tiny", None)
    (tmp_path / "davit_tiny.safetensors").write_bytes(b"")
    monkeypatch.setenv("INTERPLAY_WEIGHTS", str(tmp_path))
    assert _weights_path("davit_tiny", None) == tmp_path / "davit_tiny.safetensors"


def test_create_model_reads_run_checkpoints_and_picks_the_newest_match(tmp_path):
    from interplay.vision.models import create_model

    trained = create_model("vit_pico_patch4_32", num_classes=3)
    ema = create_model("vit_pico_patch4_32", num_classes=3)
    student = create_model("vit_pico_patch4_32", num_classes=3)
    # a plain run: the task module's keys under "model.", its EMA copy under "model_ema.module."
    run = {f"model.{k}": v for k, v in trained.state_dict().items()}
    for stamp in ("2026-01-01", "2026-02-01"):
        (tmp_path / stamp).mkdir()
    torch.save({"state_dict": run}, tmp_path / "2026-01-01" / "best.ckpt")
    with_ema = run | {f"model_ema.module.{k}": v for k, v in ema.state_dict().items()}
    torch.save({"state_dict": with_ema}, tmp_path / "2026-02-01" / "best.ckpt")
    plain = create_model(
        "vit_pico_patch4_32", num_classes=3, pretrained_file=tmp_path / "2026-01-01" / "best.ckpt"
    )
    torch.testing.assert_close(plain.head.fc.weight, trained.head.fc.weight)
    newest = create_model(
        "vit_pico_patch4_32", num_classes=3, pretrained_file=str(tmp_path / "*" / "best.ckpt")
    )
    torch.testing.assert_close(newest.head.fc.weight, ema.head.fc.weight)  # the newer run, its EMA weights
    # an acamkd run holds a teacher and a student: the student is what a backbone is built from
    kd = {f"model.student.{k}": v for k, v in student.state_dict().items()}
    kd |= {f"model.teacher.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": kd}, tmp_path / "kd.ckpt")
    loaded = create_model("vit_pico_patch4_32", num_classes=3, pretrained_file=tmp_path / "kd.ckpt")
    torch.testing.assert_close(loaded.head.fc.weight, student.head.fc.weight)
    with pytest.raises(DataError, match="pretrained_file: no file matches"):
        create_model("vit_pico_patch4_32", pretrained_file=str(tmp_path / "nothing-*" / "best.ckpt"))
    with pytest.raises(DataError, match="pretrained_file .*missing.pt does not exist"):
        create_model("vit_pico_patch4_32", pretrained_file=tmp_path / "missing.pt")

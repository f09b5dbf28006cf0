"""ACAM-KD: the masked feature loss and the Dice diversity against hand computations, STCA-FF against
an explicit softmax(Q K^T / sqrt(d)) V, mask shapes and ranges, gradients that reach the student and
the distillation modules but never the frozen teacher (HorNet / ResNet teachers, ViT / CAS-ViT
students), the task's total loss, weights in and out, and bad settings."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from interplay.core.errors import ConfigError, DataError
from interplay.vision.models import create_model
from interplay.vision.modules.acamkd import (
    ACAMDistiller,
    ACAMKDClassificationTask,
    ACAMStage,
    STCAFusion,
    acamkd,
    dice_diversity,
    export_student,
    features_and_logits,
    logit_kd_loss,
    masked_feature_loss,
)
from interplay.vision.registry import REGISTRY

pytestmark = pytest.mark.filterwarnings("ignore:acamkd. the teacher .* has random weights")


def _loop_masked_loss(s, t, ms, mc):
    """The module docstring's L_s and L_c with explicit loops."""
    b_, c_, h_, w_ = t.shape
    m_ = ms.shape[1]
    spatial = channel = 0.0
    for b in range(b_):
        for m in range(m_):
            num_s = num_c = 0.0
            for c in range(c_):
                for h in range(h_):
                    for w in range(w_):
                        d = float(t[b, c, h, w] - s[b, c, h, w]) ** 2
                        num_s += float(ms[b, m, h, w]) * d
                        num_c += float(mc[b, m, c]) * d
            spatial += num_s / (c_ * float(ms[b, m].sum()))
            channel += num_c / (h_ * w_ * float(mc[b, m].sum()))
    return spatial / (b_ * m_), channel / (b_ * m_)


def test_masked_loss_hand_case():
    # one image, one channel-pair, a 1x2 map: errors 1 and 3 (squared 1 and 9) in channel 0, 0 in channel 1
    t = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]]])
    s = torch.zeros_like(t)
    ms = torch.tensor([[[[1.0, 0.0]], [[0.5, 0.5]]]])  # mask 0 keeps the left pixel, mask 1 both halves
    mc = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # mask 0 keeps channel 0, mask 1 both channels
    spatial, channel = masked_feature_loss(s, t, ms, mc, eps=0.0)
    # spatial: m0 = 1 / (2 * 1) = 0.5; m1 = (0.5 + 4.5) / (2 * 1) = 2.5 -> mean 1.5
    # channel: m0 = (1 + 9) / (2 * 1) = 5; m1 = 10 / (2 * 2) = 2.5 -> mean 3.75
    assert spatial.item() == pytest.approx(1.5)
    assert channel.item() == pytest.approx(3.75)


def test_masked_loss_matches_loops_and_ones_give_mse():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 2, 3, generator=g), torch.randn(2, 3, 2, 3, generator=g)
    ms, mc = torch.rand(2, 4, 2, 3, generator=g), torch.rand(2, 4, 3, generator=g)
    spatial, channel = masked_feature_loss(s, t, ms, mc, eps=0.0)
    want_s, want_c = _loop_masked_loss(s, t, ms, mc)
    assert spatial.item() == pytest.approx(want_s, rel=1e-5)
    assert channel.item() == pytest.approx(want_c, rel=1e-5)
    # all-ones masks weight every element alike: each term is the plain MSE
    sp, ch = masked_feature_loss(s, t, torch.ones(2, 4, 2, 3), torch.ones(2, 4, 3), eps=0.0)
    mse = F.mse_loss(s, t).item()
    assert sp.item() == pytest.approx(mse, rel=1e-6) and ch.item() == pytest.approx(mse, rel=1e-6)
    # scaling a mask does not change its term (normalised by the mask's mass)
    sp2, ch2 = masked_feature_loss(s, t, 0.1 * ms, 0.1 * mc, eps=0.0)
    assert sp2.item() == pytest.approx(spatial.item(), rel=1e-5)
    assert ch2.item() == pytest.approx(channel.item(), rel=1e-5)


def test_dice_diversity_hand_cases():
    disjoint = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.5]]])
    assert dice_diversity(disjoint).item() == pytest.approx(0.0, abs=1e-7)
    same = torch.tensor([[0.2, 0.9, 0.4]]).expand(2, 3, 3).contiguous()  # [B=2, M=3, N=3]
    assert dice_diversity(same).item() == pytest.approx(1.0, rel=1e-6)
    # a = (1, 1), b = (1, 0): 2 * 1 / (2 + 1) = 2/3 for both ordered pairs
    pair = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert dice_diversity(pair).item() == pytest.approx(2 / 3, rel=1e-6)
    assert dice_diversity(torch.rand(2, 1, 5)).item() == 0.0  # one mask: nothing to diversify
    # spatial masks [B, M, H, W] are flattened per mask
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0], maps[0, 1, 1] = 1.0, 1.0
    assert dice_diversity(maps).item() == pytest.approx(0.0, abs=1e-7)


def test_logit_kd_hand_value():
    zs, zt = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    t = 2.0
    ps, pt = (zs / t).softmax(-1), (zt / t).softmax(-1)
    want = t * t * float((pt * (pt.log() - ps.log())).sum())
    assert logit_kd_loss(zs, zt, t).item() == pytest.approx(want, rel=1e-6)
    assert logit_kd_loss(zt, zt, t).item() == pytest.approx(0.0, abs=1e-7)


def test_stca_fusion_is_teacher_query_cross_attention():
    torch.manual_seed(0)
    fusion = STCAFusion(teacher_channels=8, student_channels=6, heads=2).eval()
    teacher, student = torch.randn(2, 8, 2, 3), torch.randn(2, 6, 4, 2)  # different grids and widths
    out = fusion(teacher, student)
    assert out.shape == teacher.shape
    attn = fusion.attn
    qt = fusion.norm_t(teacher.flatten(2).transpose(1, 2))  # [B, 6, 8]
    ks = fusion.norm_s(student.flatten(2).transpose(1, 2))  # [B, 8, 6]
    q = qt @ attn.q_proj.weight.T + attn.q_proj.bias
    kv = ks @ attn.kv_proj.weight.T + attn.kv_proj.bias
    k, v = kv[..., :8], kv[..., 8:]
    want = torch.zeros(2, 6, 8)
    for b in range(2):
        for h in range(2):
            sl = slice(4 * h, 4 * h + 4)
            scores = q[b, :, sl] @ k[b, :, sl].T / math.sqrt(4)
            want[b, :, sl] = scores.softmax(-1) @ v[b, :, sl]
    want = want @ attn.out_proj.weight.T + attn.out_proj.bias
    torch.testing.assert_close(out, want.transpose(1, 2).reshape(2, 8, 2, 3), rtol=1e-5, atol=1e-5)
    # the fused map at a teacher position mixes student tokens only: moving the student's tokens
    # around (a permutation of its positions) leaves it unchanged
    perm = student.flatten(2)[:, :, torch.randperm(8)].reshape_as(student)
    torch.testing.assert_close(fusion(teacher, perm), out, rtol=1e-5, atol=1e-5)


def test_stage_masks_shapes_ranges_and_resize():
    torch.manual_seed(0)
    stage = ACAMStage(student_channels=5, teacher_channels=12, num_masks=3, heads=3)
    student, teacher = torch.randn(2, 5, 8, 8), torch.randn(2, 12, 4, 4)  # student stride 2x finer
    res = stage(student, teacher)
    assert res.spatial_masks.shape == (2, 3, 4, 4) and res.channel_masks.shape == (2, 3, 12)
    for m in (res.spatial_masks, res.channel_masks):
        assert float(m.detach().min()) > 0.0 and float(m.detach().max()) < 1.0
    assert res.fused.shape == teacher.shape
    aligned = stage.aligned(student, (4, 4))
    want = F.interpolate(stage.align(student), size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(aligned, want)
    spatial, channel = masked_feature_loss(aligned, teacher, res.spatial_masks, res.channel_masks)
    torch.testing.assert_close(res.feature_loss, spatial + channel)
    want_div = dice_diversity(res.spatial_masks) + dice_diversity(res.channel_masks)
    torch.testing.assert_close(res.diversity_loss, want_div)
    # a coarser student (upsampled to the teacher's grid) works as well
    assert stage(torch.randn(2, 5, 2, 2), teacher).feature_loss.isfinite()
    # the plain-MSE ablation: no masks, twice the MSE, no diversity term
    plain = ACAMStage(5, 12, masking=False)
    out = plain(student, teacher)
    mse = F.mse_loss(plain.aligned(student, (4, 4)), teacher)
    torch.testing.assert_close(out.feature_loss, 2 * mse)
    assert out.diversity_loss.item() == 0.0 and out.spatial_masks is None


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("vit_pico_patch4_32", {"depth": 3}),  # one run of the blocks
        ("hornet_tiny_7x7", {"depths": [1, 1, 1, 1]}),  # base-class forward_features: one pass
        ("casvit_xs", {}),  # own forward_features (final norm): two passes
    ],
)
def test_features_and_logits_match_the_backbone_api(name, params):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, **params).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps, logits = features_and_logits(model, x, [0, -1])
        want = model.forward_intermediates(x, indices=[0, len(model.feature_info) - 1])
        torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-5)
    for got, ref in zip(maps, want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_mask_terms_reach_the_student_only_when_asked():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 4, 4, requires_grad=True), torch.randn(2, 12, 4, 4)
    for flag in (False, True):
        stage = ACAMStage(5, 12, num_masks=3, mask_grad_to_student=flag)
        student.grad = None
        stage(student, teacher).diversity_loss.backward()  # the diversity term reads only the masks
        assert (student.grad is not None and student.grad.abs().sum() > 0) == flag
        assert stage.spatial_masks.proj.weight.grad.abs().sum() > 0  # the generators always learn


def _grad_check(model: ACAMDistiller, size: int):
    model.train()
    assert not model.teacher.training  # frozen teacher stays in eval mode under .train()
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    x = torch.randn(2, 3, size, size)
    out = model.distill(x, teacher_logits=True)
    loss = F.cross_entropy(out.logits, torch.tensor([0, 1])) + out.feature_loss + out.diversity_loss
    loss = loss + logit_kd_loss(out.logits, out.teacher_logits)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    missing = [n for n, p in model.student.named_parameters() if p.grad is None]
    assert not missing, f"student parameters without gradient: {missing[:5]}"
    missing = [n for n, p in model.stages.named_parameters() if p.grad is None]
    assert not missing, f"adapter / fusion / mask parameters without gradient: {missing[:5]}"
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    for k, v in model.teacher.state_dict().items():  # BatchNorm statistics included
        torch.testing.assert_close(v, teacher_before[k], msg=f"teacher {k} changed")
    return out


def test_gradients_reach_student_not_teacher_hornet_to_vit():
    torch.manual_seed(0)
    model = acamkd(
        num_classes=3,
        student="vit_pico_patch4_32",
        student_params={"depth": 2},
        teacher="hornet_tiny_7x7",
        teacher_params={"depths": [1, 1, 1, 1]},
        student_indices=[0, 1],
        teacher_indices=[0, 1],  # 8x8 <-> 8x8, then 8x8 -> resized to the teacher's 4x4
        num_masks=2,
    )
    out = _grad_check(model, 32)
    assert [tuple(s.spatial_masks.shape) for s in out.stages] == [(2, 2, 8, 8), (2, 2, 4, 4)]
    assert [tuple(s.channel_masks.shape) for s in out.stages] == [(2, 2, 64), (2, 2, 128)]


def test_gradients_reach_student_not_teacher_resnet_to_casvit():
    torch.manual_seed(0)
    teacher = create_model("resnet50", num_classes=3)
    student = create_model("casvit_xs", num_classes=3)
    model = ACAMDistiller(student, teacher, student_indices=[-1], teacher_indices=[2], num_masks=2)
    out = _grad_check(model, 32)  # casvit 1x1 at stride 32 -> resnet layer3 2x2 at stride 16
    assert out.stages[0].spatial_masks.shape == (2, 2, 2, 2)
    # evaluation runs the student alone
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), student(x))
    assert model.last is None


def test_task_total_loss_and_teacher_free_baseline():
    torch.manual_seed(0)
    model = acamkd(
        num_classes=3,
        student="vit_pico_patch4_32",
        student_params={"depth": 1, "img_size": 16},
        teacher="vit_pico_patch4_32",
        teacher_params={"depth": 2, "img_size": 16},
        num_masks=2,
    )
    task = ACAMKDClassificationTask(
        model,
        3,
        label_smoothing=0.0,
        feature_weight=0.5,
        diversity_weight=0.25,
        kd_weight=2.0,
        kd_temperature=3.0,
    )
    task.train()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    loss = task.step((x, y), "train")
    torch.manual_seed(1)
    out = model.distill(x, teacher_logits=True)
    want = (
        F.cross_entropy(out.logits, y)
        + 0.5 * out.feature_loss
        + 0.25 * out.diversity_loss
        + 2.0 * logit_kd_loss(out.logits, out.teacher_logits, 3.0)
    )
    torch.testing.assert_close(loss, want)
    assert model.last is None  # released after the step
    # validation: the student's cross-entropy only
    task.eval()
    with torch.no_grad():
        val = task.step((x, y), "val")
    torch.testing.assert_close(val, F.cross_entropy(model.student(x), y))
    # teacher=None is the plain student trained with cross-entropy
    alone = acamkd(num_classes=3, student="vit_pico_patch4_32", student_params={"img_size": 16}, teacher=None)
    assert alone.teacher is None and len(alone.stages) == 0
    task = ACAMKDClassificationTask(alone, 3, label_smoothing=0.0)
    task.train()
    loss = task.step((x, y), "train")
    torch.testing.assert_close(loss, F.cross_entropy(alone.student(x), y))


def test_weights_in_and_out(tmp_path):
    torch.manual_seed(0)
    trained = create_model("vit_pico_patch4_32", num_classes=3, depth=1, img_size=16)
    run = tmp_path / "runs" / "20260101-000000" / "checkpoints"
    run.mkdir(parents=True)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, run / "best-epoch001.ckpt"
    )
    older = tmp_path / "runs" / "20250101-000000" / "checkpoints"
    older.mkdir(parents=True)
    torch.save({"state_dict": {}}, older / "best-epoch009.ckpt")  # sorted first: never picked
    model = acamkd(
        num_classes=3,
        student="vit_pico_patch4_32",
        student_params={"depth": 1, "img_size": 16},
        teacher="vit_pico_patch4_32",
        teacher_params={"depth": 1, "img_size": 16},
        teacher_pretrained_file=str(tmp_path / "runs" / "*" / "checkpoints" / "best-*.ckpt"),
    )
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(model.teacher.state_dict()[k], v)
    # export the student of an acamkd run and load it back through create_model
    ckpt = tmp_path / "acamkd.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    path = export_student(ckpt, tmp_path / "student.safetensors")
    student = create_model("vit_pico_patch4_32", num_classes=3, depth=1, img_size=16, pretrained_file=path)
    for k, v in model.student.state_dict().items():
        torch.testing.assert_close(student.state_dict()[k], v)
    with pytest.raises(DataError, match="not an acamkd run"):
        export_student(run / "best-epoch001.ckpt", tmp_path / "x.pt")


def test_bad_settings_name_the_input(tmp_path):
    small = {"depth": 1, "img_size": 16}
    kw = dict(num_classes=3, student="vit_pico_patch4_32", student_params=small, teacher_params=small)
    with pytest.raises(DataError, match="teacher_pretrained_file"):
        acamkd(teacher="vit_pico_patch4_32", teacher_pretrained_file=str(tmp_path / "missing.ckpt"), **kw)
    with pytest.raises(DataError, match="no file matches"):
        acamkd(teacher="vit_pico_patch4_32", teacher_pretrained_file=str(tmp_path / "*.ckpt"), **kw)
    with pytest.raises(ConfigError, match="teacher_indices has 5"):
        acamkd(teacher="vit_pico_patch4_32", teacher_indices=[5], **kw)
    with pytest.raises(ConfigError, match="pair up"):
        acamkd(teacher="vit_pico_patch4_32", student_indices=[0, 0], teacher_indices=[0], **kw)
    with pytest.raises(ConfigError, match="teacher_params"):
        acamkd(**{**kw, "teacher_params": {"depht": 1}}, teacher="vit_pico_patch4_32")
    with pytest.raises(ConfigError, match="num_masks"):
        acamkd(teacher="vit_pico_patch4_32", num_masks=0, **kw)
    with pytest.raises(ConfigError, match="needs the 'acamkd' model"):
        ACAMKDClassificationTask(create_model("vit_pico_patch4_32", num_classes=3, **small), 3)
    model = acamkd(teacher="vit_pico_patch4_32", **kw)
    with pytest.raises(ConfigError, match="feature_weight"):
        ACAMKDClassificationTask(model, 3, feature_weight=-1.0)
    with pytest.raises(ValueError, match="student and teacher maps"):
        masked_feature_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 2, 2), None, None)


def test_registered_names():
    assert "acamkd" in REGISTRY.models
    assert "acamkd-classification" in REGISTRY.tasks

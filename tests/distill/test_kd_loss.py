"""KDLoss against an independent per-sample reference written with plain Python math."""

import math

import pytest
import torch
import torch.nn.functional as F

from wakeword_dist.distill import KDLoss, check_teacher_logits


def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def reference_loss(zs, zt, labels, hard, alpha, T, w_hard):
    """Loop over samples: (1-α)·CE + α·T²·KL(p_t‖p_s), weighted, summed, divided by B."""
    total_ce = total_kd = 0.0
    for i in range(len(zs)):
        w = w_hard if hard[i] else 1.0
        if labels[i] >= 0:
            total_ce += w * -math.log(_softmax(zs[i])[labels[i]])
        if zt is not None:
            ps = _softmax([v / T for v in zs[i]])
            pt = _softmax([v / T for v in zt[i]])
            total_kd += w * T * T * sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
    b = len(zs)
    ce, kd = total_ce / b, total_kd / b
    return (1 - alpha) * ce + alpha * kd, ce, kd


@pytest.mark.parametrize("alpha,T,w_hard", [(0.5, 2.0, 1.0), (0.9, 4.0, 3.0), (1.0, 1.0, 2.0), (0.0, 3.0, 0.5)])
def test_matches_reference(alpha, T, w_hard):
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(7, 4, generator=g, dtype=torch.float64) * 3
    zt = torch.randn(7, 4, generator=g, dtype=torch.float64) * 3
    labels = torch.tensor([0, 3, -1, 2, -1, 1, 0])
    hard = torch.tensor([False, True, True, False, False, True, False])
    out = KDLoss(alpha, T, w_hard)(zs.float(), zt.float(), labels, hard)
    ref, ref_ce, ref_kd = reference_loss(zs.tolist(), zt.tolist(), labels.tolist(), hard.tolist(), alpha, T, w_hard)
    assert out["loss"].item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert out["ce"].item() == pytest.approx(ref_ce, rel=1e-5, abs=1e-6)
    assert out["kd"].item() == pytest.approx(ref_kd, rel=1e-5, abs=1e-6)


def test_hand_computed_two_class():
    # Student logits (0, 0): p_s = (1/2, 1/2) at any T. Teacher (ln 3, 0) at T = 1: p_t = (3/4, 1/4).
    # CE(label 0) = ln 2; KL = 3/4·ln(3/2) + 1/4·ln(1/2) = 0.75·ln 1.5 − 0.25·ln 2.
    zs = torch.zeros(1, 2)
    zt = torch.tensor([[math.log(3.0), 0.0]])
    out = KDLoss(0.25, 1.0)(zs, zt, torch.tensor([0]), torch.tensor([False]))
    ce = math.log(2.0)
    kl = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert out["kd"].item() == pytest.approx(kl, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.75 * ce + 0.25 * kl, rel=1e-6)
    # T = 2 and teacher (2·ln 3, 0): same p_t, KD term scaled by T² = 4.
    out2 = KDLoss(0.25, 2.0)(zs, zt * 2, torch.tensor([0]), None)
    assert out2["kd"].item() == pytest.approx(4 * kl, rel=1e-6)


def test_alpha_zero_equals_cross_entropy_exactly():
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(33, 5, generator=g)
    labels = torch.randint(0, 5, (33,), generator=g)
    hard = torch.zeros(33, dtype=torch.bool)
    expected = F.cross_entropy(zs, labels)
    assert torch.equal(KDLoss(0.0, 2.0)(zs, None, labels, hard)["loss"], expected)
    assert torch.equal(KDLoss(0.0, 2.0, hard_negative_weight=4.0)(zs, None, labels, hard)["loss"], expected)
    zt = torch.randn(33, 5, generator=g)
    assert torch.equal(KDLoss(0.0, 2.0)(zs, zt, labels, hard)["loss"], expected)


def test_unlabelled_get_only_kd():
    g = torch.Generator().manual_seed(2)
    zs, zt = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    labels = torch.full((4,), -1)
    out = KDLoss(0.3, 2.0)(zs, zt, labels, None)
    assert out["ce"].item() == 0.0
    assert out["loss"].item() == pytest.approx(0.3 * out["kd"].item())
    # Changing an unlabelled sample's (nonexistent) label class cannot matter; CE grads are zero.
    zs.requires_grad_(True)
    KDLoss(0.0, 2.0)(zs, zt, labels, None)["loss"].backward()
    assert torch.count_nonzero(zs.grad) == 0


def test_hard_negative_weight_scales_both_terms():
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(1, 3, generator=g), torch.randn(1, 3, generator=g)
    y = torch.tensor([1])
    base = KDLoss(0.4, 3.0, hard_negative_weight=5.0)(zs, zt, y, torch.tensor([False]))
    hard = KDLoss(0.4, 3.0, hard_negative_weight=5.0)(zs, zt, y, torch.tensor([True]))
    for k in ("loss", "ce", "kd"):
        assert hard[k].item() == pytest.approx(5.0 * base[k].item(), rel=1e-6)


def test_bf16_inputs_give_float32_even_under_autocast():
    g = torch.Generator().manual_seed(4)
    zs = torch.randn(6, 4, generator=g).bfloat16().requires_grad_(True)
    zt = torch.randn(6, 4, generator=g).bfloat16()
    labels = torch.tensor([0, 1, 2, 3, -1, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = KDLoss(0.5, 2.0)(zs, zt, labels, None)
    for v in out.values():
        assert v.dtype == torch.float32 and v.dim() == 0
    ref, _, _ = reference_loss(zs.float().tolist(), zt.float().tolist(), labels.tolist(), [False] * 6, 0.5, 2.0, 1.0)
    assert out["loss"].item() == pytest.approx(ref, rel=1e-5)
    out["loss"].backward()
    assert zs.grad is not None and zs.grad.dtype == torch.bfloat16


def test_gradient_flows_to_student_only():
    zs = torch.randn(3, 3, requires_grad=True)
    zt = torch.randn(3, 3, requires_grad=True)
    KDLoss(0.5, 2.0)(zs, zt, torch.tensor([0, 1, 2]), None)["loss"].backward()
    assert zs.grad is not None and zt.grad is None


def test_validation_errors():
    with pytest.raises(ValueError, match="alpha"):
        KDLoss(1.5, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        KDLoss(-0.1, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(0.5, 0.0)
    zs = torch.randn(2, 3)
    with pytest.raises(ValueError, match="no teacher logits"):
        KDLoss(0.5, 2.0)(zs, None, torch.tensor([0, 1]), None)
    with pytest.raises(ValueError, match="labels"):
        KDLoss(0.0, 2.0)(zs, None, torch.tensor([0, 3]), None)
    with pytest.raises(ValueError, match="do not match"):
        KDLoss(0.5, 2.0)(zs, torch.randn(2, 4), torch.tensor([0, 1]), None)


def test_non_finite_teacher_logits_rejected():
    zt = torch.tensor([[1.0, float("inf")], [float("nan"), 0.0], [0.0, 1.0]])
    with pytest.raises(FloatingPointError, match="2 non-finite"):
        check_teacher_logits(zt)
    with pytest.raises(FloatingPointError, match="non-finite"):
        KDLoss(0.5, 2.0)(torch.zeros(3, 2), zt, torch.tensor([0, 1, 0]), None)
    check_teacher_logits(torch.zeros(3, 2))  # finite: no error

"""Distillation loss: cross-entropy on labels plus temperature-scaled KL to the teacher.

Per sample i (weights w_i = hard_negative_weight for hard negatives, else 1; m_i = 1 if labelled):

    ce_i = m_i · w_i · CE(z_s,i, y_i)
    kd_i =       w_i · T² · KL(softmax(z_t,i / T) ‖ softmax(z_s,i / T))
    loss = (1 − α) · Σ_i ce_i / B  +  α · Σ_i kd_i / B

The batch mean divides by B, the number of samples in the batch (labelled or not), so every sample
counts once whatever the labelled fraction, and per-rank losses of equal-size batches average
cleanly across ranks. With every sample labelled and weight 1, Σ ce_i / B is exactly
``F.cross_entropy(z_s, y)`` (that call is used for it), so α = 0 reproduces plain cross-entropy
bit for bit. Unlabelled samples (y = −1) get only the KD term. T² keeps the KD gradient scale
independent of T (Hinton et al., 2015). Everything is computed in float32 with autocast off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNLABELLED = -1


def check_teacher_logits(teacher_logits: Tensor) -> None:
    """Raise ``FloatingPointError`` if any teacher logit is NaN or ±inf (e.g. fp16 overflow)."""
    bad = ~torch.isfinite(teacher_logits)
    n_bad = int(bad.sum())
    if n_bad:
        rows = int(bad.any(dim=-1).sum()) if teacher_logits.dim() > 1 else n_bad
        raise FloatingPointError(
            f"teacher logits contain {n_bad} non-finite values (NaN/inf) in {rows} of "
            f"{teacher_logits.shape[0]} samples; a half-precision teacher probably overflowed "
            f"— try dtype='bf16' or 'fp32'"
        )


class KDLoss(nn.Module):
    """Weighted CE + α·T²·KL distillation loss (formula in the module docstring).

    Args:
        alpha: α ∈ [0, 1], weight of the KD term (0 = plain CE baseline).
        temperature: T > 0, softens both distributions in the KD term.
        hard_negative_weight: w ≥ 0 multiplying both terms of hard-negative samples.
    """

    def __init__(self, alpha: float, temperature: float, hard_negative_weight: float = 1.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not hard_negative_weight >= 0.0:
            raise ValueError(f"hard_negative_weight must be >= 0, got {hard_negative_weight}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.hard_negative_weight = float(hard_negative_weight)

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None,
        labels: Tensor,
        hard_negative: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """
        Args:
            student_logits: (B, C), any float dtype.
            teacher_logits: (B, C) or None. None is allowed only when α = 0 (baseline job).
            labels: (B,) int64 class ids, −1 = unlabelled.
            hard_negative: (B,) bool, or None (no hard negatives).
        Returns:
            dict of float32 scalars: ``loss``, ``ce`` (Σ ce_i / B) and ``kd`` (Σ kd_i / B, zero
            when there is no teacher); loss = (1 − α)·ce + α·kd.
        """
        if student_logits.dim() != 2:
            raise ValueError(f"student_logits must be (B, C), got {tuple(student_logits.shape)}")
        b, c = student_logits.shape
        if labels.shape != (b,):
            raise ValueError(f"labels must be ({b},), got {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < UNLABELLED or labels.max() >= c):
            raise ValueError(f"labels must be in [-1, {c - 1}], got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        if teacher_logits is None and self.alpha > 0:
            raise ValueError(
                f"KDLoss has alpha={self.alpha} > 0 but got no teacher logits; refusing to "
                "silently train without the teacher (use alpha=0 for the baseline)"
            )
        if teacher_logits is not None and teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match student "
                             f"logits {tuple(student_logits.shape)}")
        if hard_negative is not None and hard_negative.shape != (b,):
            raise ValueError(f"hard_negative must be ({b},), got {tuple(hard_negative.shape)}")

        with torch.autocast(device_type=student_logits.device.type, enabled=False):
            z_s = student_logits.float()
            labelled = labels != UNLABELLED
            weight = torch.ones(b, dtype=torch.float32, device=z_s.device)
            if hard_negative is not None and self.hard_negative_weight != 1.0:
                weight = torch.where(hard_negative.to(z_s.device, torch.bool),
                                     torch.tensor(self.hard_negative_weight, device=z_s.device), weight)
            plain = bool(labelled.all()) and bool((weight == 1.0).all())

            # Cross-entropy term.
            if b == 0 or not bool(labelled.any()):
                ce = z_s.sum() * 0.0  # keeps the graph connected; no labelled sample
            elif plain:
                ce = F.cross_entropy(z_s, labels)
            else:
                ce_i = F.cross_entropy(z_s, labels.clamp_min(0), reduction="none")
                ce = (ce_i * weight * labelled.float()).sum() / b

            # Distillation term.
            if teacher_logits is None:
                kd = torch.zeros((), dtype=torch.float32, device=z_s.device)
            else:
                z_t = teacher_logits.detach().float()
                check_teacher_logits(z_t)
                t = self.temperature
                log_p_s = F.log_softmax(z_s / t, dim=-1)
                log_p_t = F.log_softmax(z_t / t, dim=-1)
                kl_i = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1)  # (B,)
                kd = (t * t) * (kl_i * weight).sum() / max(b, 1)

            if self.alpha == 0.0:
                loss = ce
            elif self.alpha == 1.0:
                loss = kd
            else:
                loss = (1.0 - self.alpha) * ce + self.alpha * kd
        return {"loss": loss, "ce": ce, "kd": kd}

"""Distillation losses."""

from .loss import KDLoss, check_teacher_logits

__all__ = ["KDLoss", "check_teacher_logits"]

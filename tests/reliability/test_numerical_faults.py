"""Numerical faults: a NaN/inf loss, gradient or teacher logit never reaches the weights.

A non-finite loss or gradient norm skips the step on every rank (counted in
`train/nonfinite_skipped`); `train.max_nonfinite_steps` in a row stop the run with exit 1 and the
last good checkpoint kept. Faults are injected with forward / gradient hooks on the real recipe,
with `train.lr=1e30`, and with real teachers: one saved with a NaN weight, one whose fp16 logits
overflow.
"""

from __future__ import annotations

import math

import pytest
import torch
from reliability_helpers import CI_TINY, run_cli, teacher_variant

from tests.conftest import tiny_overrides
from wakeword_dist.config import load_config
from wakeword_dist.errors import TrainingFailed
from wakeword_dist.models.teacher import load_teacher
from wakeword_dist.train.checkpoint import complete_checkpoints, read_train_state
from wakeword_dist.train.recipe import Recipe
from wakeword_dist.train.run_logger import read_metrics

NAN = float("nan")


def _cfg(shards, runs, **extra):
    return load_config(CI_TINY, tiny_overrides(shards, runs, **{
        "train.job": "baseline", "train.eval_every": 0, "logging.wandb": "disabled", **extra}))


def _params(module) -> dict:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _finite(params: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in params.values())


class Fault:
    """Injects NaN at chosen steps (0-based index of the step being taken) into the student's
    output ("loss") or its first parameter's gradient ("grad"), and snapshots the weights before
    and after each faulty step."""

    def __init__(self, recipe: Recipe, where: str, steps):
        self.recipe, self.steps = recipe, set(steps)
        self.student = recipe.accelerator.unwrap_model(recipe.model)
        self.before: dict[int, dict] = {}
        self.after: dict[int, dict] = {}
        self.student.register_forward_hook(self._forward)
        if where == "grad":
            next(self.student.parameters()).register_hook(self._grad)
        self.where = where

    def _forward(self, module, args, output):
        if not module.training:
            return None
        step = self.recipe.step
        if step - 1 in self.before:
            self.after[step - 1] = _params(module)
        if step in self.steps:
            self.before[step] = _params(module)
            if self.where == "loss":
                return output * NAN
        return None

    def _grad(self, grad):
        return grad * NAN if self.recipe.step in self.steps else grad


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_one_nonfinite_step_is_skipped_counted_and_leaves_the_weights(tiny_shards, tmp_path, where):
    cfg = _cfg(tiny_shards, tmp_path, **{"train.max_steps": 4})
    recipe = Recipe(cfg).setup()
    try:
        fault = Fault(recipe, where, steps=[1])
        result = recipe.train()
        final = _params(fault.student)
    finally:
        recipe.cleanup()
    assert result["step"] == 4, "the run goes on after a skipped step"
    assert _same(fault.before[1], fault.after[1]), "a skipped step must not move the weights"
    assert _finite(final)
    rows = {m["step"]: m for m in read_metrics(cfg.job_dir()) if "train/loss" in m}
    assert [rows[s]["train/nonfinite_skipped"] for s in (1, 2, 3, 4)] == [0.0, 1.0, 0.0, 0.0]
    assert read_train_state(complete_checkpoints(cfg.job_dir() / "checkpoints")[-1])["nonfinite_in_row"] == 0


def test_nonfinite_gradient_is_caught_without_grad_clip(tiny_shards, tmp_path):
    cfg = _cfg(tiny_shards, tmp_path, **{"train.max_steps": 3, "train.grad_clip": 0.0})
    recipe = Recipe(cfg).setup()
    try:
        fault = Fault(recipe, "grad", steps=[1])
        recipe.train()
        final = _params(fault.student)
    finally:
        recipe.cleanup()
    assert _finite(final), "a NaN gradient reached the weights"
    rows = {m["step"]: m for m in read_metrics(cfg.job_dir()) if "train/loss" in m}
    assert rows[2]["train/nonfinite_skipped"] == 1.0


def test_nonfinite_steps_in_a_row_stop_the_run_keeping_the_last_good_checkpoint(tiny_shards, tmp_path):
    cfg = _cfg(tiny_shards, tmp_path, **{"train.max_nonfinite_steps": 3, "train.checkpoint_every": 4})
    recipe = Recipe(cfg).setup()
    try:
        Fault(recipe, "loss", steps=range(4, 100))
        with pytest.raises(TrainingFailed, match=r"3 non-finite steps in a row \(train.max_nonfinite_steps\); "
                                                 r"the last good checkpoint is kept"):
            recipe.train()
    finally:
        recipe.cleanup()
    ckpts = complete_checkpoints(cfg.job_dir() / "checkpoints")
    assert [p.name for p in ckpts] == ["step-00000004"], "nothing saved after the faults began"
    from safetensors.torch import load_file

    assert _finite(load_file(str(ckpts[0] / "model.safetensors")))
    assert read_train_state(ckpts[0])["nonfinite_in_row"] == 0
    assert max(m["step"] for m in read_metrics(cfg.job_dir())) == 6, "step 7 raises before its log line"
    assert not (cfg.job_dir() / "final.json").exists()


@pytest.mark.parametrize("lr", [1e30, 1e38])
def test_learning_rate_overflow_stops_with_exit_1(tiny_shards, tmp_path, capsys, lr):
    args = ["train", "--config", str(CI_TINY), *tiny_overrides(tiny_shards, tmp_path, **{
        "train.job": "baseline", "train.eval_every": 0, "logging.wandb": "disabled",
        "train.lr": lr, "train.max_nonfinite_steps": 2})]
    code, lines = run_cli(capsys, args)
    assert code == 1 and len(lines) == 1, lines
    run_dir = tmp_path / "ci_tiny" / "baseline" / "seed0"
    if lr == 1e30:  # step 1 is finite, its update overflows the weights: then skipped steps
        assert "2 non-finite steps in a row (train.max_nonfinite_steps)" in lines[0]
        rows = [m for m in read_metrics(run_dir) if "train/loss" in m]
        assert [m["train/nonfinite_skipped"] for m in rows] == [0.0, 1.0], "step 1 fine, then one skip logged"
    else:  # AdamW's step size lr / (1 - beta1) is not a float32 any more: torch raises at step 1
        assert "value cannot be converted to type float without overflow" in lines[0]
    assert not complete_checkpoints(run_dir / "checkpoints")


# ----------------------------------------------------------------------------- teacher logits
def _distill(shards, runs, teacher_dir, **extra):
    return _cfg(shards, runs, **{"train.job": "distill", "teacher.name_or_path": str(teacher_dir), **extra})


class LossSpy:
    """Wraps the recipe's loss: records the teacher logits it was given."""

    def __init__(self, loss_fn):
        self.loss_fn, self.teacher_logits = loss_fn, []

    def __call__(self, student_logits, teacher_logits, *args, **kw):
        self.teacher_logits.append(teacher_logits)
        return self.loss_fn(student_logits, teacher_logits, *args, **kw)


@pytest.mark.parametrize("fault", ["nan", "fp16-overflow"])
def test_nonfinite_teacher_logits_never_reach_the_loss_or_the_weights(tiny_shards, tiny_teacher_dir, tmp_path,
                                                                      capsys, fault):
    """What the step does (train/step.py): no error; the loss is never called, the step is
    skipped (NaN losses, counted once in a row), AdamW never steps and no gradient is left; the
    LR schedule still moves on (a skipped step is a step of the run, as on resume)."""
    cfg = _distill(tiny_shards, tmp_path, tiny_teacher_dir)
    recipe = Recipe(cfg).setup()
    try:
        if fault == "nan":
            good = recipe.teacher_fn
            recipe.teacher_fn = lambda audio: good(audio) * NAN
        else:  # a real fp16 teacher whose head outgrows fp16 on training audio
            hot = teacher_variant(tiny_teacher_dir, tmp_path / "hot_teacher", scale=1e4)
            recipe.teacher_fn = load_teacher(hot, label_names=recipe.label_names, dtype="fp16")
        spy = recipe.loss_fn = LossSpy(recipe.loss_fn)
        student = recipe.accelerator.unwrap_model(recipe.model)
        before = _params(student)
        schedule_before = recipe.scheduler.last_epoch
        batch = next(iter(recipe.train_loader_for_epoch(0)))
        recipe.nonfinite_in_row = 0  # set by train(), which this test bypasses
        capsys.readouterr()
        out = recipe._train_step(batch)
        printed = capsys.readouterr().out
        adam_state = len(recipe.optimizer.optimizer.state)
        grads = [p.grad for p in student.parameters()]
    finally:
        recipe.cleanup()
    assert spy.teacher_logits == [], "the loss was called on a step with non-finite teacher logits"
    assert out["train/nonfinite_skipped"] == 1.0
    assert all(math.isnan(out[k]) for k in ("train/loss", "train/ce_loss", "train/kd_loss")), out
    assert recipe.nonfinite_in_row == 1, "the skipped step is counted"
    assert "step 1: non-finite teacher logits" in printed, printed
    assert "step 1: non-finite loss or gradient, step skipped (1 in a row)" in printed, printed
    assert _same(before, _params(student)), "a skipped step must not move the weights"
    assert adam_state == 0, "AdamW stepped on a skipped step"
    assert all(g is None for g in grads), "a skipped step left gradients behind"
    assert recipe.scheduler.last_epoch == schedule_before + 1


def test_transient_nonfinite_teacher_logits_skip_the_step_and_training_goes_on(tiny_shards, tiny_teacher_dir,
                                                                              tmp_path):
    cfg = _distill(tiny_shards, tmp_path, tiny_teacher_dir, **{"train.max_steps": 4})
    recipe = Recipe(cfg).setup()
    try:
        good = recipe.teacher_fn
        recipe.teacher_fn = lambda audio: good(audio) * (NAN if recipe.step == 1 else 1.0)
        result = recipe.train()
    finally:
        recipe.cleanup()
    assert result["step"] == 4
    rows = {m["step"]: m for m in read_metrics(cfg.job_dir()) if "train/loss" in m}
    assert rows[2]["train/nonfinite_skipped"] == 1.0 and math.isfinite(rows[4]["train/loss"])


def test_teacher_with_a_nan_weight_is_refused_before_any_step(tiny_shards, tiny_teacher_dir, tmp_path, capsys):
    broken = teacher_variant(tiny_teacher_dir, tmp_path / "nan_teacher", nan=True)
    args = ["train", "--config", str(CI_TINY), *tiny_overrides(tiny_shards, tmp_path / "runs", **{
        "train.job": "distill", "teacher.name_or_path": str(broken), "logging.wandb": "disabled"})]
    code, lines = run_cli(capsys, args)
    assert code == 1
    assert len(lines) == 1 and "non-finite" in lines[0] and str(broken) in lines[0], lines
    assert not (tmp_path / "runs" / "ci_tiny" / "distill" / "seed0" / "metrics.jsonl").exists()

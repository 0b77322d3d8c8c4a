"""The benchmark times the recipe's own step: `BenchStep.step` on the recipe's batches gives
exactly the recipe's losses and weights (same initial weights, same batches, same step indexes)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO, tiny_overrides
from wakeword_dist.bench.workloads import BenchStep
from wakeword_dist.config import load_config
from wakeword_dist.train.recipe import Recipe


@pytest.mark.parametrize("job", ["baseline", "distill"])
def test_bench_step_yields_the_recipe_losses_and_weights(tiny_shards, tiny_teacher_dir, tmp_path, job):
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", tiny_overrides(tiny_shards, tmp_path, **{
        "train.job": job, "teacher.name_or_path": str(tiny_teacher_dir), "logging.wandb": "disabled"}))
    recipe = Recipe(cfg).setup()
    try:
        acc = recipe.accelerator
        student = acc.unwrap_model(recipe.model)
        batches = iter(recipe.train_loader_for_epoch(0))
        first = next(batches)
        bench = BenchStep(cfg, recipe.label_names, acc.device, len(first["key"]), cfg.train.mixed_precision,
                          teacher=recipe.teacher_fn if job == "distill" else None, accelerator=acc)
        bench_student = acc.unwrap_model(bench.model)
        bench_student.load_state_dict(student.state_dict())  # same initial weights (the recipe fitted CMVN)
        for step, batch in enumerate([first, next(batches)]):  # two steps: the schedule and AdamW state move
            rng = torch.get_rng_state()  # SpecAugment and dropout draw from the global generator
            recipe.step = step
            ours = recipe._train_step(batch)
            torch.set_rng_state(rng)
            theirs = bench.step(batch)
            assert bench.n == step + 1
            assert theirs.finite and ours["train/nonfinite_skipped"] == 0.0
            assert theirs.loss == ours["train/loss"] and theirs.ce == ours["train/ce_loss"], (step, theirs, ours)
            if job == "distill":
                assert theirs.kd == ours["train/kd_loss"] and theirs.kd > 0
            else:
                assert theirs.kd == 0.0
        for (name, a), b in zip(student.state_dict().items(), bench_student.state_dict().values()):
            assert torch.equal(a, b), name
        assert bench.parts.scheduler.get_last_lr() == recipe.scheduler.get_last_lr()
    finally:
        recipe.cleanup()


def test_bench_step_on_its_own_batch_counts_steps_and_runs_ahead():
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", ["data.root=/nonexistent", "augment.noise_prob=0.5"])
    labels = ["negative", "hey_nova"]
    teacher = torch.nn.Sequential(torch.nn.Linear(cfg.data.clip_samples, len(labels)))
    serial = BenchStep(cfg, labels, "cpu", 4, "no", teacher=teacher)
    ahead = BenchStep(cfg, labels, "cpu", 4, "no", teacher=teacher, overlap=True)
    assert serial.batch["audio"].shape == (4, cfg.data.clip_samples) and serial.batch["audio"].device.type == "cpu"
    torch.manual_seed(0)
    a = [serial.step() for _ in range(3)]
    torch.manual_seed(0)
    b = [ahead.step() for _ in range(3)]
    # the same batch every step: the teacher launched ahead saw exactly what the serial one sees
    assert [r.loss for r in a] == [r.loss for r in b] and all(r.finite for r in a)
    assert ahead.parts.ahead.take(3) is not None, "step 2 launched the teacher for step 3"
    with pytest.raises(ValueError, match="overlap=True needs a teacher"):
        BenchStep(cfg, labels, "cpu", 4, "no", overlap=True)

"""Cached-logit distillation (annotate -> train distill.mode=cached) and the ZeRO-3 teacher
placement through the real recipe and launcher."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, tiny_overrides
from tests.train.test_ddp_launch import accelerate_launch
from wakeword_dist.cli import main
from wakeword_dist.models.hub import read_config
from wakeword_dist.train.run_logger import read_metrics


def _args(stage, shards, runs, teacher_dir, **extra):
    overrides = tiny_overrides(shards, runs, **{"teacher.name_or_path": str(teacher_dir),
                                               "logging.wandb": "disabled", **extra})
    return [stage, "--config", str(REPO / "configs" / "ci_tiny.yaml"), *overrides]


def test_annotate_then_cached_distill(tiny_shards, tiny_teacher_dir, tmp_path, capsys):
    assert main(_args("annotate", tiny_shards, tmp_path, tiny_teacher_dir)) == 0
    annotated = tmp_path / "ci_tiny" / "annotated" / "train"
    index = json.loads((annotated / "index.json").read_text())
    assert index["teacher"]["name_or_path"] == str(tiny_teacher_dir)
    assert index["num_samples"] == json.loads((tiny_shards / "train" / "index.json").read_text())["num_samples"]

    assert main(_args("train", tiny_shards, tmp_path, tiny_teacher_dir,
                      **{"distill.mode": "cached", "train.max_steps": 3})) == 0
    rows = [m for m in read_metrics(tmp_path / "ci_tiny" / "distill" / "seed0") if "train/kd_loss" in m]
    assert len(rows) == 3 and all(m["train/kd_loss"] > 0 for m in rows)
    final = json.loads((tmp_path / "ci_tiny" / "distill" / "seed0" / "final.json").read_text())
    assert final["placement"]["placement"] == "cached"
    # best/'s card names the teacher behind the cached logits and the annotated split trained on
    training = read_config(tmp_path / "ci_tiny" / "distill" / "seed0" / "best")["training"]
    assert training["teacher"] == {k: index["teacher"][k] for k in ("name_or_path", "weights_sha256")}
    assert str(annotated) in training["dataset"]


def test_cached_logits_from_another_teacher_are_refused(tiny_shards, tiny_teacher_dir, tmp_path, capsys):
    from wakeword_dist.models.teacher import build_teacher_from_scratch
    from wakeword_dist.train.best_store import save_teacher_dir
    from wakeword_dist.train.teacher_setup import wav2vec2_conv_stack

    assert main(_args("annotate", tiny_shards, tmp_path, tiny_teacher_dir)) == 0
    labels = json.loads((tiny_shards / "train" / "index.json").read_text())["label_names"]
    other = build_teacher_from_scratch(labels, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, **wav2vec2_conv_stack(16))
    save_teacher_dir(other, tmp_path / "other_teacher")
    capsys.readouterr()
    code = main(_args("train", tiny_shards, tmp_path, tmp_path / "other_teacher", **{"distill.mode": "cached"}))
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights" in err and "annotated/train/index.json" in err
    assert not (tmp_path / "ci_tiny" / "distill" / "seed0" / "checkpoints").exists()


@pytest.mark.multiprocess
@pytest.mark.slow
def test_zero3_teacher_over_two_ranks(tiny_shards, tiny_teacher_dir, tmp_path):
    overrides = tiny_overrides(tiny_shards, tmp_path, **{
        "teacher.name_or_path": str(tiny_teacher_dir), "train.job": "distill", "teacher.placement": "zero3",
        "train.max_steps": 3, "logging.wandb": "disabled"})
    proc = accelerate_launch([str(REPO / "launch" / "train.py"), "--config", str(REPO / "configs" / "ci_tiny.yaml"),
                              *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((tmp_path / "ci_tiny" / "distill" / "seed0" / "final.json").read_text())
    placement = final["placement"]
    assert final["world_size"] == 2 and placement["placement"] == "zero3"
    assert placement["zero3_local_param_numel"] <= placement["param_numel"] / 2 + 1000
    rows = [m for m in read_metrics(tmp_path / "ci_tiny" / "distill" / "seed0") if "train/kd_loss" in m]
    assert len(rows) == 3 and all(m["train/kd_loss"] > 0 for m in rows)

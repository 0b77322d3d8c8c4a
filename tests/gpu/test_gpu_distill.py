"""A short real distillation run on the GPU: recipe, CUDA teacher in bf16, bf16 student autocast."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]


def _shards(root: Path) -> str:
    """espeak-ng data when the binary is there, else the tone/noise stand-in (same layout)."""
    if shutil.which("espeak-ng"):
        from wakeword_dist.data.synth import make_tiny_dataset

        make_tiny_dataset(root, seed=0)
        return "espeak-ng"
    from wakeword_dist.bench.toy_data import make_tone_dataset

    make_tone_dataset(root, train=256, val=64, test=64, background=16, streams=2)
    return "toy-tones"


@pytest.mark.parametrize("overlap", [False, True], ids=["serial", "teacher_ahead"])
def test_short_distill_run_on_cuda(tmp_path, overlap):
    for module in ("soundfile", "torchaudio", "yaml"):
        pytest.importorskip(module)
    from wakeword_dist.config import load_config
    from wakeword_dist.data.reader import read_index
    from wakeword_dist.models.teacher import build_teacher_from_scratch
    from wakeword_dist.train.components import save_teacher_dir
    from wakeword_dist.train.recipe import Recipe

    shards = tmp_path / "shards"
    source = _shards(shards)
    labels = read_index(shards / "train")["label_names"]
    torch.manual_seed(0)
    hf = build_teacher_from_scratch(labels, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=128, conv_dim=(32, 32, 32))
    teacher_dir = save_teacher_dir(hf, tmp_path / "teacher")
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", [
        f"data.root={shards}", f"run.runs_dir={tmp_path / 'runs'}", f"teacher.name_or_path={teacher_dir}",
        "train.job=distill", "teacher.dtype=bf16", "train.mixed_precision=bf16", "logging.wandb=disabled",
        "data.batch_size=64", "train.batches_per_epoch=8", "train.epochs=2", "train.eval_every=8",
        "train.checkpoint_every=16", f"distill.overlap_teacher={str(overlap).lower()}"])
    recipe = Recipe(cfg).setup()
    try:
        assert recipe.accelerator.device.type == "cuda"
        assert next(recipe.teacher.parameters()).device.type == "cuda"
        assert recipe.teacher.param_dtype == torch.bfloat16
        result = recipe.train()
    finally:
        recipe.cleanup()
    assert result["step"] == 16
    metrics = [json.loads(line) for line in (cfg.job_dir() / "metrics.jsonl").read_text().splitlines()]
    kd = [m["train/kd_loss"] for m in metrics if "train/kd_loss" in m]
    assert len(kd) == 16 and all(math.isfinite(v) and v >= 0 for v in kd), kd
    final = json.loads((cfg.job_dir() / "final.json").read_text())
    assert final["completed"] and final["placement"]["placement"] == "replicate"
    assert final["placement"]["overlap_teacher"] is overlap
    print(f"distill (overlap_teacher={overlap}) on {source} shards: kd loss {kd[0]:.4f} -> {kd[-1]:.4f}, val {final['final_val']}")

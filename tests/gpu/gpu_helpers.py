"""Shared helpers of tests/gpu (run by launch/gpu_check.sh on a CUDA machine; skipped elsewhere)."""

from __future__ import annotations

import copy

import torch

LABELS = ["negative", "hey_nova", "other"]
# wav2vec2-base layout (7 convs, stride 320 -> 49 frames/s; positional conv 128 taps / 16 groups)
# at reduced widths, so each test builds its teacher in well under a second.
SMALL_W2V2 = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                  conv_dim=(128,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def teacher(dtype: str = "fp32", device="cuda", seed: int = 0, **arch):
    """A frozen random-init ``TeacherModel`` (``SMALL_W2V2`` unless ``arch`` given) on ``device``."""
    from wakeword_dist.models.teacher import TeacherModel, build_teacher_from_scratch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = build_teacher_from_scratch(LABELS, **(arch or SMALL_W2V2))
    return TeacherModel(hf, label_names=LABELS, name_or_path="gpu-test", dtype=dtype).freeze().to(device)


def recast(t, dtype: str):
    """A deep copy of a frozen teacher in another dtype."""
    from wakeword_dist.models.teacher import DTYPES

    out = copy.deepcopy(t)
    out.dtype_name = dtype
    return out.to(DTYPES[dtype])


def audio(batch: int = 8, samples: int = 16000, seed: int = 1, device="cuda") -> torch.Tensor:
    return (0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))).to(device)


def rel(z: torch.Tensor, ref: torch.Tensor) -> float:
    """max |z - ref| / max |ref| (the benchmark's logit-error measure)."""
    return float((z.float() - ref.float()).abs().max() / ref.float().abs().max())


class NoTF32:
    """True fp32 on the GPU for reference logits."""

    def __enter__(self):
        self.old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.old
        return False


# --------------------------------------------------------------------------- short real runs
def run_inputs(work):
    """Shards and a small saved HF teacher under ``work`` for the short runs of the GPU check, made
    once and reused. The data is the tone/noise set of ``bench/toy_data.py`` (the shard layout of
    real data, written in ~2 s with no TTS engine: the check is about device code paths, and the
    GPU machine has no espeak-ng). Returns ``(shards, teacher_dir, source)``."""
    import json
    from pathlib import Path

    from wakeword_dist.bench.toy_data import make_tone_dataset
    from wakeword_dist.data.reader import read_index
    from wakeword_dist.models.teacher import build_teacher_from_scratch
    from wakeword_dist.train.best_store import save_teacher_dir

    work = Path(work)
    shards, teacher_dir, done = work / "shards", work / "teacher", work / "inputs.json"
    if done.is_file():
        return shards, teacher_dir, json.loads(done.read_text())["source"]
    make_tone_dataset(shards, train=256, val=64, test=64, background=16, streams=2)
    labels = read_index(shards / "train")["label_names"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = build_teacher_from_scratch(labels, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=128, conv_dim=(32, 32, 32))
    save_teacher_dir(hf, teacher_dir)
    done.write_text(json.dumps({"source": "toy-tones"}))
    return shards, teacher_dir, "toy-tones"


def run_overrides(shards, teacher_dir, runs, *, steps: int, batch: int, **extra) -> list[str]:
    """configs/ci_tiny.yaml overrides for a short online distillation of ``steps`` steps (two
    epochs, a validation after the first, a checkpoint at the end) of ``batch`` clips."""
    per_epoch = max(1, steps // 2)
    items = {"data.root": shards, "run.runs_dir": runs, "teacher.name_or_path": teacher_dir, "train.job": "distill",
             "logging.wandb": "disabled", "data.batch_size": batch, "train.batches_per_epoch": per_epoch,
             "train.epochs": 2, "train.eval_every": per_epoch, "train.checkpoint_every": 2 * per_epoch, **extra}
    def text(v) -> str:  # overrides are YAML: the string "no" (mixed_precision) would read as False
        if isinstance(v, bool):
            return str(v).lower()
        return f"'{v}'" if str(v).lower() in ("no", "yes", "on", "off") else str(v)
    return [f"{k}={text(v)}" for k, v in items.items()]


def summarize_run(run_dir) -> dict:
    """Figures of a finished run folder: steps, KD losses, throughput, skipped steps, placement."""
    import json
    import math
    from pathlib import Path

    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [m for m in rows if "train/loss" in m]
    kd = [m["train/kd_loss"] for m in train if "train/kd_loss" in m]
    final = json.loads((run_dir / "final.json").read_text())
    speeds = [m["train/clips_per_s"] for m in train if "train/clips_per_s" in m]
    return {"steps": final.get("step"), "completed": final.get("completed"), "world_size": final.get("world_size"),
            "placement": final.get("placement"), "kd_loss_first": kd[0] if kd else None,
            "kd_loss_last": kd[-1] if kd else None, "kd_steps": len(kd),
            "kd_all_finite": all(math.isfinite(v) and v >= 0 for v in kd),
            "nonfinite_skipped": sum(m.get("train/nonfinite_skipped", 0.0) for m in train),
            "clips_per_s_median": sorted(speeds)[len(speeds) // 2] if speeds else None,
            "final_val": final.get("final_val")}

"""Shared fixtures. CPU only; real libraries (WebDataset, HF transformers, Accelerate, wandb offline).

Test tiers (markers, see pyproject.toml):
- unit (no marker): pure functions and single modules, milliseconds to a few seconds.
- multiprocess: several processes -- gloo ranks via `accelerate launch` / debug_launcher,
  the SLURM cluster. They assert the world size they expect.
- slow: more than ~20 s on 2 cores (end-to-end stages).
- gpu: needs CUDA; skipped here, run by `launch/gpu_check.sh` on a GPU machine.
Select with `-m "not slow"` etc. The whole suite runs in `bash launch/test.sh`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (run launch/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """The tiny synthetic dataset (espeak-ng), made once per session: train/val/test/stream/background."""
    from wakeword_dist.data.synth import make_tiny_dataset

    root = tmp_path_factory.mktemp("shards") / "tiny"
    make_tiny_dataset(root, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory, tiny_shards) -> Path:
    """A tiny Wav2Vec2 classifier saved with save_pretrained, loaded by path like a hub model."""
    import json

    from wakeword_dist.models.teacher import build_teacher_from_scratch
    from wakeword_dist.train.best_store import save_teacher_dir
    from wakeword_dist.train.teacher_setup import wav2vec2_conv_stack

    labels = json.loads((tiny_shards / "train" / "index.json").read_text())["label_names"]
    model = build_teacher_from_scratch(labels, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, **wav2vec2_conv_stack(16))
    out = tmp_path_factory.mktemp("teacher") / "tiny_w2v2"
    save_teacher_dir(model, out)
    return out


def tiny_overrides(shards: Path, runs: Path, **extra) -> list[str]:
    """Overrides that point configs/ci_tiny.yaml at a test's own shards and run folder."""
    items = {"data.root": str(shards), "run.runs_dir": str(runs), **extra}
    return [f"{k}={v}" for k, v in items.items()]

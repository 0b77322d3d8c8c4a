"""Recipe options beyond the defaults: global CMVN stored with the run, fine-tuning a HF
teacher loaded by path, and the quality gate that refuses a weak teacher."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, tiny_overrides
from wakeword_dist.config import load_config
from wakeword_dist.models.teacher import load_teacher
from wakeword_dist.train.recipe import run


def _cfg(shards, runs, **extra):
    return load_config(REPO / "configs" / "ci_tiny.yaml",
                       tiny_overrides(shards, runs, **{"logging.wandb": "disabled", **extra}))


def test_cmvn_statistics_are_fitted_and_saved_with_the_model(tiny_shards, tmp_path):
    cfg = _cfg(tiny_shards, tmp_path, **{"train.job": "baseline", "frontend.cmvn": True, "train.max_steps": 2})
    run(cfg)
    weights = load_file(str(cfg.job_dir() / "best" / "model.safetensors"))
    mean, std = weights["frontend.cmvn_mean"], weights["frontend.cmvn_std"]
    assert mean.shape == (cfg.frontend.n_mels,)
    assert not torch.allclose(mean, torch.zeros_like(mean)) and not torch.allclose(std, torch.ones_like(std))


def test_train_teacher_fine_tunes_a_pretrained_folder(tiny_shards, tiny_teacher_dir, tmp_path):
    cfg = _cfg(tiny_shards, tmp_path, **{"train.job": "teacher", "teacher.name_or_path": str(tiny_teacher_dir),
                                         "train.max_steps": 2})
    run(cfg)
    best = cfg.job_dir() / "best"
    label_names = json.loads((tiny_shards / "train" / "index.json").read_text())["label_names"]
    tuned = load_teacher(best, label_names=label_names, dtype="fp32")
    original = load_teacher(tiny_teacher_dir, label_names=label_names, dtype="fp32")
    assert tuned.fingerprint()["weights_sha256"] != original.fingerprint()["weights_sha256"]
    assert json.loads((best / "quality.json").read_text())["val"]["accuracy"] >= 0


def test_quality_gate_refuses_a_weak_teacher_with_its_figure(tiny_shards, tiny_teacher_dir, tmp_path):
    cfg = _cfg(tiny_shards, tmp_path, **{"train.job": "distill", "teacher.name_or_path": str(tiny_teacher_dir),
                                         "teacher.min_val_accuracy": 0.99})
    with pytest.raises(RuntimeError, match=r"val accuracy 0\.\d{4} < teacher.min_val_accuracy=0.99"):
        run(cfg)
    assert not (cfg.job_dir() / "checkpoints").exists()
    run(_cfg(tiny_shards, tmp_path, **{"train.job": "distill", "teacher.name_or_path": str(tiny_teacher_dir),
                                       "teacher.min_val_accuracy": 0.99, "teacher.skip_quality_gate": True,
                                       "train.max_steps": 1}))


def test_teacher_with_other_labels_is_refused_naming_both_maps(tiny_shards, tmp_path):
    from wakeword_dist.models.teacher import build_teacher_from_scratch
    from wakeword_dist.train.best_store import save_teacher_dir
    from wakeword_dist.train.teacher_setup import wav2vec2_conv_stack

    other = build_teacher_from_scratch(["negative", "hey_nora"], hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64, **wav2vec2_conv_stack(16))
    save_teacher_dir(other, tmp_path / "other")
    cfg = _cfg(tiny_shards, tmp_path, **{"train.job": "distill", "teacher.name_or_path": str(tmp_path / "other")})
    with pytest.raises(ValueError, match="hey_nora") as info:
        run(cfg)
    assert "hey_nova" in str(info.value)


def test_configured_teacher_rewrites_are_applied_recorded_and_change_no_result(tiny_shards, tiny_teacher_dir,
                                                                               tmp_path):
    common = {"train.job": "distill", "teacher.name_or_path": str(tiny_teacher_dir), "teacher.dtype": "fp32",
              "teacher.skip_quality_gate": True, "train.max_steps": 2}
    plain = _cfg(tiny_shards, tmp_path / "plain", **common)
    fast = _cfg(tiny_shards, tmp_path / "fast", **common,
                **{"teacher.fast_forward": "[channels_last_encoder,fuse_feature_norm]"})
    for cfg in (plain, fast):
        run(cfg)
    applied = {name: json.loads((cfg.job_dir() / "final.json").read_text())["placement"]["fast_teacher"]
               for name, cfg in (("plain", plain), ("fast", fast))}
    assert applied["plain"] == {"fold_weight_norm": 1}
    assert applied["fast"]["channels_last_encoder"] > 0 and applied["fast"]["fold_weight_norm"] == 1
    # The same function (CPU parity 1e-6 relative), so the same losses step by step. Not the same
    # weights bit for bit: Adam's first steps move a weight whose gradient is ~0 by ~lr whatever
    # its sign, so a 1e-7 difference in a near-zero gradient flips a whole lr-sized update (this
    # compared weights at 1e-4 and failed in some test orders).
    losses = {name: [(r["train/loss"], r["train/kd_loss"]) for r in map(json.loads, (cfg.job_dir() / "metrics.jsonl")
                                                                        .read_text().splitlines()) if "train/kd_loss" in r]
              for name, cfg in (("plain", plain), ("fast", fast))}
    assert len(losses["plain"]) == 2 and losses["plain"][0][1] > 0
    torch.testing.assert_close(torch.tensor(losses["fast"]), torch.tensor(losses["plain"]), rtol=1e-5, atol=1e-7)


def _training_teacher(**overrides):
    from wakeword_dist.train import model_setup

    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", [f"{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    model, _ = model_setup.trainable_model(cfg, "teacher", ["negative", "hey_nova"])
    # Silence every other source of train-mode randomness, so that masking is the only one left.
    model.model.config.layerdrop = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0
    return model


@pytest.mark.parametrize("masking", [False, True])
def test_teacher_trains_on_unmasked_clips_unless_asked(masking):
    model = _training_teacher(**{"teacher.train_time_masking": masking})
    audio = torch.randn(4, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        seen_in_eval = model.eval()(audio)
        torch.manual_seed(2)
        seen_in_training = model.train()(audio)
    assert torch.allclose(seen_in_training, seen_in_eval, atol=1e-5) is not masking

"""The best-model store writes students in the HF layout (models/hub.py): `best/` loads with
`hub.from_pretrained`, and its card and config.json say how the student was trained (job,
teacher, alpha, temperature, steps, seed, val figures, dataset digest). A `best/` of an older
run (model.safetensors + model.json) still loads. No network, no training: a fresh student."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import REPO
from tests.standins import Unwrapped
from wakeword_dist.config import load_config
from wakeword_dist.models import hub
from wakeword_dist.train import best_store, model_setup

CI_TINY = REPO / "configs" / "ci_tiny.yaml"
LABELS = ["negative", "hey_nova"]
VAL = {"step": 6, "f1_macro": 0.75, "frr_at_target": 0.25, "fa_per_hour": float("nan")}


def _student(job: str, **overrides):
    cfg = load_config(CI_TINY, [f"train.job={job}", *(f"{k}={v}" for k, v in overrides.items())])
    torch.manual_seed(0)
    model, arch = model_setup.trainable_model(cfg, job, LABELS)
    return cfg, model.eval(), arch


def test_best_is_a_hub_folder_with_a_baseline_card(tmp_path):
    cfg, model, arch = _student("baseline")
    train_dir = tmp_path / "data" / "train"
    train_dir.mkdir(parents=True)
    (train_dir / "index.json").write_text('{"label_names": ["negative", "hey_nova"]}\n')
    dataset = best_store.dataset_record(cfg, train_dir)
    best = tmp_path / "best"
    best_store.save_best(Unwrapped, model, best, arch, LABELS, VAL, cfg, dataset=dataset)

    assert sorted(p.name for p in best.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = hub.from_pretrained(best)  # what the README tells users to run
    audio = torch.randn(2, cfg.data.clip_samples)
    with torch.no_grad():
        assert torch.equal(loaded(audio), model(audio))
    config = hub.read_config(best)
    sha = hashlib.sha256((train_dir / "index.json").read_bytes()).hexdigest()
    assert config["training"] == {"job": "baseline", "steps": 6, "seed": cfg.train.seed, "alpha": 0.0,
                                  "temperature": None, "teacher": None, "dataset": dataset}
    assert sha in dataset and str(cfg.data.root) in dataset
    assert config["metrics"] == {"f1_macro": 0.75, "frr_at_target": 0.25, "fa_per_hour": None}
    assert config["label_names"] == LABELS and config["architecture"] == arch
    card = (best / "README.md").read_text()
    assert "| f1_macro | 0.75 |" in card and "| fa_per_hour | n/a |" in card and "validation" in card

    # what evaluate and export read
    student, meta = best_store.load_best_student(best)
    assert meta["label_names"] == LABELS and meta["training"]["steps"] == 6 and meta["architecture"] == arch
    with torch.no_grad():
        assert torch.equal(student(audio), model(audio))


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_a_distilled_student_names_its_teacher_alpha_and_temperature(tmp_path, mode):
    cfg, model, arch = _student("distill", **{"distill.mode": mode, "distill.alpha": 0.7,
                                              "distill.temperature": 3.0})
    teacher = {"name_or_path": "runs/x/teacher/best", "weights_sha256": "ab" * 32, "label_names": LABELS}
    best = tmp_path / "best"
    best_store.save_best(Unwrapped, model, best, arch, LABELS, VAL, cfg, teacher=teacher)
    training = hub.read_config(best)["training"]
    assert training["job"] == "distill" and training["alpha"] == 0.7 and training["temperature"] == 3.0
    assert training["teacher"] == {"name_or_path": "runs/x/teacher/best", "weights_sha256": "ab" * 32}
    assert training["dataset"] == str(cfg.data.root)  # no dataset record given
    card = (best / "README.md").read_text()
    assert "| teacher weights sha256 | `" + "ab" * 32 + "` |" in card
    assert best_store.KD_TARGETS[mode] in card

    # without a fingerprint the card still names the configured teacher
    best_store.save_best(Unwrapped, model, best, arch, LABELS, VAL, cfg)
    assert hub.read_config(best)["training"]["teacher"] == {"name_or_path": cfg.teacher_path(),
                                                            "weights_sha256": None}


def test_a_best_dir_of_an_older_run_still_loads(tmp_path):
    cfg, model, arch = _student("baseline")
    best = tmp_path / "best"
    best.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(best / "model.safetensors"))
    (best / "model.json").write_text(json.dumps({"architecture": arch, "label_names": LABELS, "val": VAL,
                                                 "arch_args": model.arch_args}))
    student, meta = best_store.load_best_student(best)
    assert meta["label_names"] == LABELS and meta["training"]["steps"] == 6 and meta["architecture"] == arch
    assert meta["metrics"]["f1_macro"] == 0.75
    audio = torch.randn(2, cfg.data.clip_samples)
    with torch.no_grad():
        assert torch.equal(student(audio), model(audio))

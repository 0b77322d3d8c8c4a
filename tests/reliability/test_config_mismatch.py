"""Config and model mismatches fail before any training step, with one line naming the culprit.

Every case goes through the `train` CLI in this process and checks: the exit code (2 config
error, 1 other refusal), a single `wakeword-dist train: ...` line that ends stderr (no traceback),
and that no training step ran (no train row in metrics.jsonl; a resumed run folder untouched).
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from reliability_helpers import CI_TINY, run_cli, teacher_variant

from tests.conftest import tiny_overrides


def _train(capsys, overrides) -> tuple[int, str]:
    code, lines = run_cli(capsys, ["train", "--config", str(CI_TINY), *overrides])
    assert len(lines) == 1, lines
    return code, lines[0]


def _no_step_ran(runs):
    metrics = list(runs.rglob("metrics.jsonl"))
    assert all('"train/loss"' not in m.read_text() for m in metrics), "a training step ran"
    assert not list(runs.rglob("step-*")), "a checkpoint was written"


def _tree_digest(folder) -> str:
    h = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "wandb" not in p.parts):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("override, message", [
    ("train.lrr=0.1", "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ("trian.lr=0.1", "unknown config key 'trian'; did you mean 'train'?"),
    ("train.max_bad_fraction=2", "config key 'train.max_bad_fraction': 2.0 is out of range [0, 1]"),
    ("train.job=distil", "config key 'train.job': 'distil' is not one of baseline, distill, teacher"),
    ("student.width=wide", "config key 'student.width': expected float, got str 'wide'"),
    ("train.max_nonfinite_steps=0", "config key 'train.max_nonfinite_steps': 0 is out of range [1, inf)"),
])
def test_unknown_or_invalid_keys_exit_2_naming_the_key(tiny_shards, tmp_path, capsys, override, message):
    code, line = _train(capsys, [*tiny_overrides(tiny_shards, tmp_path), override])
    assert code == 2
    assert line == f"wakeword-dist train: config error: {message}"
    assert not any(tmp_path.iterdir()), "nothing may be written for a bad config"


def test_teacher_with_another_label_map_is_refused(tiny_shards, tiny_teacher_dir, tmp_path, capsys):
    swapped = teacher_variant(tiny_teacher_dir, tmp_path / "swapped", labels=["hey_nova", "negative"])
    code, line = _train(capsys, tiny_overrides(tiny_shards, tmp_path / "runs", **{
        "train.job": "distill", "teacher.name_or_path": str(swapped)}))
    assert code == 1
    assert "teacher label map does not match the student's" in line
    assert "{0: 'hey_nova', 1: 'negative'}" in line and "{0: 'negative', 1: 'hey_nova'}" in line
    _no_step_ran(tmp_path / "runs")


def test_dataset_splits_with_different_label_maps_are_refused(tiny_shards, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_shards, data)
    index_path = data / "val" / "index.json"
    index = json.loads(index_path.read_text())
    index["label_names"] = list(reversed(index["label_names"]))
    index_path.write_text(json.dumps(index))
    code, line = _train(capsys, tiny_overrides(data, tmp_path / "runs", **{"train.job": "baseline"}))
    assert code == 1
    assert "label maps differ" in line and str(index_path) in line
    _no_step_ran(tmp_path / "runs")


@pytest.mark.parametrize("where", ["config", "index"])
def test_sample_rate_mismatch_is_refused_naming_the_index(tiny_shards, tmp_path, capsys, where):
    data, extra = tiny_shards, {"train.job": "baseline"}
    if where == "config":
        extra["data.sample_rate"] = 8000
        expected = f"{tiny_shards / 'train' / 'index.json'}: shards are 16000 Hz but 8000 Hz is expected"
    else:
        data = tmp_path / "data"
        shutil.copytree(tiny_shards, data)
        index_path = data / "train" / "index.json"
        index_path.write_text(json.dumps({**json.loads(index_path.read_text()), "sample_rate": 22050}))
        expected = f"{index_path}: shards are 22050 Hz but 16000 Hz is expected"
    code, line = _train(capsys, tiny_overrides(data, tmp_path / "runs", **extra))
    assert code == 1
    assert expected in line
    _no_step_ran(tmp_path / "runs")


@pytest.mark.parametrize("override, message", [
    ("student.width=1.0", "was trained with width=0.5 but the config says width=1.0"),
    ("student.name=bc_resnet", "was trained with model='tiny_conv' but the config says model='bc_resnet'"),
    ("frontend.n_mels=32", "was trained with n_mels=40 but the config says n_mels=32"),
])
def test_resume_into_another_architecture_fails_before_any_step(finished_run, capsys, override, message):
    run_dir = finished_run["run_dir"]
    before = _tree_digest(run_dir)
    code, line = _train(capsys, [*finished_run["overrides"], "train.resume=auto", "train.max_steps=8", override])
    assert code == 1
    assert f"checkpoint {run_dir / 'checkpoints' / 'step-00000004'} {message}" in line
    assert "train.resume=never" in line, "the message says the way out"
    assert _tree_digest(run_dir) == before, "a refused resume must not touch the run folder"


def test_cached_logits_from_another_teacher_are_refused(tiny_shards, tiny_teacher_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from wakeword_dist.config import load_config
    from wakeword_dist.distill import annotate
    from wakeword_dist.models.teacher import load_teacher
    from wakeword_dist.train.data_setup import cached_train_dir

    other = tmp_path / "other_teacher"  # same architecture and labels, other weights
    shutil.copytree(tiny_teacher_dir, other)
    weights = next(other.glob("*.safetensors"))
    state = load_file(str(weights))
    state["classifier.bias"] += 1.0
    save_file(state, str(weights), metadata={"format": "pt"})

    runs = tmp_path / "runs"
    overrides = tiny_overrides(tiny_shards, runs, **{"train.job": "distill", "distill.mode": "cached",
                                                     "teacher.name_or_path": str(other)})
    cfg = load_config(CI_TINY, overrides)
    labels = json.loads((tiny_shards / "train" / "index.json").read_text())["label_names"]
    teacher = load_teacher(tiny_teacher_dir, label_names=labels, dtype="fp32")
    annotate.annotate_split(teacher, teacher.fingerprint(), in_split_dir=tiny_shards / "train",
                            out_split_dir=cached_train_dir(cfg), rank=0, world_size=1, batch_size=32,
                            device="cpu")
    code, line = _train(capsys, overrides)
    assert code == 1
    assert f"{cached_train_dir(cfg) / 'index.json'}: cached teacher logits come from another teacher" in line
    assert "weights_sha256 differs" in line
    _no_step_ran(runs / "ci_tiny" / "distill")

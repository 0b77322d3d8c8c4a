"""Students in the HF layout (models/hub.py): config.json + model.safetensors + README.md, read
back offline from a local folder into a module with the same outputs; one-line errors naming the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from wakeword_dist.models import build_student
from wakeword_dist.models import hub
from wakeword_dist.models.hub import StudentCard, from_pretrained, read_config, save_pretrained

LABELS = ["_unknown_", "hey_jarvis", "_silence_"]
TEACHER = {"name_or_path": "runs/demo/teacher/best", "weights_sha256": "0123abcd" * 8, "label_names": LABELS}
# One tiny config per student kind; half-second clips keep each test well under a second on 2 cores.
KINDS = {"tiny_conv": 0.5, "mobilenetv3_small": 0.25, "bc_resnet": 1.0}


def _student(name: str, width: float, **frontend):
    """A student as the recipe builds it (SpecAugment on), with non-default BatchNorm running
    stats and CMVN, so a round trip that drops buffers shows in the outputs."""
    model = build_student(name, len(LABELS), width=width, specaugment={}, **{"win_ms": 25.0, "hop_ms": 10.0,
                                                                              **frontend})
    gen = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 8000, generator=gen) * 0.1)
    n_mels = model.frontend.n_mels
    model.frontend.set_cmvn(torch.randn(n_mels, generator=gen) * 5 - 40, torch.rand(n_mels, generator=gen) + 5)
    return model.eval()


def _architecture(model) -> dict:
    """The record `trainable_model` stores with a student (train/model_setup.py)."""
    a = model.arch_args
    return {"model": a["name"], "width": a["width"], "num_classes": a["num_classes"], "label_names": list(LABELS),
            "n_mels": a["n_mels"]}


def _distill_card(**extra) -> StudentCard:
    return StudentCard(job="distill", steps=300, seed=1, teacher=TEACHER, alpha=0.7, temperature=2.5,
                       metrics={"f1_macro": 0.8765, "frr_at_target": 0.0312, "fa_per_hour": 1.5,
                                "auc": float("nan")}, dataset="shards/demo", **extra)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach the Hub fails the test."""
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "snapshot_download", no_network)
    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", no_network)


@pytest.mark.parametrize("name", list(KINDS))
def test_round_trip_gives_the_same_module_and_outputs(name, tmp_path, offline):
    model = _student(name, KINDS[name])
    out = save_pretrained(model, _architecture(model), tmp_path / "student", card=_distill_card())
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    loaded = from_pretrained(out)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.arch_args == model.arch_args
    saved = model.state_dict()
    assert loaded.state_dict().keys() == saved.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # the state dict under its own names (what best/model.safetensors holds)
    assert load_file(str(out / "model.safetensors")).keys() == saved.keys()

    audio = torch.randn(3, 8000, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        assert torch.equal(loaded(audio), model(audio))
    assert from_pretrained(str(out)).arch_args == model.arch_args  # a str path works like a Path


def test_saving_again_replaces_the_folder_whole(tmp_path):
    first, second = _student("tiny_conv", 0.5), _student("bc_resnet", 1.0)
    out = tmp_path / "student"
    save_pretrained(first, _architecture(first), out, card=_distill_card())
    (out / "stale.txt").write_text("from an older save")
    save_pretrained(second, _architecture(second), out, card=_distill_card())
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert from_pretrained(out).arch_args["name"] == "bc_resnet"
    assert [p.name for p in tmp_path.iterdir()] == ["student"], "no temp folder left behind"


def test_model_card_carries_metrics_labels_front_end_and_training(tmp_path):
    model = _student("tiny_conv", 0.5)
    out = save_pretrained(model, _architecture(model), tmp_path / "s", card=_distill_card(notes="Demo run."))
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "wakeword-dist"
    assert card.data.pipeline_tag == "audio-classification"
    assert {"wake-word", "keyword-spotting", "tiny_conv", "distill"} <= set(card.data.tags)
    text = card.text
    assert text.startswith("# tiny_conv wake-word student (distill)")
    assert "Demo run." in text
    for row in ("| 0 | _unknown_ |", "| 1 | hey_jarvis |", "| 2 | _silence_ |"):  # label map
        assert row in text
    for row in ("| sample rate | 16000 Hz |", "| mel bins (n_mels) | 40 |", "| window | 25 ms (400 samples, hann) |",
                "| hop | 10 ms (160 samples) |", "| FFT size (n_fft) | 512 |", "| mel range | 20 - 8000 Hz (htk) |",
                "top_db) | 80 dB |", "| global CMVN | fitted, stored in the weights |"):  # front end
        assert row in text, row
    for row in ("| job | distill (CE + KD from the teacher) |", "| steps | 300 |", "| seed | 1 |",
                f"| teacher | `{TEACHER['name_or_path']}` |", f"| teacher weights sha256 | `{'0123abcd' * 8}` |",
                "| alpha (KD weight) | 0.7 |", "| temperature | 2.5 |", "| data | shards/demo |"):  # training
        assert row in text, row
    for row in ("| f1_macro | 0.8765 |", "| frr_at_target | 0.0312 |", "| fa_per_hour | 1.5 |", "| auc | n/a |"):
        assert row in text, row


def test_a_baseline_card_names_no_teacher(tmp_path):
    model = _student("bc_resnet", 1.0)
    card = StudentCard(job="baseline", steps=300, seed=1, metrics={"f1_macro": 0.7})
    out = save_pretrained(model, _architecture(model), tmp_path / "s", card=card)
    text = (out / "README.md").read_text()
    assert "| job | baseline (CE only) |" in text and "teacher" not in text and "alpha" not in text
    training = read_config(out)["training"]
    assert training == {"job": "baseline", "steps": 300, "seed": 1, "dataset": "", "alpha": 0.0,
                        "temperature": None, "teacher": None}


def test_config_json_fields(tmp_path):
    model = _student("mobilenetv3_small", 0.25, n_mels=32, win_ms=30.0, hop_ms=20.0, top_db=None)
    out = save_pretrained(model, _architecture(model), tmp_path / "s", card=_distill_card())
    config = json.loads((out / "config.json").read_text())  # strict JSON: the NaN metric is null
    assert config["format"] == "wakeword-dist/student" and config["format_version"] == 1
    assert config["student"] == "mobilenetv3_small"
    assert config["arch_args"] == model.arch_args
    assert config["architecture"] == _architecture(model)
    assert config["num_classes"] == 3 and config["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert config["label_names"] == LABELS
    assert config["id2label"] == {"0": "_unknown_", "1": "hey_jarvis", "2": "_silence_"}
    assert config["label2id"] == {"_unknown_": 0, "hey_jarvis": 1, "_silence_": 2}
    assert config["input"]["sample_rate"] == 16000
    assert config["frontend"] == {
        "sample_rate": 16000, "n_mels": 32, "win_length": 480, "hop_length": 320, "win_ms": 30.0, "hop_ms": 20.0,
        "n_fft": 512, "window": "hann", "f_min": 20.0, "f_max": 8000.0, "mel_scale": "htk", "power": 2.0,
        "center": True, "top_db": None, "cmvn": True}
    assert config["training"] == {"job": "distill", "steps": 300, "seed": 1, "dataset": "shards/demo",
                                  "alpha": 0.7, "temperature": 2.5,
                                  "teacher": {"name_or_path": TEACHER["name_or_path"],
                                              "weights_sha256": TEACHER["weights_sha256"]}}
    assert config["metrics"] == {"f1_macro": 0.8765, "frr_at_target": 0.0312, "fa_per_hour": 1.5, "auc": None}
    assert read_config(out) == config


def test_a_hub_repo_id_is_fetched_then_read_like_a_folder(tmp_path, monkeypatch):
    model = _student("tiny_conv", 0.5)
    out = save_pretrained(model, _architecture(model), tmp_path / "snapshot", card=_distill_card())
    asked = []
    monkeypatch.setattr(hub, "snapshot_download", lambda **kw: asked.append(kw) or str(out))
    loaded = from_pretrained("someone/hey-jarvis-tiny", revision="v1")
    assert asked == [{"repo_id": "someone/hey-jarvis-tiny", "revision": "v1", "local_files_only": False,
                      "allow_patterns": ["config.json", "model.safetensors", "README.md"]}]
    assert loaded.arch_args == model.arch_args

    def not_found(**kw):
        raise OSError("Repository Not Found for url: https://huggingface.co/api/models/someone/nope.\n"
                      "Please make sure you specified the correct `repo_id`.")

    monkeypatch.setattr(hub, "snapshot_download", not_found)
    with pytest.raises(FileNotFoundError) as err:
        from_pretrained("someone/nope")
    assert "\n" not in str(err.value) and str(err.value).startswith("someone/nope: not a local folder")


# ----------------------------------------------------------------------------- errors
def _break(kind: str, folder: Path, other: Path) -> Path:
    """Damage a saved student folder; returns the path the error must name."""
    config, weights = folder / "config.json", folder / "model.safetensors"
    if kind == "no folder":
        return folder.with_name("nowhere")
    if kind == "a file":
        return weights
    if kind == "no config.json":
        config.unlink()
        return config
    if kind == "config.json not JSON":
        config.write_text("{not json")
        return config
    if kind == "config.json of a HF teacher":
        config.write_text(json.dumps({"model_type": "wav2vec2", "num_labels": 3}))
        return config
    if kind == "config.json without arch_args":
        data = json.loads(config.read_text())
        del data["arch_args"]
        config.write_text(json.dumps(data))
        return config
    if kind == "no model.safetensors":
        weights.unlink()
        return weights
    if kind == "model.safetensors damaged":
        weights.write_bytes(b"\x00\x01 not safetensors")
        return weights
    if kind == "model.safetensors of another student":
        (other / "model.safetensors").replace(weights)
        return weights
    if kind == "model.safetensors missing a tensor":
        state = load_file(str(weights))
        state.pop(sorted(state)[0])
        save_file(state, str(weights))
        return weights
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "no folder", "a file", "no config.json", "config.json not JSON", "config.json of a HF teacher",
    "config.json without arch_args", "no model.safetensors", "model.safetensors damaged",
    "model.safetensors of another student", "model.safetensors missing a tensor"])
def test_a_wrong_or_missing_file_is_a_one_line_error_naming_it(kind, tmp_path, offline):
    tiny, other = _student("tiny_conv", 0.5), _student("bc_resnet", 1.0)
    folder = save_pretrained(tiny, _architecture(tiny), tmp_path / "student", card=_distill_card())
    other_dir = save_pretrained(other, _architecture(other), tmp_path / "other", card=_distill_card())
    named = _break(kind, folder, other_dir)
    target = named if kind in ("no folder", "a file") else folder
    with pytest.raises((FileNotFoundError, NotADirectoryError, ValueError)) as err:
        from_pretrained(target)
    message = str(err.value)
    assert "\n" not in message, message
    assert message.startswith(f"{named}: "), message


def test_inputs_that_do_not_describe_the_model_are_refused(tmp_path):
    model = _student("tiny_conv", 0.5)
    with pytest.raises(ValueError, match=r"architecture\['model'\]='bc_resnet' but the model was built with"):
        save_pretrained(model, {**_architecture(model), "model": "bc_resnet"}, tmp_path / "a", card=_distill_card())
    with pytest.raises(ValueError, match="has 2 names for 3 classes"):
        save_pretrained(model, {**_architecture(model), "label_names": LABELS[:2]}, tmp_path / "b",
                        card=_distill_card())
    with pytest.raises(ValueError, match="registry students"):
        save_pretrained(torch.nn.Linear(2, 3), _architecture(model), tmp_path / "c", card=_distill_card())
    with pytest.raises(ValueError, match="needs teacher="):
        StudentCard(job="distill", steps=1, seed=0, alpha=0.5, temperature=2.0)
    with pytest.raises(ValueError, match="needs alpha and temperature"):
        StudentCard(job="distill", steps=1, seed=0, teacher=TEACHER)
    with pytest.raises(ValueError, match="a baseline student has no teacher"):
        StudentCard(job="baseline", steps=1, seed=0, teacher=TEACHER)
    with pytest.raises(ValueError, match="job must be one of"):
        StudentCard(job="teacher", steps=1, seed=0)
    with pytest.raises(ValueError, match=r"metrics\['val'\] must be a number"):
        StudentCard(job="baseline", steps=1, seed=0, metrics={"val": {"f1": 0.5}})
    assert not any(tmp_path.iterdir()), "nothing written for a refused save"
    assert math.isnan(_distill_card().metrics["auc"])  # the card keeps what it was given; the files say null

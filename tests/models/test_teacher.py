"""Teacher loading: frozen state, label-map check, remote-code refusal, dtypes, fingerprint."""

import json

import pytest
import torch
from transformers import Wav2Vec2FeatureExtractor

from wakeword_dist.models import TeacherModel, build_teacher_from_scratch, load_teacher

LABELS = ["hey_tiny", "unknown", "silence"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny Wav2Vec2 classifier (~126k params) + feature extractor saved like a hub checkpoint."""
    path = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    # Non-zero dropout / layerdrop / masking so the test proves freeze() turns them off.
    model = build_teacher_from_scratch(LABELS, hidden_dropout=0.3, attention_dropout=0.3, layerdrop=0.5,
                                       mask_time_prob=0.5, mask_time_length=2)
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(path)
    return path


def _audio(b=2, s=8000, seed=0):
    return torch.randn(b, s, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_load_frozen_and_deterministic(teacher_dir):
    teacher = load_teacher(teacher_dir, label_names=LABELS, dtype="fp32")
    assert isinstance(teacher, TeacherModel) and teacher.frozen and teacher.do_normalize
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # the recipe calls model.train(); a frozen teacher must stay in eval
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert all(m.p == 0.0 for m in teacher.modules() if isinstance(m, torch.nn.Dropout))
    cfg = teacher.model.config
    assert cfg.layerdrop == 0.0 and cfg.mask_time_prob == 0.0 and cfg.apply_spec_augment is False
    x = _audio()
    a, b = teacher(x), teacher(x.unsqueeze(1))
    assert a.shape == (2, 3) and a.dtype == torch.float32 and not a.requires_grad
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="expected raw audio"):
        teacher(x[0])


def test_normalisation_matches_feature_extractor(teacher_dir):
    teacher = load_teacher(teacher_dir, label_names=LABELS, dtype="fp32")
    x = _audio(2, 4000) + 0.3  # DC offset the normaliser must remove
    fe = Wav2Vec2FeatureExtractor.from_pretrained(teacher_dir)
    ref = fe(list(x.numpy()), sampling_rate=16000, return_tensors="pt").input_values
    torch.testing.assert_close(teacher.normalize(x), ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), teacher.model(input_values=ref).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_dtypes_on_cpu(teacher_dir, dtype, torch_dtype):
    ref = load_teacher(teacher_dir, label_names=LABELS, dtype="fp32")(_audio())
    teacher = load_teacher(teacher_dir, label_names=LABELS, dtype=dtype)
    assert teacher.param_dtype == torch_dtype
    out = teacher(_audio())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)


def test_label_map_mismatch_names_both_maps(teacher_dir):
    with pytest.raises(ValueError) as err:
        load_teacher(teacher_dir, label_names=["unknown", "hey_tiny", "silence"], dtype="fp32")
    msg = str(err.value)
    assert "0: 'hey_tiny'" in msg and "0: 'unknown'" in msg
    with pytest.raises(ValueError, match="label map"):
        load_teacher(teacher_dir, label_names=LABELS[:2], dtype="fp32")


def test_remote_code_refused(teacher_dir, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    for f in teacher_dir.iterdir():
        (remote / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((remote / "config.json").read_text())
    cfg["model_type"] = "my_custom_w2v"
    cfg["auto_map"] = {"AutoConfig": "modeling_custom.CustomConfig",
                       "AutoModelForAudioClassification": "modeling_custom.CustomModel"}
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="needs remote code.*trust_remote_code=True"):
        load_teacher(remote, label_names=LABELS)


def test_fingerprint_stable_and_sensitive(teacher_dir, tmp_path):
    fp1 = load_teacher(teacher_dir, label_names=LABELS, dtype="fp32").fingerprint()
    fp2 = load_teacher(teacher_dir, label_names=LABELS, dtype="fp16").fingerprint()
    assert fp1 == fp2  # hash taken on the loaded float32 weights, before the half cast
    assert fp1["label_names"] == LABELS and fp1["name_or_path"] == str(teacher_dir)
    assert len(fp1["weights_sha256"]) == 64
    model = load_teacher(teacher_dir, label_names=LABELS, freeze=False).model
    with torch.no_grad():
        model.classifier.bias.add_(1e-3)
    model.save_pretrained(tmp_path / "changed")
    fp3 = load_teacher(tmp_path / "changed", label_names=LABELS, dtype="fp32").fingerprint()
    assert fp3["weights_sha256"] != fp1["weights_sha256"]


@pytest.mark.parametrize("arch", ["hubert", "wavlm"])
def test_other_architectures(arch):
    model = build_teacher_from_scratch(LABELS, arch=arch)
    teacher = TeacherModel(model, label_names=LABELS, dtype="bf16").freeze()
    assert teacher(_audio(1, 4000)).shape == (1, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch"):
        build_teacher_from_scratch(LABELS, arch="whisper")
    with pytest.raises(ValueError, match="dtype"):
        TeacherModel(build_teacher_from_scratch(LABELS), label_names=LABELS, dtype="fp8")


def test_freeze_is_idempotent_and_unfrozen_teacher_trains(teacher_dir):
    teacher = load_teacher(teacher_dir, label_names=LABELS, dtype="fp16")
    fp = teacher.fingerprint()
    teacher.freeze()  # the recipe may freeze again; the hash must not be re-taken on fp16 weights
    assert teacher.fingerprint() == fp
    trainable = load_teacher(teacher_dir, label_names=LABELS, freeze=False)
    trainable.train()
    assert trainable.training and trainable.param_dtype == torch.float32
    trainable(_audio()).sum().backward()
    assert trainable.model.classifier.weight.grad is not None
    assert trainable.fingerprint() == fp

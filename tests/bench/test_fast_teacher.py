"""Every teacher rewrite of models/fast_teacher.py computes the plain HF model's logits (fp32, CPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from wakeword_dist.models.fast_teacher import (ChannelsLastFeatureEncoder, CudaGraphModel, DensePositionalConv,
                                               FusedGroupNormConv, optimize_teacher, truncated_copy)
from wakeword_dist.models.teacher import TeacherModel, build_teacher_from_scratch

LABELS = ["negative", "hey_nova", "other"]
TOL = 1e-5  # max |z - z_plain| / max |z_plain|, fp32
# wav2vec2's real conv stack (stride 320: 49 frames per second) and positional conv (128 taps, 16
# groups) at toy widths: the shapes where the dense positional conv takes over (frames < taps).
W2V2_STACK = dict(conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def _teacher(arch="wav2vec2", seed=0, **kw) -> TeacherModel:
    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **W2V2_STACK)
    settings.update(kw)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        hf = build_teacher_from_scratch(LABELS, arch=arch, **settings)
    return TeacherModel(hf, label_names=LABELS, dtype="fp32").freeze()


def _audio(batch=3, samples=16000, seed=1):
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _rel(z, ref) -> float:
    return float((z - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def plain():
    teacher = _teacher()
    return teacher, teacher(_audio())


def test_folding_weight_norm_is_bit_exact_and_leaves_copies_working(plain):
    teacher, ref = plain
    copies = [copy.deepcopy(teacher) for _ in range(2)]
    fast = optimize_teacher(copies[0])
    assert fast is copies[0] and fast.fast_teacher == {"fold_weight_norm": 1}
    pos = fast.model.wav2vec2.encoder.pos_conv_embed.conv
    assert not hasattr(pos, "parametrizations") and not pos.weight.requires_grad
    assert torch.equal(fast(_audio()), ref)
    # torch's remove_parametrizations deletes the property from the class deep copies share;
    # the untouched copy and the original must still run
    assert torch.equal(copies[1](_audio()), ref) and torch.equal(teacher(_audio()), ref)
    assert fast.fingerprint() == teacher.fingerprint()  # taken on the weights as loaded


@pytest.mark.parametrize("opts, module_type", [
    (dict(fuse_feature_norm=True), FusedGroupNormConv),
    (dict(channels_last_encoder=True), ChannelsLastFeatureEncoder),
    (dict(dense_pos_conv=True), DensePositionalConv),
    (dict(channels_last_encoder=True, dense_pos_conv=True), None),
])
def test_each_rewrite_matches_the_plain_model(plain, opts, module_type):
    teacher, ref = plain
    fast = optimize_teacher(copy.deepcopy(teacher), **opts)
    if module_type is not None:
        assert any(isinstance(m, module_type) for m in fast.modules()), f"{module_type.__name__} not installed"
    assert _rel(fast(_audio()), ref) < TOL
    if opts.get("dense_pos_conv"):
        dense = next(m for m in fast.modules() if isinstance(m, DensePositionalConv))
        assert dense._matrices, "49 frames < 128 taps: the Toeplitz path must have run, not the conv"


def test_rewrites_cover_other_clip_lengths_and_batch_one():
    teacher = _teacher()
    fast = optimize_teacher(copy.deepcopy(teacher), channels_last_encoder=True, dense_pos_conv=True)
    for batch, samples in ((1, 16000), (2, 24000), (2, 48000)):  # 49, 74, 149 frames (the last: conv path)
        audio = _audio(batch, samples)
        assert _rel(fast(audio), teacher(audio)) < TOL


@pytest.mark.parametrize("arch, kw", [
    ("hubert", {}),
    ("wavlm", {}),
    ("wav2vec2", dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)),  # large-lv60 style
])
def test_rewrites_apply_to_other_wav2vec2_family_teachers(arch, kw):
    teacher = _teacher(arch=arch, **kw)
    audio = _audio()
    fast = optimize_teacher(copy.deepcopy(teacher), channels_last_encoder=True, dense_pos_conv=True,
                            fuse_feature_norm=True)
    assert fast.fast_teacher.get("channels_last_encoder") == 1
    assert _rel(fast(audio), teacher(audio)) < TOL


def test_tiny_ci_teacher_keeps_the_conv_where_it_is_cheaper():
    """The CI teacher (stride 20, 16 taps): 800 frames > 16 taps, so the conv path runs."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = build_teacher_from_scratch(LABELS, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, conv_dim=(16, 16, 16))
    teacher = TeacherModel(hf, label_names=LABELS, dtype="fp32").freeze()
    fast = optimize_teacher(copy.deepcopy(teacher), fuse_feature_norm=True, dense_pos_conv=True)
    audio = _audio()
    assert _rel(fast(audio), teacher(audio)) < TOL
    dense = next(m for m in fast.modules() if isinstance(m, DensePositionalConv))
    assert not dense._matrices


def test_bare_hf_model_and_cuda_graphs_fall_back_on_cpu(plain):
    teacher, ref = plain
    hf = copy.deepcopy(teacher.model)
    fast_hf = optimize_teacher(hf, dense_pos_conv=True)
    assert fast_hf is hf and fast_hf.fast_teacher["dense_pos_conv"] == 1
    graphed = optimize_teacher(copy.deepcopy(teacher), cuda_graphs=True)
    assert isinstance(graphed.model, CudaGraphModel) and graphed.model.config is graphed.model.inner.config
    assert torch.equal(graphed(_audio()), ref)  # CPU input: eager, no graph captured
    assert not graphed.model._graphs
    with pytest.raises(ValueError, match="exclusive"):
        optimize_teacher(copy.deepcopy(teacher), compile=True, cuda_graphs=True)


def test_truncation_is_a_different_function_and_leaves_the_original_alone(plain):
    teacher, ref = plain
    short = truncated_copy(teacher, 1)
    assert len(short.model.wav2vec2.encoder.layers) == 1 and len(teacher.model.wav2vec2.encoder.layers) == 2
    assert _rel(short(_audio()), ref) > 1e-3
    assert torch.equal(teacher(_audio()), ref)


def test_optimized_teacher_runs_in_half_precision_close_to_plain():
    """bf16 on CPU: the rewrites stay as close to fp32 as the plain bf16 model does (x2 slack)."""
    teacher = _teacher()
    audio = _audio()
    ref = teacher(audio)
    half = copy.deepcopy(teacher).to(torch.bfloat16)
    fast = optimize_teacher(copy.deepcopy(half), channels_last_encoder=True, dense_pos_conv=True)
    plain_err, fast_err = _rel(half(audio), ref), _rel(fast(audio), ref)
    assert fast(audio).dtype == torch.float32 and torch.isfinite(fast(audio)).all()
    assert fast_err < max(2 * plain_err, 2e-2), (plain_err, fast_err)


@pytest.mark.slow  # inductor compiles C++ on CPU: ~30-60 s on 2 cores
def test_compiled_teacher_matches_the_plain_model():
    teacher = _teacher(num_hidden_layers=1)
    audio = _audio(batch=2)
    fast = optimize_teacher(copy.deepcopy(teacher), channels_last_encoder=True, dense_pos_conv=True, compile=True)
    assert fast.fast_teacher["compile"] == "default"
    assert _rel(fast(audio), teacher(audio)) < TOL
    assert _rel(fast(audio), teacher(audio)) < TOL  # second call: the compiled graph, no recompile needed

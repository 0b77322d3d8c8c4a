"""The filter-bank teacher starts from mel-spaced Gabor filters; HF's conv stack is left alone."""

import numpy as np
import torch

from wakeword_dist.models.teacher import build_teacher_from_scratch


def _first_conv(model):
    return model.base_model.feature_extractor.conv_layers[0].conv.weight.detach()[:, 0].numpy()


def test_filterbank_starts_as_mel_spaced_cosine_sine_pairs():
    torch.manual_seed(0)
    hf = build_teacher_from_scratch(["negative", "hey_nova"], conv_dim=(64, 64), conv_kernel=(400, 3),
                                    conv_stride=(160, 2), hidden_size=32, intermediate_size=64)
    bank = _first_conv(hf)
    assert np.allclose(np.linalg.norm(bank, axis=1), 1, atol=1e-5)
    spectrum = np.abs(np.fft.rfft(bank, n=4096, axis=1))
    peak_hz = spectrum.argmax(axis=1) * 16000 / 4096
    cos_peaks, sin_peaks = peak_hz[:32], peak_hz[32:]
    assert np.all(np.diff(cos_peaks[4:]) > 0)  # rising centres (the lowest blur into one another)
    assert np.allclose(cos_peaks[4:], sin_peaks[4:], atol=16000 / 4096 * 2)  # cos/sin pairs share one
    assert 6500 < cos_peaks[-1] < 8000 and cos_peaks[0] < 300
    # mel spacing: the step between neighbouring centres grows with frequency
    steps = np.diff(cos_peaks[4:])
    assert steps[-5:].mean() > 4 * steps[:5].mean()


def test_hf_conv_stack_keeps_its_random_init():
    torch.manual_seed(0)
    a = build_teacher_from_scratch(["negative", "hey_nova"], hidden_size=32, intermediate_size=64)
    torch.manual_seed(1)
    b = build_teacher_from_scratch(["negative", "hey_nova"], hidden_size=32, intermediate_size=64)
    assert not np.allclose(_first_conv(a), _first_conv(b))  # seeds differ -> random, not a fixed bank

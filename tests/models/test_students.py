"""Student registry: shapes, parameter budgets, input ranks, SpecAugment in train only."""

import pytest
import torch

from wakeword_dist.models import build_student, count_parameters, list_students


# One per architecture (aliases share code); half-second clips keep the test quick on 2 cores.
@pytest.mark.parametrize("name", ["tiny_conv", "mobilenetv3_small", "bc_resnet1"])
def test_forward_shapes(name):
    model = build_student(name, 5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 8000) * 0.1).shape == (2, 5)
        assert model(torch.randn(1, 1, 16000) * 0.1).shape == (1, 5)
    with pytest.raises(ValueError, match=r"expected raw audio \(B, S\) or \(B, 1, S\)"):
        model(torch.randn(16000))
    with pytest.raises(ValueError, match="got shape"):
        model(torch.randn(1, 2, 3, 16000))


def test_param_budgets():
    counts = list_students()
    assert counts["tiny_conv"] <= 100_000
    assert 10_000 * 0.75 <= counts["bc_resnet1"] <= 10_000 * 1.25
    assert 320_000 * 0.75 <= counts["bc_resnet8"] <= 320_000 * 1.25
    assert counts["bc_resnet"] == counts["bc_resnet1"]
    assert counts["mobilenetv3_small"] > counts["bc_resnet8"]


def test_width_multiplier():
    assert count_parameters(build_student("bc_resnet", 12, width=8)) == count_parameters(build_student("bc_resnet8", 12))
    assert count_parameters(build_student("mobilenetv3_small", 12, width=0.5)) < count_parameters(
        build_student("mobilenetv3_small", 12))
    assert count_parameters(build_student("tiny_conv", 12, width=2)) > count_parameters(build_student("tiny_conv", 12))


def test_other_mel_counts_and_frontend_kwargs():
    model = build_student("bc_resnet1", 3, n_mels=64, hop_ms=20, top_db=None).eval()
    assert model.frontend.n_mels == 64
    assert model(torch.randn(1, 8000)).shape == (1, 3)
    assert model.arch_args["hop_ms"] == 20
    rebuilt = build_student(**model.arch_args)
    rebuilt.load_state_dict(model.state_dict())


def test_specaugment_only_in_training():
    model = build_student("tiny_conv", 3, specaugment=dict(freq_masks=2, freq_width=10, time_masks=2, time_width=30))
    assert model.specaugment is not None
    x = torch.randn(2, 8000) * 0.1
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a, b)
    # Training: masks change the features the body sees.
    seen = []
    hook = model.body.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].clone()))
    model.train()
    torch.manual_seed(0)
    model(x)
    model.eval()
    model(x)
    hook.remove()
    assert not torch.equal(seen[0], seen[1])


def test_empty_specaugment_dict_means_defaults():
    assert build_student("tiny_conv", 3, specaugment={}).specaugment is not None
    assert build_student("tiny_conv", 3).specaugment is None


def test_unknown_student():
    with pytest.raises(ValueError, match="unknown student"):
        build_student("resnet1000", 3)

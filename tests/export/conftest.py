"""Fixtures with the stand-in students of tests/standins.py."""
import pytest

from tests.standins import ToneStudent


@pytest.fixture
def tone_student():
    return ToneStudent().eval()



@pytest.fixture(scope="session")
def exported_tiny(tmp_path_factory):
    """(model, export_onnx result) for a random TinyStudent, fp32 + int8, exported once."""
    import torch

    from tests.standins import TinyStudent
    from wakeword_dist.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = TinyStudent().eval()
    out = tmp_path_factory.mktemp("onnx_tiny") / "model.onnx"
    return model, export_onnx(model, out, label_names=["negative", "wake", "unknown"])


@pytest.fixture(scope="session")
def tone_onnx(tmp_path_factory):
    """Path of the ToneStudent exported to fp32 ONNX, once per session."""
    from wakeword_dist.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx_tone") / "tone.onnx"
    export_onnx(ToneStudent().eval(), out, int8=False)
    return out

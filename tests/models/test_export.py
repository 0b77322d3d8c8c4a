"""A student exports with torch.onnx (dynamo) and matches onnxruntime at batch 1 and 3."""

import numpy as np
import pytest
import torch

from wakeword_dist.models import build_student, compute_cmvn

ort = pytest.importorskip("onnxruntime")


def _export_and_compare(name, tmp_path):
    torch.manual_seed(0)
    model = build_student(name, 4, specaugment=dict(freq_masks=2, freq_width=5, time_masks=2, time_width=10))
    # Calibrate like a trained model (CMVN + BN running stats over loud/mid/quiet clips); at init
    # some bodies map every clip to the same output, which would make the parity check vacuous.
    calib = [torch.randn(4, 16000) * level for level in (0.5, 0.05, 1e-3)]
    model.frontend.set_cmvn(*compute_cmvn(model.frontend, calib))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for batch in calib:
            model(batch)
    model.eval()
    path = tmp_path / f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(model, (torch.randn(2, 16000) * 0.1,), str(path), dynamo=True,
                      input_names=["audio"], output_names=["logits"], dynamic_shapes=({0: batch},))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in (1, 3):
        # Loud, quiet and mid clips in one batch: exercises the per-clip dB floor in the graph.
        x = torch.randn(b, 16000, generator=torch.Generator().manual_seed(b))
        x = x * torch.tensor([0.5, 1e-3, 0.05][:b])[:, None]
        got = torch.from_numpy(session.run(None, {"audio": x.numpy().astype(np.float32)})[0])
        with torch.no_grad():
            want = model(x)
        assert got.shape == (b, 4)
        if b == 3:  # the clips must give different outputs, or parity proves little
            assert (want[0] - want[1]).abs().max() > 1e-3
        worst = max(worst, (got.softmax(-1) - want.softmax(-1)).abs().max().item())
    print(f"{name}: max |p_onnx - p_torch| = {worst:.2e}")
    assert worst < 1e-4, worst


def test_tiny_conv_exports(tmp_path):
    _export_and_compare("tiny_conv", tmp_path)


# Same front end; the bodies add SE/hardswish (MobileNet) and sub-spectral-norm reshapes (BC-ResNet).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv3_small", "bc_resnet1", "bc_resnet8"])
def test_other_students_export(name, tmp_path):
    _export_and_compare(name, tmp_path)

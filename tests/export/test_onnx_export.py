"""ONNX export: checker, parity at two batch sizes, int8 runs, ONNX scoring adapter."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tests.conftest import REPO
from tests.standins import SR, TinyStudent, tone_stream

from wakeword_dist.eval.report import evaluate_model
from wakeword_dist.export.onnx_export import check_parity, evaluate_onnx, metric_change

NAMES = ["negative", "wake", "unknown"]


@pytest.fixture
def exported(exported_tiny):
    return exported_tiny


def test_export_parity_checker_and_files(exported):
    model, res = exported
    assert set(res["max_abs_diff"]) == {1, 3}
    assert max(res["max_abs_diff"].values()) <= 1e-4
    onnx.checker.check_model(res["onnx_path"], full_check=True)
    onnx.checker.check_model(res["int8_path"])
    assert res["int8_path"].endswith("model.int8.onnx")
    assert res["onnx_bytes"] > 0 and res["int8_bytes"] > 0
    folder = sorted(p.name for p in __import__("pathlib").Path(res["onnx_path"]).parent.iterdir())
    assert folder == ["model.int8.onnx", "model.onnx"]       # no temp leftovers
    meta = {p.key: p.value for p in onnx.load(res["onnx_path"]).metadata_props}
    assert meta["sample_rate"] == "16000" and meta["clip_samples"] == "16000"


def test_onnx_matches_torch_on_fresh_batch(exported):
    model, res = exported
    x = 0.05 * torch.randn(5, 16000)
    with torch.no_grad():
        ref = torch.softmax(model(x), -1).numpy()
    for path, atol in ((res["onnx_path"], 1e-4), (res["int8_path"], 5e-2)):
        out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"audio": x.numpy()})[0]
        assert out.shape == (5, 3)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
        assert np.abs(out - ref).max() <= atol
    q = res["int8_quantization"]
    assert q["quantized_node_count"] > 0 and any("STFT" in n for n in q["excluded_nodes"])


def test_parity_check_raises_with_max_diff(exported):
    model, res = exported
    assert check_parity(res["onnx_path"], model, atol=1e-4).keys() == {1, 3}
    torch.manual_seed(1)
    other = TinyStudent().eval()                       # different weights → large diff
    with pytest.raises(RuntimeError, match="max abs diff"):
        check_parity(res["onnx_path"], other, atol=1e-4)


def test_evaluate_onnx_matches_torch_and_int8_change(exported):
    model, res = exported
    audio = torch.tensor(np.stack([tone_stream(1.0, [0.2], seed=i) for i in range(3)]
                                  + [tone_stream(1.0, [], seed=9 + i) for i in range(3)]))

    def kwargs():
        return dict(clip_batches=[{"audio": audio, "label": torch.tensor([1, 1, 1, 0, 0, 2]),
                                   "key": list("abcdef")}],
                    stream_items=[("s", tone_stream(12.0, [5.0]), SR)], positive_index=1,
                    label_names=NAMES, target_fa_per_hour=1000.0, progress=False)

    ref = evaluate_model(model, **kwargs())
    fp32 = evaluate_onnx(res["onnx_path"], **kwargs())
    int8 = evaluate_onnx(res["int8_path"], **kwargs())
    for key in ("accuracy", "f1_macro", "frr_at_target", "fa_per_hour", "threshold", "clip_auc"):
        assert fp32[key] == pytest.approx(ref[key], nan_ok=True)
    np.testing.assert_allclose(fp32["det"]["fa_per_hour"], ref["det"]["fa_per_hour"])
    np.testing.assert_allclose(fp32["det"]["frr"], ref["det"]["frr"])
    change = metric_change(fp32, int8)
    assert set(change) >= {"accuracy", "f1_macro", "frr_at_target", "fa_per_hour"}
    assert all(np.isfinite(v) for v in change.values())


def test_export_keeps_known_noise_out_of_the_users_logs(tmp_path):
    """A fresh process, as a user runs it: no torchvision probe lines, no onnxruntime
    pre-processing hint, and the root logger left without handlers (no basicConfig side effect)."""
    import subprocess
    import sys

    program = (
        "import logging, torch\n"
        "from tests.standins import TinyStudent\n"
        "from wakeword_dist.export.onnx_export import export_onnx\n"
        "torch.manual_seed(0)\n"
        f"r = export_onnx(TinyStudent().eval(), {str(tmp_path / 'm.onnx')!r}, label_names=['a', 'b', 'c'])\n"
        "assert r['int8_path'], r\n"
        "print('root handlers', len(logging.getLogger().handlers))\n")
    proc = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "torchvision" not in output and "pre-processing" not in output, output[-3000:]
    assert "root handlers 0" in proc.stdout

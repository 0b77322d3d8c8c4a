"""Export a student to ONNX (fp32 + int8), check parity, and score ONNX models.

The exported graph takes raw audio ``audio`` (B, clip_samples) float32 at ``sample_rate``
and returns class probabilities ``probs`` (B, C) (softmax applied inside); the batch
axis is dynamic. torchaudio's MelSpectrogram exports as a native ONNX STFT with the
dynamo exporter (the legacy TorchScript exporter fails on STFT).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

FRONT_END_END_OP = "Log"   # the log of the mel power closes the front end in every student
QUANT_OP_TYPES = ("MatMul", "Conv", "Gemm")


class ProbabilityWrapper(torch.nn.Module):
    """(B, S) audio → (B, C) softmax probabilities of the wrapped logits model."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(audio), dim=-1)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def _without_known_noise():
    """Drop two messages that say nothing about this export, and only those:

    - torch.onnx's "torchvision is not installed. Skipping torchvision::nms" (4 lines per
      export: it probes detection ops that no student uses);
    - onnxruntime's "Please consider to run pre-processing before quantization" hint, which it
      logs on the *root* logger -- and ``logging.warning`` on a handler-less root also runs
      ``basicConfig``, leaving a stderr handler on the user's root logger. A NullHandler held
      on the root for the call prevents that. (The pre-processing, symbolic shape inference
      and graph optimisation, is not run: the graph is quantized as exported and measured.)
    """
    torch_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    root = logging.getLogger()
    torch_filter, root_filter = _DropMessages(("torchvision is not installed",)), \
        _DropMessages(("Please consider to run pre-processing", "Please consider pre-processing"))
    placeholder = logging.NullHandler() if not root.handlers else None
    torch_logger.addFilter(torch_filter)
    root.addFilter(root_filter)
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        yield
    finally:
        torch_logger.removeFilter(torch_filter)
        root.removeFilter(root_filter)
        if placeholder is not None:
            root.removeHandler(placeholder)


def _check_audio(batch: int, clip_samples: int, seed: int) -> torch.Tensor:
    """(batch, clip_samples) reproducible Gaussian audio at −20 dBFS RMS (std 0.1)."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, clip_samples, generator=g)


def _ort_session(path: str | Path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def front_end_nodes(model_proto) -> list[str]:
    """Names of the nodes up to and including the first ``Log`` (topological order).

    That is the STFT → power → mel-filterbank MatMul → log chain. Its MatMul sees the
    mel power spectrum, whose range spans ~10 decades; per-tensor uint8 activations would
    flatten quiet bands to 0 before the log, so it stays fp32. [] if the graph has no Log.
    """
    names = []
    for node in model_proto.graph.node:
        names.append(node.name)
        if node.op_type == FRONT_END_END_OP:
            return names
    return []


def quantize_int8(fp32_path: str | Path, int8_path: str | Path) -> dict:
    """Dynamic int8 quantization of MatMul/Conv/Gemm weights outside the front end.

    Returns {excluded_nodes, quantized_op_types, quantized_node_count}.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(fp32_path))
    excluded = front_end_nodes(proto)
    with _without_known_noise():
        quantize_dynamic(str(fp32_path), str(int8_path), op_types_to_quantize=list(QUANT_OP_TYPES),
                         nodes_to_exclude=excluded, weight_type=QuantType.QInt8)
    q_ops = [n.op_type for n in onnx.load(str(int8_path)).graph.node]
    return {"excluded_nodes": excluded, "quantized_op_types": list(QUANT_OP_TYPES),
            "quantized_node_count": sum(op in ("MatMulInteger", "ConvInteger", "DynamicQuantizeLinear")
                                        for op in q_ops)}


def _max_diff(session, wrapper: torch.nn.Module, audio: torch.Tensor) -> float:
    with torch.inference_mode():
        ref = wrapper(audio).numpy()
    out = session.run(None, {"audio": audio.numpy()})[0]
    return float(np.max(np.abs(out - ref)))


def check_parity(onnx_path: str | Path, model: torch.nn.Module, *,
                 check_batches: Sequence[int] = (1, 3), atol: float = 1e-4,
                 clip_samples: int = 16000, seed: int = 0) -> dict[int, float]:
    """Max |onnxruntime − PyTorch softmax| per batch size on reproducible random audio.

    model: the logits student ((B, S) → (B, C)) or a ``ProbabilityWrapper`` around it.

    Raises RuntimeError naming the max abs diff if any exceeds atol; returns {batch: diff}.
    """
    if not isinstance(model, ProbabilityWrapper):   # a CPU copy: the caller's model is untouched
        model = ProbabilityWrapper(copy.deepcopy(model).cpu().float().eval())
    wrapper = model.eval()
    session = _ort_session(onnx_path)
    diffs = {int(b): _max_diff(session, wrapper, _check_audio(b, clip_samples, seed + b))
             for b in check_batches}
    worst = max(diffs.values())
    if not worst <= atol:
        raise RuntimeError(f"ONNX/PyTorch parity failed for {onnx_path}: max abs diff {worst:.3g} "
                           f"> atol {atol:g} (per batch size: {diffs})")
    return diffs


def export_onnx(model: torch.nn.Module, out_path: str | Path, *, sample_rate: int = 16000,
                clip_samples: int = 16000, opset: int = 18, int8: bool = True,
                check_batches: Sequence[int] = (1, 3), atol: float = 1e-4,
                label_names: Sequence[str] | None = None, seed: int = 0) -> dict:
    """Export ``model`` ((B, S) audio → (B, C) logits) with softmax to ``out_path``.

    Steps: dynamo export (dynamic batch) → sample-rate/clip/label metadata →
    ``onnx.checker.check_model`` → onnxruntime vs PyTorch parity at each batch size in
    check_batches (RuntimeError with the max abs diff if > atol) → optional int8 copy
    ``<stem>.int8.onnx`` (see ``quantize_int8``; its diff is measured, not enforced).
    Files are written under temp names and renamed only once checks pass.

    Returns {onnx_path, onnx_bytes, max_abs_diff {batch: diff}, int8_path, int8_bytes,
    int8_max_abs_diff {batch: diff}, int8_quantization, opset}.
    """
    import onnx

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ProbabilityWrapper(copy.deepcopy(model).cpu().float().eval()).eval()
    tmpdir = Path(tempfile.mkdtemp(prefix=".export-", dir=out_path.parent))
    try:
        tmp_fp32 = tmpdir / "model.onnx"
        batch = torch.export.Dim("batch", min=1)
        with _without_known_noise():
            torch.onnx.export(wrapper, (_check_audio(2, clip_samples, seed),), str(tmp_fp32),
                              dynamo=True, opset_version=opset, input_names=["audio"],
                              output_names=["probs"], dynamic_shapes={"audio": {0: batch}},
                              external_data=False, verbose=False)
        proto = onnx.load(str(tmp_fp32))
        meta = {"sample_rate": str(sample_rate), "clip_samples": str(clip_samples),
                "label_names": json.dumps(list(label_names) if label_names else [])}
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(tmp_fp32))
        onnx.checker.check_model(str(tmp_fp32), full_check=True)

        diffs = check_parity(tmp_fp32, wrapper, check_batches=check_batches, atol=atol,
                             clip_samples=clip_samples, seed=seed)
        result = {"onnx_path": str(out_path), "max_abs_diff": diffs, "opset": opset,
                  "int8_path": None, "int8_bytes": None, "int8_max_abs_diff": None,
                  "int8_quantization": None}
        if int8:
            tmp_int8 = tmpdir / "model.int8.onnx"
            result["int8_quantization"] = quantize_int8(tmp_fp32, tmp_int8)
            onnx.checker.check_model(str(tmp_int8))
            q_session = _ort_session(tmp_int8)
            result["int8_max_abs_diff"] = {
                int(b): _max_diff(q_session, wrapper, _check_audio(b, clip_samples, seed + b))
                for b in check_batches}
            int8_path = out_path.with_name(out_path.name.removesuffix(".onnx") + ".int8.onnx")
            os.replace(tmp_int8, int8_path)
            result["int8_path"] = str(int8_path)
            result["int8_bytes"] = int8_path.stat().st_size
        os.replace(tmp_fp32, out_path)
        result["onnx_bytes"] = out_path.stat().st_size
        return result
    finally:
        for p in tmpdir.glob("*"):
            p.unlink()
        tmpdir.rmdir()


class OnnxClassifier(torch.nn.Module):
    """Adapter so report code can score an exported model: (B, S) audio → (B, C) log-probs.

    softmax(log p) = p, so ``evaluate_model`` gets the ONNX probabilities back unchanged.
    Runs on CPU with onnxruntime; inputs are moved to CPU.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = str(path)
        self.session = _ort_session(path)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio.detach().to("cpu", torch.float32).numpy()
        probs = self.session.run(None, {"audio": x})[0]
        return torch.log(torch.from_numpy(probs).clamp_min(1e-30))


def evaluate_onnx(onnx_path: str | Path, **evaluate_kwargs) -> dict:
    """``evaluate_model`` on an ONNX file (any kwargs of evaluate_model except device)."""
    from wakeword_dist.eval.report import evaluate_model
    return evaluate_model(OnnxClassifier(onnx_path), device="cpu", **evaluate_kwargs)


def metric_change(reference: dict, other: dict,
                  metrics: Sequence[str] = ("accuracy", "f1_macro", "frr_at_target", "fa_per_hour",
                                            "clip_auc")) -> dict:
    """{metric: other − reference}, e.g. int8 report minus fp32 report; metrics missing
    from either (or None there) are left out."""
    return {m: float(other[m]) - float(reference[m]) for m in metrics
            if reference.get(m) is not None and other.get(m) is not None}

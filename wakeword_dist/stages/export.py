"""`wakeword-dist export`: the run's best student to ONNX (raw audio in, probabilities out).

Writes `model.onnx` and `model.int8.onnx` beside the run's report, checks parity with
onnxruntime, and scores the int8 file on test at the fp32 model's val threshold so the int8
metric change is measured, not assumed. The fp32 figures come from the PyTorch student (its
shared-STFT stream scorer; the run's report.json when `evaluate` wrote it for the same checkpoint
and data): the fp32 ONNX file equals it within the parity check's atol, and
scoring it window by window as well took two thirds of the stage's time (the ONNX graph
recomputes every STFT frame ~10 times at a 0.1-s hop). The figures and the ONNX files also go
into the training run's W&B run.
"""

from __future__ import annotations

import json
from pathlib import Path

from accelerate import Accelerator

from wakeword_dist.atomic import write_json_atomic
from wakeword_dist.config import Config
from wakeword_dist.export.onnx_export import OnnxClassifier, export_onnx, metric_change
from wakeword_dist.stages.evaluate import val_then_test
from wakeword_dist.train import best_store, data_setup
from wakeword_dist.train.run_logger import log_export
from wakeword_dist.train.validate import summary_of, validate


def evaluated_figures(cfg: Config, run_dir: Path, meta: dict) -> tuple[float | None, dict | None, str]:
    """(θ, fp32 test summary, where from) out of the run's own report.json, when `evaluate` wrote
    it for this best checkpoint on this dataset's test split; else (None, None, ""). The same
    model, θ and data give the same figures, so scoring val and test again would only cost time."""
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None, None, ""
    same = (report.get("best_step") == meta["training"].get("steps")
            and report.get("test_root") == cfg.data.root and not report.get("test_sources")
            and not cfg.eval.test_root and not cfg.eval.test_sources
            and report.get("target_fa_per_hour") == cfg.eval.target_fa_per_hour
            and all(report.get(k) is not None for k in ("threshold", "frr_at_target", "fa_per_hour")))
    if not same:
        return None, None, ""
    return (float(report["threshold"]), summary_of(report),
            f"pytorch student, from {run_dir / 'report.json'} (fp32 ONNX parity checked above)")


def export_run(cfg: Config, run_dir: Path | None = None) -> dict:
    run_dir = Path(run_dir or cfg.job_dir())
    model, meta = best_store.load_best_student(run_dir / "best")
    result = export_onnx(model, run_dir / "model.onnx", sample_rate=cfg.data.sample_rate,
                         clip_samples=cfg.data.clip_samples, opset=cfg.export.opset, int8=cfg.export.int8,
                         label_names=meta["label_names"])
    print(f"[export] {result['onnx_path']} ({result['onnx_bytes'] / 1024:.0f} KiB), "
          f"max |onnxruntime - torch| = {max(result['max_abs_diff'].values()):.2e}")
    if cfg.export.int8 and result["int8_path"]:
        acc = Accelerator()
        data = data_setup.open_data(cfg, job="baseline")
        theta, fp32, source = evaluated_figures(cfg, run_dir, meta)
        if fp32 is None:
            _, theta, scored = val_then_test(acc, model.to(acc.device), data, cfg)  # = the fp32 ONNX file's, to parity atol
            fp32, source = scored["summary"], "pytorch student scored here (fp32 ONNX parity checked above)"
        result["fp32_scored_as"] = source
        int8 = validate(acc, OnnxClassifier(result["int8_path"]), data, cfg, split="test", threshold=theta)
        result["test_fp32"], result["test_int8"] = fp32, int8["summary"]
        result["int8_minus_fp32"] = metric_change(fp32, int8["summary"])
        print(f"[export] int8 ({result['int8_bytes'] / 1024:.0f} KiB) minus fp32 on test: "
              + ", ".join(f"{k} {v:+.4f}" for k, v in result["int8_minus_fp32"].items()))
    write_json_atomic(run_dir / "export.json", result)
    log_export(cfg, run_dir, result)  # into the training run's W&B summary, + the ONNX files
    return result

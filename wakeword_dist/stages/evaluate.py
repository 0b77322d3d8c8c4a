"""`wakeword-dist evaluate`: score a run's best checkpoint on val (choose θ) and test (report at θ).

θ is chosen on val for `eval.target_fa_per_hour` and then used unchanged on test; val and
test use disjoint halves of the `stream` split (see train/validate.py). Collective: runs
as one process or under `accelerate launch -m wakeword_dist.cli evaluate`. The test figures,
the DET curve and the best student (a W&B artifact) also go into the training run's W&B run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from accelerate import Accelerator

from wakeword_dist import collectives
from wakeword_dist.atomic import write_json_atomic
from wakeword_dist.config import Config
from wakeword_dist.data import reader
from wakeword_dist.eval.report import write_report
from wakeword_dist.train import best_store, data_setup
from wakeword_dist.train.run_logger import log_evaluation
from wakeword_dist.train.validate import validate


def val_then_test(acc, model, data, cfg: Config) -> tuple[dict, float, dict]:
    """θ chosen on val for ``eval.target_fa_per_hour`` (rank 0's, broadcast), then test scored
    at that θ unchanged. ``model``: (B, S) raw audio -> (B, C) logits (a student or an ONNX
    file behind ``OnnxClassifier``). Returns (val result, θ, test result) of ``validate``.

    Test is this dataset's, or ``eval.test_root``'s, restricted to ``eval.test_sources`` when set;
    either of those scores all of the test root's streams (none of them chose θ), else the
    second half."""
    val = validate(acc, model, data, cfg, split="val")
    threshold = collectives.broadcast_object(val["summary"].get("threshold") if acc.is_main_process else None)
    test_data = test_splits(cfg, data)
    sources = {"include_sources": list(cfg.eval.test_sources)} if cfg.eval.test_sources else {}
    half = "all" if (cfg.eval.test_root or cfg.eval.test_sources) else "test"
    test = validate(acc, model, test_data, cfg, split="test", threshold=threshold, sources=sources,
                    stream_half=half, per_engine=cfg.eval.per_engine)
    return val, threshold, test


def report_dir(cfg: Config, run_dir: Path) -> Path:
    """Where report.json goes: the run folder, or ``eval-<name of eval.test_root>/`` inside it for
    another dataset (the in-domain report, which compare reads, is never overwritten)."""
    if not cfg.eval.test_root:
        return run_dir
    name = cfg.eval.test_root.rstrip("/").rsplit("/", 1)[-1] or "other"
    out = run_dir / f"eval-{name}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_splits(cfg: Config, data):
    """``data`` with its test and stream splits taken from ``eval.test_root`` when set. The other
    root needs only test/ (and stream/ for FA/h); its label map and sample rate must match."""
    if not cfg.eval.test_root:
        return data
    root = reader.location(cfg.eval.test_root)
    index = reader.read_index(root / "test")
    reader.check_sample_rate(index, cfg.data.sample_rate, root / "test")
    if list(index["label_names"]) != list(data.label_names):
        raise ValueError(f"label maps differ: {root / 'test' / 'index.json'} has {list(index['label_names'])}, "
                         f"the run's dataset {cfg.data.root} has {list(data.label_names)}")
    return dataclasses.replace(data, test_dir=root / "test", stream_dir=root / "stream")


def evaluate_run(cfg: Config, run_dir: Path | None = None) -> dict | None:
    """Write report.json + det.png into the run folder; returns the test report on rank 0."""
    run_dir = Path(run_dir or cfg.job_dir())
    best = run_dir / "best"
    if not (best / "model.safetensors").is_file():
        raise FileNotFoundError(f"no trained model in {best} (run `wakeword-dist train` first)")
    acc = Accelerator()
    model, meta = best_store.load_best_student(best, device=acc.device)
    data = data_setup.open_data(cfg, job="baseline")
    if list(meta["label_names"]) != list(data.label_names):
        raise ValueError(f"model in {best} was trained with labels {meta['label_names']}, "
                         f"the dataset {cfg.data.root} has {data.label_names}")
    val, threshold, test = val_then_test(acc, model, data, cfg)
    if not acc.is_main_process:
        return None
    report = dict(test["report"])
    report.update({"split": "test", "test_root": cfg.eval.test_root or cfg.data.root,
                   "test_sources": list(cfg.eval.test_sources), "val_threshold_choice": val["summary"],
                   "run_dir": str(run_dir),
                   "best_step": meta["training"].get("steps"), "model": meta["architecture"]})
    out_dir = report_dir(cfg, run_dir)
    write_report(report, out_dir, name=f"{run_dir.parent.name}/{run_dir.name}")
    # strict JSON like report.json: an undefined metric (NaN) is written as null
    write_json_atomic(out_dir / "val_report.json", {k: v for k, v in val["report"].items() if k != "activations"})
    if not cfg.eval.test_root:  # another dataset's figures stay beside it, not in the run's summary
        log_evaluation(cfg, run_dir, report)  # into the training run's W&B summary, + the best student
    print(f"[evaluate] {out_dir}: test F1 {report['f1_macro']:.4f}, FRR {report['frr_at_target']:.4f} "
          f"at {report['fa_per_hour']:.2f} FA/h (θ={threshold:.3f} from val); near misses accepted "
          f"{report['hard_negative_far']:.3f}")
    return report

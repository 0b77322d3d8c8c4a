"""Leave one engine out (the held-out engine never reaches training, val or θ) and `evaluate` on
another shard root (θ from the run's own val), on the tiny multi-engine dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.stages.conftest import pipeline_args


def _tiny_cfg(shards: Path, tmp: Path, *overrides: str):
    from wakeword_dist.config import load_config

    return load_config(str(REPO / "configs" / "ci_tiny.yaml"),
                       [f"data.root={shards}", f"run.runs_dir={tmp / 'runs'}", "logging.wandb=disabled", *overrides])


def test_held_out_engine_never_reaches_training_or_theta(tiny_shards, tmp_path):
    import torch
    from accelerate import Accelerator

    from wakeword_dist.data import reader
    from wakeword_dist.models.registry import build_student
    from wakeword_dist.stages.loeo import engines_in, held_out_config
    from wakeword_dist.train import data_setup
    from wakeword_dist.train.validate import validate

    cfg = _tiny_cfg(tiny_shards, tmp_path)
    engines = engines_in(cfg)
    assert len(engines) >= 3, engines  # espeak-ng, flite, festival, festival-l2 in the tiny preset
    train_source = reader.split_sources(tiny_shards / "train")
    stream_source = reader.split_sources(tiny_shards / "stream")
    test_source = reader.split_sources(tiny_shards / "test")
    group = {x["key"]: x["meta"]["voice_group"] for s in ("train", "test")
             for x in reader.iter_split(tiny_shards / s)}
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    student = build_student("tiny_conv", 2, width=0.5).eval()
    for engine in engines:
        sub = held_out_config(cfg, engine)
        assert sub.run.experiment == f"ci_tiny-loeo-{engine}" and sub.eval.test_sources == [engine]
        data = data_setup.open_data(sub, job="distill")
        seen = set()
        for epoch in range(2):
            for batch in data_setup.train_loader(sub, data, acc, epoch=epoch, skip_batches=0,
                                                 with_teacher_logits=False):
                seen.update(train_source[k] for k in batch["key"])
        assert engine not in seen and seen == set(engines) - {engine}
        # nor its test talkers by another engine's voice: splits are disjoint by voice group
        # (flite's kal/slt and festival's kal/slt are one talker each), so none is trained on
        trained_groups = {group[k] for k, source in train_source.items() if source != engine}
        assert not trained_groups & {group[k] for k, s in test_source.items() if s == engine}
        # θ is chosen on val without the engine: neither its clips nor its streams are scored
        val = validate(acc, student, data, sub, split="val", per_engine=True)["report"]
        assert set(val["per_engine"]) == set(engines) - {engine}
        assert val["activations"] and all(stream_source[k] != engine for k in val["activations"])
        # the near-miss and false-accept records come from the same clips' and streams' json
        assert val["n_hard_negative_clips"] > 0 and 0 <= val["hard_negative_far"] <= 1
        assert set(val["hard_negative_far_by_kind"]) <= {"confusable", "partial", "fragment"}
        assert sum(val["false_accepts"]["by_kind"].values()) == sum(map(len, val["activations"].values()))


@pytest.mark.slow
def test_loeo_stage_trains_without_and_tests_on_each_engine(tiny_shards, tmp_path):
    from wakeword_dist.cli import main
    from wakeword_dist.config import load_config

    args = ["loeo", "--config", str(REPO / "configs" / "ci_tiny.yaml"), f"data.root={tiny_shards}",
            f"run.runs_dir={tmp_path / 'runs'}", "logging.wandb=disabled", "train.max_steps=2",
            "compare.seeds=[0]", "train.eval_every=0"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "runs" / "ci_tiny" / "loeo.json").read_text())
    assert (tmp_path / "runs" / "ci_tiny" / "loeo.png").stat().st_size > 5_000
    engines = summary["engines"]
    assert len(engines) >= 3 and set(summary["per_engine"]) == set(engines)
    for engine in engines:
        exp = tmp_path / "runs" / f"ci_tiny-loeo-{engine}"
        teacher_cfg = load_config(str(exp / "teacher" / "config.yaml"))
        assert teacher_cfg.data.exclude_sources == [engine]  # the teacher never heard it either
        for job in ("baseline", "distill"):
            report = json.loads((exp / job / "seed0" / "report.json").read_text())
            assert report["test_sources"] == [engine] and list(report["per_engine"]) == [engine]
            assert report["n_clips"] > 0 and report["stream_hours"] > 0
            assert summary["per_engine"][engine][job]["clip_auc"] == pytest.approx(report["clip_auc"])


@pytest.mark.slow
def test_evaluate_on_another_root_takes_theta_from_its_own_val(pipeline_run, tmp_path):
    from wakeword_dist.cli import main
    from wakeword_dist.data import reader
    from wakeword_dist.data.synth import synthesize

    other = tmp_path / "other_voices"
    synthesize(other, size="tiny", seed=7, progress=False)  # other speakers, other streams
    run_dir = pipeline_run["root"] / "distill" / "seed0"
    in_domain = (run_dir / "report.json").read_text()
    args = [a for a in pipeline_args(Path(pipeline_run["root"]).parents[1]) if a != "pipeline"]
    assert main(["evaluate", *args, "train.job=distill", "train.seed=0", f"eval.test_root={other}"]) == 0
    report = json.loads((run_dir / "eval-other_voices" / "report.json").read_text())
    own_val = json.loads((run_dir / "val_report.json").read_text())
    assert report["threshold_source"] == "given" and report["threshold"] == own_val["threshold"]
    assert report["test_root"] == str(other)
    assert report["n_clips"] == reader.read_index(other / "test")["num_samples"]
    # all of the other root's streams are scored (none of them chose θ), not only its second half
    assert report["stream_hours"] == pytest.approx(reader.read_index(other / "stream")["total_seconds"] / 3600)
    assert (run_dir / "report.json").read_text() == in_domain  # the in-domain report is kept

"""`run_bench` emits every figure and the P1-P5 verdicts on CPU with the tiny config."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import REPO, tiny_overrides
from wakeword_dist.bench.plan import make_plan
from wakeword_dist.bench.run import GOALS, SECTIONS, goals, run_bench
from wakeword_dist.config import load_config


def _cfg(shards, tmp_path, *extra):
    return load_config(REPO / "configs" / "ci_tiny.yaml", [*tiny_overrides(shards, tmp_path), *extra])


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.multiprocess  # the ddp section forks 1 and 2 gloo ranks
def test_run_bench_all_emits_every_figure(tiny_shards, tmp_path, capsys):
    cfg = _cfg(tiny_shards, tmp_path)
    out = tmp_path / "bench" / "bench.json"
    res = run_bench(cfg, "all", out=out, quick=True)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    for section in SECTIONS:
        assert "error" not in res[section], res[section]
    b = str(cfg.data.batch_size)

    assert _positive(res["loader"]["clips_per_s_per_worker"]) and _positive(res["loader"]["clips_per_worker_cpu_s"])
    for row in res["student"]["batches"][b].values():
        assert _positive(row["clips_per_s"]) and _positive(row["cpu_clips_per_s"])

    teacher = res["teacher"]["batches"][b]
    assert {"eager_fp32", "eager_fp16", "eager_bf16", "fold_wn_fp32", "fold_wn+fused_fe_fp32",
            "fold_wn+cl_encoder_fp32", "fold_wn+dense_pos_fp32", "exact_all_fp32"} <= teacher.keys()
    assert "skipped" in teacher["exact_all+compile_fp32"]  # not timed on CPU unless asked
    assert res["teacher_compile"]["batches"] == {} and "skipped" in res["teacher_compile"]
    for name, row in teacher.items():
        if "skipped" in row:
            continue
        assert _positive(row["clips_per_s"]), name
        assert math.isfinite(row["max_rel_err"]), name
        if row["exact"] and row["dtype"] == "fp32":
            assert row["max_rel_err"] < 1e-5, (name, row["max_rel_err"])
    truncated = [r for n, r in teacher.items() if n.startswith("truncate")]
    assert truncated and all(r["max_rel_err"] > 1e-3 for r in truncated)
    assert res["teacher"]["p3"][b]["best"] in teacher

    for row in res["online_kd"]["batches"][b].values():
        assert _positive(row["ratio"]) and _positive(row["teacher_only"]["clips_per_s"])
        assert row["ratio_overlapped"] == row["online_kd_overlapped"]["ratio"] and _positive(row["ratio_overlapped"])
    cached = res["cached_kd"]
    assert _positive(cached["batches"][b]["step_time_ratio"]) and _positive(cached["epoch"]["time_ratio"])
    ddp = res["ddp"]
    assert ddp["2_rank"]["world_size"] == 2 and ddp["2_rank"]["model"] == "DistributedDataParallel"
    assert _positive(ddp["1_rank"]["clips_per_s"]) and _positive(ddp["efficiency"])

    assert set(res["goals"]) == set(GOALS)
    for key, g in res["goals"].items():
        assert _positive(g["value"]) and isinstance(g["met"], bool), (key, g)
    printed = capsys.readouterr().out
    assert all(f"  {key} " in printed for key in GOALS) and "clips/s" in printed


def test_goals_verdicts_from_partial_results():
    assert all(g["met"] is None and g["value"] is None for g in goals({}).values())
    res = {"plan": {"basis": "wall"},
           "loader": {"clips_per_s_per_worker": 9000, "clips_per_worker_cpu_s": 12000, "headline_format": "wav",
                      "workers": 2},
           "ddp": {"efficiency": 0.5, "1_rank": {"clips_per_s": 100}, "2_rank": {"clips_per_s": 100}},
           "online_kd": {"batches": {"256": {"eager_bf16": {"ratio": 0.8}, "exact_all_bf16": {"ratio": 0.95}},
                                     "1024": {"eager_bf16": {"ratio": 0.85}, "exact_all_bf16": {"ratio": 0.88}}}}}
    g = goals(res)
    assert g["P4"]["value"] == 9000 and g["P4"]["met"] is True
    assert g["P5"]["met"] is False
    assert g["P1"]["value"] == 0.88 and g["P1"]["met"] is False  # largest batch, optimised teacher
    assert g["P2"]["met"] is None and g["P3"]["met"] is None
    res["plan"]["basis"] = "cpu"
    assert goals(res)["P4"]["value"] == 12000


def test_append_adds_sections_to_an_earlier_run_of_the_same_plan(tmp_path):
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", [f"data.root={tmp_path / 'none'}"])
    out = tmp_path / "bench.json"
    run_bench(cfg, "student", out=out, quick=True)
    res = run_bench(cfg, "cached_kd", out=out, quick=True, append=True)
    assert {"student", "cached_kd"} <= res.keys() and json.loads(out.read_text())["student"] == res["student"]
    assert res["goals"]["P2"]["met"] in (True, False)
    with pytest.raises(ValueError, match="batch_sizes"):  # another plan: never mixed into one file
        run_bench(cfg, "student", out=out, quick=True, append=True, batch_sizes=(4,))
    assert "student" in run_bench(cfg, "student", out=out, quick=True)  # without append: a fresh file
    assert "cached_kd" not in json.loads(out.read_text())


def test_plan_presets_and_overrides(monkeypatch):
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml")
    tiny = make_plan(cfg, device="cpu")
    assert tiny.shapes == "tiny" and tiny.batch_sizes == (cfg.data.batch_size,)
    assert tiny.teacher_arch["hidden_size"] == cfg.teacher.hidden_size and tiny.basis == "cpu"
    real = make_plan(cfg, shapes="real", device="cpu")
    assert real.teacher_arch["hidden_size"] == 768 and real.teacher_arch["num_hidden_layers"] == 12
    assert real.teacher_arch["conv_dim"] == (512,) * 7 and real.truncate_layers == (6, 3)
    monkeypatch.setenv("WAKEWORD_BENCH_BATCH", "256,1024")
    monkeypatch.setenv("WAKEWORD_BENCH_QUICK", "1")
    env = make_plan(cfg, shapes="real", device="cpu")
    assert env.batch_sizes == (256, 1024) and env.iters == 1 and env.rounds == 1
    with pytest.raises(ValueError, match="shapes"):
        make_plan(cfg, shapes="huge")
    with pytest.raises(ValueError, match="unknown workload"):
        run_bench(cfg, "everything")


def test_cli_bench_stage_writes_json(tmp_path, monkeypatch):
    from wakeword_dist.cli import main

    monkeypatch.setenv("WAKEWORD_BENCH_QUICK", "1")
    out = tmp_path / "b.json"
    # overrides right after the workload: cli.py's parser does not take positionals after options
    rc = main(["bench", "cached_kd", f"data.root={tmp_path / 'none'}", "--out", str(out),
               "--config", str(REPO / "configs" / "ci_tiny.yaml")])
    assert rc == 0
    res = json.loads(out.read_text())
    assert _positive(res["cached_kd"]["epoch"]["time_ratio"]) and res["goals"]["P2"]["met"] in (True, False)


def test_tone_dataset_has_every_split_the_recipe_reads(tmp_path):
    from wakeword_dist.bench.toy_data import make_tone_dataset
    from wakeword_dist.data.reader import iter_split, read_index

    counts = make_tone_dataset(tmp_path, train=8, val=4, test=4, background=3, streams=1)
    assert counts == {"train": 8, "val": 4, "test": 4, "stream": 1, "background": 3}
    for split, n in counts.items():
        index = read_index(tmp_path / split)
        assert index["label_names"] == ["negative", "hey_nova"] and index["num_samples"] == n
    train = list(iter_split(tmp_path / "train"))
    assert {s["meta"]["label"] for s in train} == {0, 1} and any(s["meta"]["hard_negative"] for s in train)
    stream = next(iter_split(tmp_path / "stream"))
    assert stream["audio"].size >= 30 * 16000

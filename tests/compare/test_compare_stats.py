"""compare: known per-seed inputs → known mean, std, paired difference and 95 % CI."""
import json
import math

import numpy as np
import pytest

from wakeword_dist import compare
from wakeword_dist.eval.det import det_curve

T2 = 4.302652729911275          # t_{0.975, 2}


def _reports():
    base = {s: {"f1_macro": f, "frr_at_target": 0.2, "fa_per_hour": 1.0, "accuracy": 0.9}
            for s, f in zip((0, 1, 2), (0.70, 0.72, 0.74))}
    dist = {s: {"f1_macro": f, "frr_at_target": 0.1, "fa_per_hour": float(fa), "accuracy": 0.95}
            for s, f, fa in zip((0, 1, 2), (1.70, 2.72, 3.74), (0.0, 1.0, 0.5))}
    return {"baseline": base, "distill": dist}


def test_aggregate_mean_std_and_paired_ci():
    c = compare.aggregate(_reports())
    assert c["baseline"] == "baseline" and c["seeds"]["distill"] == ["0", "1", "2"]
    b = c["jobs"]["baseline"]["f1_macro"]
    assert b["mean"] == pytest.approx(0.72) and b["std"] == pytest.approx(0.02) and b["n"] == 3
    d = c["paired"]["distill"]["f1_macro"]                  # diffs 1, 2, 3
    assert d["diffs"] == pytest.approx({"0": 1.0, "1": 2.0, "2": 3.0})
    assert d["mean"] == pytest.approx(2.0) and d["std"] == pytest.approx(1.0) and d["n"] == 3
    half = T2 * 1.0 / math.sqrt(3)
    assert d["ci95"] == pytest.approx([2 - half, 2 + half], rel=1e-6)
    frr = c["paired"]["distill"]["frr_at_target"]
    assert frr["mean"] == pytest.approx(-0.1) and frr["std"] == pytest.approx(0.0, abs=1e-12)
    assert "baseline" not in c["paired"]


def test_t_table_fallback_matches_scipy(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_scipy(name, *a, **k):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert compare.t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert compare.t_quantile_975(11) == pytest.approx(2.228)     # nearest smaller: conservative


def test_unpaired_seeds_and_single_seed():
    r = _reports()
    del r["distill"][2]
    r["baseline"][7] = dict(r["baseline"][0])
    c = compare.aggregate(r, metrics=("f1_macro",))
    assert c["paired"]["distill"]["f1_macro"]["n"] == 2
    one = compare.aggregate({"baseline": {0: {"f1_macro": 0.5}}, "distill": {0: {"f1_macro": 0.6}}},
                            metrics=("f1_macro",))
    assert math.isnan(one["paired"]["distill"]["f1_macro"]["std"])
    with pytest.raises(ValueError):
        compare.aggregate({"a": {}, "b": {}})


def test_write_table_plot(tmp_path):
    c = compare.aggregate(_reports())
    path = compare.write_comparison(c, tmp_path / "comparison.json")
    loaded = json.loads(path.read_text())                    # strict JSON (NaN → null)
    assert loaded["paired"]["distill"]["f1_macro"]["mean"] == pytest.approx(2.0)
    table = compare.print_table(c)
    assert table.row_count == 4
    rng = np.random.default_rng(0)
    dets = {f"{job} seed{s}": det_curve(rng.random(20), [rng.random(300) * 0.9], 0.1, total_hours=0.1)
            for job in ("baseline", "distill") for s in range(3)}
    png = compare.plot_comparison(c, dets, tmp_path / "comparison.png")
    nested = {job: {s: dets[f"{job} seed{s}"] for s in range(3)} for job in ("baseline", "distill")}
    png2 = compare.plot_comparison(c, nested, tmp_path / "nested.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png2.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.json", "comparison.png", "nested.png"]


def test_log_to_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    c = compare.aggregate(_reports())
    run_dir = compare.log_to_wandb(c, project="wwd-test", group="g", mode="offline")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and run_dir is not None and runs[0].samefile(run_dir)
    assert list(runs[0].glob("*.wandb"))

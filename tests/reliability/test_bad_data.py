"""Bad data mid-training: skipped, counted and named, never fatal until there is too much of it.

The damaged copy of the tiny dataset (conftest `bad_shards`) has, in its train split, a wav member
that does not decode, a clip of the wrong length, a clip at 8 kHz and a shard cut in the middle of
its last member. The 2-rank variant (both ranks' shards damaged, ranks stay in step, result equal
to an uninterrupted run) is the story in test_kill_and_preempt.py.
"""

from __future__ import annotations

import json
import logging

from reliability_helpers import CI_TINY, run_cli

from tests.conftest import tiny_overrides
from wakeword_dist.config import load_config
from wakeword_dist.data.reader import make_train_loader, read_index
from wakeword_dist.data.sources import bad_fraction_lower_bound
from wakeword_dist.train.recipe import run
from wakeword_dist.train.run_logger import read_metrics


def _overrides(shards, runs, **extra):
    return tiny_overrides(shards, runs, **{"train.job": "baseline", "train.eval_every": 0,
                                           "logging.wandb": "disabled", **extra})


def test_every_kind_of_bad_clip_is_skipped_counted_and_named_once(bad_shards, caplog):
    root, damage = bad_shards
    caplog.set_level(logging.WARNING, logger="wakeword_dist.data")
    loader = make_train_loader(root / "train", batch_size=16, batches_per_epoch=30, rank=0, world_size=1,
                               seed=0, epoch=0, num_workers=0)
    batches = list(loader)
    assert len(batches) == 30 and all(len(b["key"]) == 16 for b in batches), "full batches despite bad clips"
    bad_keys = {key for _, key, _ in damage["bad"]}
    assert not bad_keys & {k for b in batches for k in b["key"]}, "a bad clip reached a batch"

    warnings = [r.getMessage() for r in caplog.records if "skipping bad sample" in r.getMessage()]
    for shard, key, kind in damage["bad"]:
        named = [w for w in warnings if f"{shard} key={key}:" in w]
        assert len(named) == 1, f"{kind} clip {shard}/{key} must be logged exactly once: {named}"
    truncated = [w for w in warnings if damage["truncated"] in w and "cut short" in w]
    assert len(truncated) == 1, warnings
    # every pass over the damaged shards counts again, the log names each (shard, key) once
    assert sum(b["skipped"] for b in batches) >= len(warnings) == len(damage["bad"]) + 1
    # ... and so does every read: both are counted where a clip is consumed, so the fraction is
    # the true one although the shuffle buffer reads ~6 passes of the split ahead
    true_fraction = (len(damage["bad"]) + 1) / read_index(root / "train")["num_samples"]
    measured = sum(b["skipped"] for b in batches) / sum(b["read"] for b in batches)
    assert abs(measured - true_fraction) < 0.2 * true_fraction, (measured, true_fraction)


def test_training_on_bad_data_continues_and_logs_the_count(bad_shards, tmp_path):
    root, _ = bad_shards
    # the default train.max_bad_fraction (0.05) against 4 bad clips in 160 (2.5 %), although the
    # 1000-clip shuffle buffer reads the split ~6 times before the first batch
    # train.seed=2: its draws (resampled shards) put bad clips in early batches, so the running
    # fraction passes 5 % (5.9 %) before settling (1.5 %): the case the bound exists for. Seed 0
    # happens to see 1 bad clip in 129 and would not exercise it.
    cfg = load_config(CI_TINY, _overrides(root, tmp_path, **{"train.seed": 2}))
    assert cfg.train.max_bad_fraction == 0.05
    result = run(cfg)
    assert result["step"] == cfg.train.epochs * cfg.train.batches_per_epoch
    rows = [m for m in read_metrics(cfg.job_dir()) if "data/skipped" in m]
    skipped = [m["data/skipped"] for m in rows]
    assert len(skipped) == result["step"] and skipped[-1] > 0
    assert skipped == sorted(skipped), "data/skipped is a running total"
    fractions = [m["data/bad_fraction"] for m in rows]
    # 4 bad in 160 (2.5 %) seen through ~130 reads: 5 % at times, which the bound tells from > 5 %
    assert 0 < fractions[-1] < 0.1 and max(fractions) > 0.05, fractions
    assert json.loads((cfg.job_dir() / "final.json").read_text())["completed"]


def test_too_much_bad_data_stops_with_exit_1_naming_the_fraction(bad_shards, tmp_path, capsys):
    root, _ = bad_shards
    code, lines = run_cli(capsys, ["train", "--config", str(CI_TINY),
                                   *_overrides(root, tmp_path, **{"train.max_bad_fraction": 0.001})])
    assert code == 1
    assert len(lines) == 1, lines
    assert "clips read failed to decode" in lines[0] and "train.max_bad_fraction=0.001" in lines[0], lines
    run_dir = tmp_path / "ci_tiny" / "baseline" / "seed0"
    assert not (run_dir / "final.json").exists()


def test_the_bad_fraction_stops_a_run_only_when_surely_above_the_limit():
    # one bad clip in the first 17 is 6 %, but not evidence against a 5 % limit
    assert bad_fraction_lower_bound(1, 17) < 0.05 < 1 / 17
    assert bad_fraction_lower_bound(80, 1000) > 0.05          # 8 % over 1000 clips is
    assert bad_fraction_lower_bound(0, 10) == bad_fraction_lower_bound(0, 0) == 0.0
    assert bad_fraction_lower_bound(10, 10) > 0.7              # all bad: stops at once

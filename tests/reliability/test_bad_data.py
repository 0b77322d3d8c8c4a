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
from wakeword_dist.data.reader import make_train_loader
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


def test_training_on_bad_data_continues_and_logs_the_count(bad_shards, tmp_path):
    root, _ = bad_shards
    # 0.5: the 160-clip split is read ahead through a 1000-clip shuffle buffer, which counts the
    # truncated shard once per pass (~27% at step 1, 12% after 8 steps; docs/reliability.md)
    cfg = load_config(CI_TINY, _overrides(root, tmp_path, **{"train.max_bad_fraction": 0.5}))
    result = run(cfg)
    assert result["step"] == cfg.train.epochs * cfg.train.batches_per_epoch
    skipped = [m["data/skipped"] for m in read_metrics(cfg.job_dir()) if "data/skipped" in m]
    assert len(skipped) == result["step"] and skipped[-1] > 0
    assert skipped == sorted(skipped), "data/skipped is a running total"
    assert json.loads((cfg.job_dir() / "final.json").read_text())["completed"]


def test_too_much_bad_data_stops_with_exit_1_naming_the_fraction(bad_shards, tmp_path, capsys):
    root, _ = bad_shards
    code, lines = run_cli(capsys, ["train", "--config", str(CI_TINY),
                                   *_overrides(root, tmp_path, **{"train.max_bad_fraction": 0.01})])
    assert code == 1
    assert len(lines) == 1, lines
    assert "clips failed to decode, more than train.max_bad_fraction=0.01" in lines[0]
    run_dir = tmp_path / "ci_tiny" / "baseline" / "seed0"
    assert not (run_dir / "final.json").exists()

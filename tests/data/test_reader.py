import io
import json
import logging
import tarfile

import numpy as np
import pytest
import torch

from wakeword_dist.data.reader import (check_sample_rate, iter_split, iter_stream, load_background,
                                       make_eval_loader, make_train_loader, read_index)
from wakeword_dist.data.shard_writer import ShardWriter

LABELS = ["negative", "hey_nova"]


def make_split(d, n_shards=3, per_shard=8, fmt="wav", logits=False, clip=1600, sr=16000):
    """A small split of 1,600-sample clips whose first sample encodes the sample number."""
    with ShardWriter(d, per_shard, fmt, sample_rate=sr, label_names=LABELS, source="t") as w:
        for i in range(n_shards * per_shard):
            audio = np.full(clip, i, np.int16)
            w.write(f"k{i:04d}", audio, {"label": i % 2, "label_name": LABELS[i % 2],
                                          "hard_negative": i % 3 == 0},
                    teacher_logits=np.array([i, -i]) if logits else None)
    return d


def keys_of(loader):
    return [k for b in loader for k in b["key"]]


def train(d, **kw):
    args = dict(batch_size=4, batches_per_epoch=5, rank=0, world_size=1, seed=3, epoch=0,
                num_workers=0, clip_samples=1600, shuffle_buffer=6)
    args.update(kw)
    return make_train_loader(d, **args)


def test_batch_format(tmp_path):
    b = next(iter(train(make_split(tmp_path, logits=True), with_teacher_logits=True)))
    assert b["audio"].shape == (4, 1600) and b["audio"].dtype == torch.float32
    assert b["label"].dtype == torch.int64 and b["hard_negative"].dtype == torch.bool
    assert b["teacher_logits"].shape == (4, 2) and b["teacher_logits"].dtype == torch.float32
    assert isinstance(b["key"][0], str) and b["skipped"] == 0
    for k, a, y, t in zip(b["key"], b["audio"], b["label"], b["teacher_logits"]):
        i = int(k[1:])
        assert a[0] == pytest.approx(i / 32768) and y == i % 2 and t[0] == i


def test_two_ranks_disjoint_shards_equal_steps(tmp_path):
    d = make_split(tmp_path, n_shards=3, per_shard=8)  # rank 0 gets 2 shards, rank 1 gets 1
    per_rank = []
    for rank in (0, 1):
        loader = train(d, rank=rank, world_size=2, batches_per_epoch=7, num_workers=2)
        batches = list(loader)
        assert len(loader) == len(batches) == 7
        per_rank.append({k for b in batches for k in b["key"]})
    assert not per_rank[0] & per_rank[1]
    assert {int(k[1:]) // 8 for k in per_rank[0]} == {0, 2}
    assert {int(k[1:]) // 8 for k in per_rank[1]} == {1}


def test_fewer_shards_than_ranks_splits_by_sample(tmp_path):
    d = make_split(tmp_path, n_shards=1, per_shard=12)
    seen = [set(keys_of(train(d, rank=r, world_size=3, batches_per_epoch=2))) for r in range(3)]
    assert all(seen) and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_deterministic_and_skip_equals_drop(tmp_path, workers):
    d = make_split(tmp_path)
    full = list(train(d, num_workers=workers, batches_per_epoch=9))
    again = list(train(d, num_workers=workers, batches_per_epoch=9))
    assert [b["key"] for b in full] == [b["key"] for b in again]
    assert all(torch.equal(a["audio"], b["audio"]) for a, b in zip(full, again))
    for k in (1, 4):
        resumed = list(train(d, num_workers=workers, batches_per_epoch=9, skip_batches=k))
        assert [b["key"] for b in resumed] == [b["key"] for b in full[k:]]
    other_epoch = list(train(d, num_workers=workers, batches_per_epoch=9, epoch=1))
    assert [b["key"] for b in other_epoch] != [b["key"] for b in full]


def test_eval_each_sample_once(tmp_path):
    for n_shards, world in ((3, 2), (1, 2), (2, 4)):
        d = make_split(tmp_path / f"{n_shards}_{world}", n_shards=n_shards, per_shard=5)
        keys = []
        for rank in range(world):
            first = keys_of(make_eval_loader(d, batch_size=4, rank=rank, world_size=world,
                                             num_workers=2, clip_samples=1600))
            assert first == keys_of(make_eval_loader(d, batch_size=4, rank=rank, world_size=world,
                                                     num_workers=2, clip_samples=1600))
            keys += first
        assert sorted(keys) == [f"k{i:04d}" for i in range(n_shards * 5)]


def _corrupt_member(shard, key):
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(shard, "w") as tf:
        for m, data in members:
            if m.name == f"{key}.wav":
                data = b"RIFF????WAVEjunk" + data[16:40]
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data))


def test_bad_data_is_skipped_and_counted(tmp_path, caplog):
    d = make_split(tmp_path, n_shards=3, per_shard=8)
    _corrupt_member(d / "shard-000000.tar", "k0003")
    raw = (d / "shard-000001.tar").read_bytes()
    (d / "shard-000001.tar").write_bytes(raw[: len(raw) // 2 + 100])  # cut inside a member
    with ShardWriter(tmp_path / "x", 8, "wav", label_names=LABELS, source="t") as w:  # wrong length
        w.write("short", np.zeros(800), {"label": 0, "label_name": "negative"})
    with ShardWriter(tmp_path / "y", 8, "wav", 8000, label_names=LABELS, source="t") as w:  # rate
        w.write("slow", np.ones(1600), {"label": 0, "label_name": "negative"})
    (tmp_path / "x/shard-000000.tar").rename(d / "shard-000003.tar")
    (tmp_path / "y/shard-000000.tar").rename(d / "shard-000004.tar")
    index = read_index(d)
    index["shards"] += ["shard-000003.tar", "shard-000004.tar"]
    (d / "index.json").write_text(json.dumps(index))

    with caplog.at_level(logging.WARNING, logger="wakeword_dist.data"):
        batches = list(train(d, batches_per_epoch=12, shuffle_buffer=4))
    keys = [k for b in batches for k in b["key"]]
    assert len(batches) == 12 and all(len(b["key"]) == 4 for b in batches)
    assert not {"k0003", "short", "slow"} & set(keys)
    assert not {f"k{i:04d}" for i in range(12, 16)} & set(keys)  # after the cut
    assert sum(b["skipped"] for b in batches) >= 4
    text = caplog.text
    assert "shard-000000.tar" in text and "k0003" in text and "shard-000001.tar" in text
    assert "short" in text and "800 samples" in text and "8000 Hz" in text

    ev = list(make_eval_loader(d, batch_size=5, rank=0, world_size=1, clip_samples=1600))
    assert sum(b["skipped"] for b in ev) == 4
    assert len(keys_of(ev)) == 24 - 1 - 4  # the corrupt member; the 4 samples from the cut on


def test_missing_teacher_logits_names_shard_and_key(tmp_path):
    d = make_split(tmp_path)
    with pytest.raises(Exception, match=r"shard-00000\d\.tar.*k\d{4}.*teacher"):
        list(train(d, with_teacher_logits=True))


def test_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json"):
        read_index(tmp_path)
    d = make_split(tmp_path / "d", sr=8000)
    with pytest.raises(ValueError, match=r"index.json.*8000 Hz.*16000 Hz"):
        check_sample_rate(read_index(d), 16000, d)
    with pytest.raises(ValueError, match="8000"):
        train(d)


def test_stream_and_background(tiny_shards):
    streams = list(iter_stream(tiny_shards / "stream"))
    assert len(streams) == read_index(tiny_shards / "stream")["num_samples"] >= 2
    for key, audio, sr in streams:
        assert sr == 16000 and audio.dtype == np.float32 and audio.shape[0] >= 30 * sr
    bank = load_background(tiny_shards / "background", max_clips=8)
    assert bank.shape == (8, 16000) and bank.dtype == torch.float32
    assert load_background(tiny_shards / "background", 3, clip_samples=40000).shape == (3, 40000)


def test_tiny_dataset_loads(tiny_shards):
    loader = make_train_loader(tiny_shards / "train", batch_size=8, batches_per_epoch=3, rank=1,
                               world_size=2, seed=0, epoch=0, num_workers=1, shuffle_buffer=32)
    batches = list(loader)
    assert len(batches) == 3 and batches[0]["audio"].shape == (8, 16000)


def test_all_bad_raises_instead_of_hanging(tmp_path):
    d = make_split(tmp_path, n_shards=2, per_shard=4)
    with pytest.raises(RuntimeError, match="no usable sample.*1600 samples != clip length 800"):
        list(train(d, clip_samples=800))


def make_two_engine_split(d, n_shards=4, per_shard=6):
    """Samples alternate between json source 'a' and 'b' (keys a0000 / b0001 ...)."""
    with ShardWriter(d, per_shard, "wav", label_names=LABELS, source="t") as w:
        for i in range(n_shards * per_shard):
            engine = "ab"[i % 2]
            w.write(f"{engine}{i:04d}", np.full(1600, i, np.int16),
                    {"label": i % 2, "label_name": LABELS[i % 2], "source": engine})
    return d


def test_source_filter_keeps_equal_batches_per_rank(tmp_path):
    d = make_two_engine_split(tmp_path)
    for workers in (0, 2):
        per_rank = []
        for rank in (0, 1):
            loader = train(d, rank=rank, world_size=2, batches_per_epoch=7, num_workers=workers,
                           exclude_sources=["a"])
            batches = list(loader)
            assert len(loader) == len(batches) == 7 and all(len(b["key"]) == 4 for b in batches)
            keys = [k for b in batches for k in b["key"]]
            assert keys and all(k.startswith("b") for k in keys)
            assert sum(b["read"] for b in batches) == len(keys)  # filtered: neither read nor bad
            per_rank.append(set(keys))
        assert not per_rank[0] & per_rank[1]
    only_a = keys_of(make_eval_loader(d, batch_size=5, rank=0, world_size=1, clip_samples=1600,
                                      include_sources={"a"}))
    assert sorted(only_a) == [f"a{i:04d}" for i in range(0, 24, 2)]
    assert [s["key"] for s in iter_split(d, include_sources=["b"])][:2] == ["b0001", "b0003"]
    assert load_background(d, include_sources=["a"]).shape == (12, 1600)
    with pytest.raises(RuntimeError, match=r"no samples passing the sources include=\['c'\]"):
        list(train(d, include_sources=["c"]))
    with pytest.raises(TypeError, match="include_sources must be a collection"):
        train(d, include_sources="a")


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_resumes_exactly_under_a_source_filter(tmp_path, workers):
    d = make_two_engine_split(tmp_path)
    full = list(train(d, num_workers=workers, batches_per_epoch=8, include_sources=["a"]))
    resumed = list(train(d, num_workers=workers, batches_per_epoch=8, include_sources=["a"],
                         skip_batches=3))
    assert [b["key"] for b in resumed] == [b["key"] for b in full[3:]]

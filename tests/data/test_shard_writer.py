import json
import subprocess
import tarfile

import numpy as np
import pytest
import webdataset as wds

from wakeword_dist.data.shard_writer import ShardWriter
from wakeword_dist.data.tario import iter_tar_samples

LABELS = ["negative", "hey_nova"]


def write_split(d, n=7, per_shard=3, fmt="wav", seed=0, logits=False):
    rng = np.random.default_rng(seed)
    with ShardWriter(d, per_shard, fmt, label_names=LABELS, source="test", seed=seed) as w:
        for i in range(n):
            w.write(f"s{i:04d}", rng.uniform(-0.5, 0.5, 16000),
                    {"label": i % 2, "label_name": LABELS[i % 2], "speaker": f"spk{i % 3}"},
                    teacher_logits=np.arange(2.0) if logits else None)
        return w.close()


@pytest.mark.parametrize("fmt", ["flac", "wav", "npy"])
def test_roundtrip_plain_tools(tmp_path, fmt):
    index = write_split(tmp_path, fmt=fmt, logits=True)
    assert index["shards"] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert index["samples_per_shard"] == [3, 3, 1] and index["num_samples"] == 7
    assert index["total_seconds"] == pytest.approx(7.0) and index["audio_format"] == fmt
    assert json.loads((tmp_path / "index.json").read_text()) == index
    assert not list(tmp_path.glob("*.tmp"))
    listing = subprocess.run(["tar", "tf", str(tmp_path / "shard-000000.tar")],
                             capture_output=True, text=True, check=True).stdout.split()
    assert listing[:3] == [f"s0000.{fmt}", "s0000.json", "s0000.teacher.npy"]
    urls = [str(tmp_path / s) for s in index["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [f"s{i:04d}" for i in range(7)]
    assert samples[1]["json"]["label"] == 1 and samples[1]["json"]["label_name"] == "hey_nova"
    assert set(samples[0]["json"]) >= {"label", "label_name", "speaker", "source", "duration_s",
                                       "hard_negative", "text"}
    with tarfile.open(tmp_path / "shard-000000.tar") as tf:  # plain tarfile too
        assert len(tf.getnames()) == 9


def test_content_hash_depends_on_content_only(tmp_path):
    a = write_split(tmp_path / "a", per_shard=3)
    b = write_split(tmp_path / "b", per_shard=5)  # same samples, other shard boundaries
    c = write_split(tmp_path / "c", seed=1)
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]
    write_split(tmp_path / "d", per_shard=3)  # tars are byte-reproducible
    assert (tmp_path / "a/shard-000000.tar").read_bytes() == (tmp_path / "d/shard-000000.tar").read_bytes()


def test_failure_leaves_no_index_or_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, 4, "wav", label_names=LABELS, source="t") as w:
            w.write("a", np.zeros(100), {"label": 0, "label_name": "negative"})
            raise RuntimeError("boom")
    assert not (tmp_path / "index.json").exists()
    assert not list(tmp_path.glob("*.tar*"))


def test_rejects_bad_keys_and_labels(tmp_path):
    w = ShardWriter(tmp_path, 4, "wav", label_names=LABELS, source="t")
    with pytest.raises(ValueError, match="key"):
        w.write("a.b", np.zeros(10), {"label": 0, "label_name": "negative"})
    with pytest.raises(ValueError, match="label"):
        w.write("a", np.zeros(10), {"label": 5, "label_name": "x"})
    w.write("a", np.zeros(10), {"label": -1, "label_name": "unlabelled"})  # KD-only audio
    with pytest.raises(ValueError, match="duplicate"):
        w.write("a", np.zeros(10), {"label": 0, "label_name": "negative"})
    w.abort()


def test_fast_tar_reader_matches_tarfile(tmp_path):
    write_split(tmp_path, fmt="flac")
    with tarfile.open(tmp_path / "shard-000000.tar") as tf:
        expected = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    got = {f"{k}.{ext}": data for k, parts in iter_tar_samples(tmp_path / "shard-000000.tar")
           for ext, data in parts.items()}
    assert got == expected

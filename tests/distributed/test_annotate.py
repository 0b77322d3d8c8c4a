"""annotate_split in one process (world_size 1) and check_cached_fingerprint.

The 2-rank runs (shard ownership, ZeRO-3 lockstep) are in test_two_ranks.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from distributed_helpers import LABELS, make_split, tiny_teacher
from wakeword_dist.data.tario import iter_tar_samples
from wakeword_dist.distill.annotate import NonFiniteLogitsError, annotate_split, check_cached_fingerprint


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("annotate") / "train"
    make_split(path)
    return path


@pytest.fixture(scope="module")
def teacher():
    return tiny_teacher()


def _annotate(teacher_fn, fingerprint, split, out, **kw):
    args = dict(in_split_dir=split, out_split_dir=out, rank=0, world_size=1, batch_size=4, device="cpu")
    return annotate_split(teacher_fn, fingerprint, **{**args, **kw})


def test_annotate_stores_float16_logits_of_every_sample(split, teacher, tmp_path):
    out = tmp_path / "train"
    summary = _annotate(teacher, teacher.fingerprint(), split, out)
    in_index = json.loads((split / "index.json").read_text())
    assert summary["annotated"] == in_index["shards"] and summary["samples"] == 13

    for shard in in_index["shards"]:
        originals = list(iter_tar_samples(split / shard))
        annotated = list(iter_tar_samples(out / shard))
        assert [k for k, _ in annotated] == [k for k, _ in originals]
        for (key, parts), (_, orig) in zip(annotated, originals):
            assert list(parts) == [*orig, "teacher.npy"]  # same members, same order, logits last
            audio = np.frombuffer(parts["wav"][44:], dtype="<i2").astype(np.float32) / 32768.0
            expected = teacher(torch.from_numpy(audio)[None])[0].numpy()
            logits = np.load(io.BytesIO(parts["teacher.npy"]))
            assert logits.dtype == np.float16
            np.testing.assert_allclose(logits.astype(np.float32), expected, rtol=2e-3, atol=2e-3)

    index = json.loads((out / "index.json").read_text())
    assert index["teacher"] == teacher.fingerprint()
    assert index["annotate"]["source_content_hash"] == in_index["content_hash"]
    assert index["content_hash"] != in_index["content_hash"]
    assert {k: v for k, v in index.items() if k not in ("teacher", "annotate", "content_hash")} == \
        {k: v for k, v in in_index.items() if k != "content_hash"}
    check_cached_fingerprint(index, teacher.fingerprint(), out / "index.json")  # passes


def test_annotated_split_reads_with_the_training_reader_and_plain_webdataset(split, teacher, tmp_path):
    import webdataset as wds

    from wakeword_dist.data.reader import make_eval_loader

    out = tmp_path / "train"
    _annotate(teacher, teacher.fingerprint(), split, out)
    batches = list(make_eval_loader(out, batch_size=4, rank=0, world_size=1, num_workers=0,
                                    with_teacher_logits=True))
    logits = torch.cat([b["teacher_logits"] for b in batches])
    assert logits.shape == (12, 3) and torch.isfinite(logits).all()  # the 0.5 s clip is skipped
    samples = list(wds.WebDataset([str(p) for p in sorted(out.glob("shard-*.tar"))], shardshuffle=False))
    assert len(samples) == 13 and all("teacher.npy" in s for s in samples)


def test_rerun_skips_finished_shards_and_resumes_an_interrupted_one(split, teacher, tmp_path):
    out = tmp_path / "train"
    _annotate(teacher, teacher.fingerprint(), split, out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*")}
    rerun = _annotate(teacher, teacher.fingerprint(), split, out)
    assert rerun["annotated"] == [] and len(rerun["skipped"]) == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*")} == stamps

    (out / ".annotate" / "shard-000001.tar.json").unlink()  # as if killed before this marker
    resumed = _annotate(teacher, teacher.fingerprint(), split, out)
    assert resumed["annotated"] == ["shard-000001.tar"]
    assert not list(out.glob(".*.tmp-*"))


def test_another_teacher_does_not_overwrite_an_annotated_split(split, teacher, tmp_path):
    out = tmp_path / "train"
    _annotate(teacher, teacher.fingerprint(), split, out)
    other = tiny_teacher(seed=1)
    with pytest.raises(ValueError, match="weights_sha256 differs.*another out split"):
        _annotate(other, other.fingerprint(), split, out)


def test_label_map_must_match_the_split(split, teacher, tmp_path):
    fingerprint = {**teacher.fingerprint(), "label_names": list(reversed(LABELS))}
    with pytest.raises(ValueError, match="label_names"):
        _annotate(teacher, fingerprint, split, tmp_path / "train")


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 1e5])  # 1e5 overflows float16
def test_non_finite_logits_name_shard_and_key(split, teacher, tmp_path, bad):
    def overflowing(audio):
        logits = teacher(audio)
        logits[-1, 0] = bad
        return logits

    out = tmp_path / "train"
    with pytest.raises(NonFiniteLogitsError, match=r"shard-000000\.tar: teacher logits for key 'clip003'"):
        _annotate(overflowing, teacher.fingerprint(), split, out)
    assert not (out / "shard-000000.tar").exists() and not list(out.glob(".*.tmp-*"))
    assert not (out / "index.json").exists()


def test_check_cached_fingerprint_names_what_differs(teacher):
    fp = teacher.fingerprint()
    index = {"teacher": dict(fp)}
    check_cached_fingerprint(index, fp, "x/index.json")
    # a moved teacher folder (same weights) still matches
    check_cached_fingerprint(index, {**fp, "name_or_path": "elsewhere/teacher"}, "x/index.json")

    other_weights = {**fp, "weights_sha256": "0" * 64}
    with pytest.raises(ValueError, match=r"^x/index.json: .*weights_sha256 differs") as err:
        check_cached_fingerprint(index, other_weights, "x/index.json")
    assert "\n" not in str(err.value) and "name_or_path" not in str(err.value)
    with pytest.raises(ValueError, match="weights_sha256 differs.*name_or_path differs"):
        check_cached_fingerprint(index, {**other_weights, "name_or_path": "other"}, "x/index.json")
    with pytest.raises(ValueError, match="label_names differ") as err:
        check_cached_fingerprint(index, {**fp, "label_names": ["a", "b", "c"]}, "x/index.json")
    assert "weights_sha256" not in str(err.value)
    with pytest.raises(ValueError, match="no teacher fingerprint"):
        check_cached_fingerprint({"shards": []}, fp, "x/index.json")

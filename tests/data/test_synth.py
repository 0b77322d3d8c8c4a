import shutil

import numpy as np
import pytest
import webdataset as wds

from wakeword_dist.data.reader import iter_split, read_index
from wakeword_dist.data.synth import make_tiny_dataset

# Without espeak-ng the dataset cannot be made; the root conftest's tiny_shards fixture needs it too.
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (apt-get install espeak-ng)")
SPLITS = ("train", "val", "test", "stream", "background")


@needs_espeak
def test_same_seed_same_content_hash(tiny_shards, tmp_path):
    """Debian's espeak-ng is deterministic and every random choice comes from the seed."""
    again = make_tiny_dataset(tmp_path, seed=0)
    for split in SPLITS:
        assert again["splits"][split]["content_hash"] == read_index(tiny_shards / split)["content_hash"]


@needs_espeak
def test_tiny_dataset_contents(tiny_shards):
    root = tiny_shards
    assert all((root / s / "index.json").is_file() for s in SPLITS)
    speakers = {s: set(read_index(root / s)["speakers"]) for s in ("train", "val", "test")}
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]

    index = read_index(root / "train")
    assert index["label_names"] == ["negative", "hey_nova"]
    assert index["sample_rate"] == 16000 and len(index["shards"]) == 3
    kinds = {}
    for s in iter_split(root / "train"):
        assert s["audio"].shape == (16000,) and np.abs(s["audio"]).max() <= 1.0
        kinds.setdefault(s["meta"]["kind"], []).append(s["meta"])
    assert {"positive", "confusable", "partial", "fragment", "speech"} <= set(kinds)
    assert all(m["label"] == 1 and not m["hard_negative"] for m in kinds["positive"])
    assert all(m["label"] == 0 and m["hard_negative"] for m in kinds["confusable"])
    assert not any("hey nova" in m["text"].lower() for k, ms in kinds.items() if k != "positive"
                   for m in ms)

    streams = list(iter_split(root / "stream"))
    assert len(streams) == 2 and all(s["audio"].size >= 30 * 16000 for s in streams)
    assert all(s["meta"]["label"] == 0 and "hey nova" not in s["meta"]["text"].lower()
               for s in streams)
    urls = [str(root / "train" / n) for n in index["shards"]]
    assert len(list(wds.WebDataset(urls, shardshuffle=False))) == 160  # plain WebDataset reads them
    noise = {s["meta"]["kind"] for s in iter_split(root / "background")}
    assert noise == {"noise:white", "noise:pink", "noise:brown", "noise:babble"}

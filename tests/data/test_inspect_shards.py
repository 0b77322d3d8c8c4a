import json
import shutil

from wakeword_dist.data.inspect_shards import inspect_shards, print_inspection


def test_clean_dataset_has_no_problems(tiny_shards, capsys):
    report = inspect_shards(tiny_shards)
    assert report["problems"] == []
    assert list(report["splits"]) == ["train", "val", "test", "stream", "background", "rir"]
    train = report["splits"]["train"]
    assert train["num_samples"] == 160 and train["shards"] == 3
    assert set(train["label_counts"]) == {"negative", "hey_nova"} and train["hard_negative"] > 0
    assert report["splits"]["stream"]["hours"] >= 60 / 3600 - 1e-9
    print_inspection(report)
    assert "no problems" in capsys.readouterr().out


def test_count_mismatch_and_damage_are_reported(tiny_shards, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_shards, root)
    index_path = root / "train" / "index.json"
    index = json.loads(index_path.read_text())
    index["samples_per_shard"][0] += 1
    index_path.write_text(json.dumps(index))
    raw = (root / "val" / "shard-000000.tar").read_bytes()
    (root / "val" / "shard-000000.tar").write_bytes(raw[: len(raw) // 2])
    (root / "test" / "index.json").unlink()

    problems = "\n".join(inspect_shards(root)["problems"])
    assert "train/shard-000000.tar: 64 samples but index.json says 65" in problems
    assert "val/shard-000000.tar" in problems and "val/index.json" in problems
    assert "test/index.json: missing" in problems

import numpy as np
import pytest
import soundfile as sf

from wakeword_dist.data.build_shards import build_shards, detect_layout, split_of
from wakeword_dist.data.reader import iter_split, read_index

SPLITS = ("train", "val", "test", "stream", "background")


def tone(seconds, sr, freq=440.0, level=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def folder_src(tmp_path):
    src = tmp_path / "src"
    for kind in ("positive", "negative", "hard_negative", "background"):
        (src / kind).mkdir(parents=True)
    for i in range(12):  # 12 speakers x 2 files, mixed rates / channels / formats / lengths
        sf.write(src / "positive" / f"spk{i}_nohash_0.wav", tone(0.6, 16000), 16000)
        sf.write(src / "negative" / f"spk{i}_nohash_1.flac", tone(1.4, 22050, 220), 22050)
        stereo = np.stack([tone(0.8, 44100, 300)] * 2, axis=1)
        sf.write(src / "hard_negative" / f"spk{i}_nohash_2.wav", stereo, 44100)
    sf.write(src / "background" / "hum.wav", tone(3.5, 8000, 50, 0.1), 8000)
    (src / "negative" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    (src / "negative" / "empty.wav").write_bytes(b"")
    sf.write(src / "negative" / "silent.wav", np.zeros(16000, np.float32), 16000)
    (src / "negative" / "notes.txt").write_text("not audio, ignored")
    return src


def test_folder_layout_skips_and_reports_bad_files(folder_src, tmp_path, capsys):
    out = tmp_path / "out"
    report = build_shards(folder_src, out, wake_words=["hey_nova"], val_fraction=0.2,
                          test_fraction=0.3, samples_per_shard=10)
    assert report["layout"] == "folder" and report["label_names"] == ["negative", "hey_nova"]
    reasons = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in report["skipped"]}
    assert set(reasons) == {"corrupt.wav", "empty.wav", "silent.wav"}
    assert reasons["empty.wav"].startswith("empty") and reasons["silent.wav"].startswith("silent")
    assert reasons["corrupt.wav"].startswith("unreadable")
    printed = capsys.readouterr().out
    assert "corrupt.wav" in printed and "empty.wav" in printed

    total = sum(report["splits"][s]["num_samples"] for s in ("train", "val", "test"))
    assert total == 36 and report["splits"]["background"]["num_samples"] == 3
    speakers = {}
    for split in ("train", "val", "test"):
        for s in iter_split(out / split):
            assert s["audio"].shape == (16000,) and s["sample_rate"] == 16000
            speakers.setdefault(split, set()).add(s["meta"]["speaker"])
            assert s["meta"]["label"] == (1 if s["meta"]["kind"] == "positive" else 0)
            assert s["meta"]["hard_negative"] == (s["meta"]["kind"] == "hard_negative")
    assert not (speakers["train"] & speakers.get("test", set()))
    assert all(split_of(spk, 0.2, 0.3) == split for split, spks in speakers.items() for spk in spks)
    assert all((out / s / "index.json").is_file() for s in SPLITS)
    assert not list(out.glob(".build-*"))


def test_failed_run_leaves_nothing(folder_src, tmp_path, monkeypatch):
    import wakeword_dist.data.build_shards as bs

    calls = {"n": 0}
    real = bs._write

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(bs, "_write", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        build_shards(folder_src, out, samples_per_shard=4, progress=False)
    assert not list(out.rglob("*.tar")) and not list(out.rglob("index.json"))


def test_speech_commands_layout(tmp_path):
    src = tmp_path / "sc"
    for word in ("marvin", "yes", "no", "_background_noise_"):
        (src / word).mkdir(parents=True)
    for word in ("marvin", "yes", "no"):
        for spk in ("aaaa1111", "bbbb2222", "cccc3333"):
            sf.write(src / word / f"{spk}_nohash_0.wav", tone(1.0, 16000, 500), 16000)
    sf.write(src / "_background_noise_" / "white_noise.wav", tone(2.0, 16000, 1000, 0.05), 16000)
    (src / "validation_list.txt").write_text("yes/bbbb2222_nohash_0.wav\nmarvin/bbbb2222_nohash_0.wav\n"
                                             "no/bbbb2222_nohash_0.wav\n")
    (src / "testing_list.txt").write_text("yes/cccc3333_nohash_0.wav\nmarvin/cccc3333_nohash_0.wav\n"
                                          "no/cccc3333_nohash_0.wav\n")
    assert detect_layout(src) == "speech_commands"
    out = tmp_path / "out"
    report = build_shards(src, out, wake_words=["marvin"], progress=False)
    assert report["label_names"] == ["negative", "marvin"]
    for split, spk in (("train", "aaaa1111"), ("val", "bbbb2222"), ("test", "cccc3333")):
        samples = list(iter_split(out / split))
        assert len(samples) == 3 and {s["meta"]["speaker"] for s in samples} == {spk}
        assert sorted(s["meta"]["label"] for s in samples) == [0, 0, 1]
    assert read_index(out / "background")["num_samples"] == 2

"""The synthetic dataset (data/synth.py) from all three TTS engines, built once per session by the
root conftest's ``tiny_shards`` fixture (make_tiny_dataset)."""

import hashlib
import shutil

import numpy as np
import pytest
import webdataset as wds

from wakeword_dist.data import noise
from wakeword_dist.data.reader import iter_split, read_index
from wakeword_dist.data.texts import contains_phrase
from wakeword_dist.data.synth import make_tiny_dataset, synthesize
from wakeword_dist.data.tts import ENGINE_NAMES

needs_engines = pytest.mark.skipif(
    any(shutil.which(b) is None for b in ("espeak-ng", "flite", "festival")),
    reason="TTS engines missing (apt-get install espeak-ng flite festival festvox-kallpc16k "
           "festvox-kdlpc16k festvox-us-slt-hts)")
SPLITS = ("train", "val", "test", "stream", "background", "rir")
CLIP_SPLITS = ("train", "val", "test")


def _per_engine_digest(root, split) -> dict[str, str]:
    """engine -> sha256 over (key, audio bytes, json) of its samples in one split."""
    h: dict[str, hashlib._Hash] = {}
    for s in iter_split(root / split):
        d = h.setdefault(s["meta"]["engine"], hashlib.sha256())
        d.update(s["key"].encode() + s["audio"].tobytes() + repr(sorted(s["meta"].items())).encode())
    return {e: d.hexdigest() for e, d in h.items()}


@needs_engines
def test_same_seed_same_content_hash_for_every_engine(tiny_shards, tmp_path):
    """espeak-ng, flite, festival and festival-l2 are deterministic and every random choice (voices, speakers,
    perturbations, prosody, texts, placement) comes from the seed: a rebuild matches bit for bit,
    split by split and engine by engine."""
    again = make_tiny_dataset(tmp_path, seed=0)
    for split in SPLITS:
        assert again["splits"][split]["content_hash"] == read_index(tiny_shards / split)["content_hash"]
    for split in ("train", "val", "test", "stream"):
        mine, theirs = _per_engine_digest(tiny_shards, split), _per_engine_digest(tmp_path, split)
        assert set(mine) == set(ENGINE_NAMES) and mine == theirs
    other = synthesize(tmp_path / "seed1", size="tiny", seed=1, progress=False)
    assert other["splits"]["train"]["content_hash"] != again["splits"]["train"]["content_hash"]
    # streams draw apart: near misses put back into them leave every clip as it was
    harsh = synthesize(tmp_path / "harsh", size="tiny", seed=0, stream_near_miss_rate=0.5, progress=False)
    for split in CLIP_SPLITS:
        assert harsh["splits"][split]["content_hash"] == again["splits"][split]["content_hash"], split
    assert harsh["splits"]["stream"]["content_hash"] != again["splits"]["stream"]["content_hash"]
    kinds = [seg[2] for s in iter_split(tmp_path / "harsh" / "stream") for seg in s["meta"]["segments"]]
    assert 0.3 < kinds.count("confusable") / len(kinds) < 0.7


@needs_engines
def test_speakers_and_voice_groups_never_straddle_splits(tiny_shards):
    metas = {s: [x["meta"] for x in iter_split(tiny_shards / s)] for s in CLIP_SPLITS}
    for field in ("speaker", "voice", "voice_group"):
        sets = {s: {(m["engine"], m[field]) if field == "voice" else m[field] for m in metas[s]}
                for s in CLIP_SPLITS}
        assert not sets["train"] & sets["val"], field
        assert not sets["train"] & sets["test"], field
        assert not sets["val"] & sets["test"], field
    for s in CLIP_SPLITS:  # derived speakers: several per voice, each one voice + one perturbation
        by_voice = {}
        for m in metas[s]:
            by_voice.setdefault((m["engine"], m["voice"]), set()).add(m["speaker"])
        assert max(len(v) for v in by_voice.values()) >= 2
        assert set(read_index(tiny_shards / s)["voice_groups"]) == {m["voice_group"] for m in metas[s]}
    # the talkers behind several voices (flite kal/kal16 and festival kal_diphone) share a split
    kal = {s for s in CLIP_SPLITS for m in metas[s] if m["voice_group"] == "talker:kal"}
    assert len(kal) <= 1
    # each half of the streams is spoken only by that split's voice groups
    groups = {s: {m["voice_group"] for m in metas[s]} for s in ("val", "test")}
    streams = sorted(iter_split(tiny_shards / "stream"), key=lambda x: x["key"])
    for i, s in enumerate(streams):
        half = "val" if i < len(streams) // 2 else "test"
        assert s["meta"]["speaker_split"] == half
        assert set(s["meta"]["voice_group"].split(",")) <= groups[half]


@needs_engines
def test_every_engine_in_every_split_and_stream_half(tiny_shards):
    for s in CLIP_SPLITS:
        counts = {}
        for x in iter_split(tiny_shards / s):
            counts[x["meta"]["engine"]] = counts.get(x["meta"]["engine"], 0) + 1
        assert set(counts) == set(ENGINE_NAMES)
        assert max(counts.values()) - min(counts.values()) <= 1  # equal shares
        engines = read_index(tiny_shards / s)["generator"]["engines"]
        assert set(engines) == set(ENGINE_NAMES)
        assert all(e["version"] and e["voices"] for e in engines.values())
    streams = sorted(iter_split(tiny_shards / "stream"), key=lambda x: x["key"])
    half = len(streams) // 2
    for part in (streams[:half], streams[half:]):  # the evaluator's val / test halves
        assert {x["meta"]["source"] for x in part} == set(ENGINE_NAMES)
    assert all(x["meta"]["source"] == x["meta"]["engine"] and "," not in x["meta"]["engine"]
               for x in streams)  # one engine per stream


@needs_engines
@pytest.mark.parametrize("split", ["train", "test"])
def test_clip_json_records_engine_voice_speaker_and_perturbation(tiny_shards, split):
    seen_perturbed = seen_clean = 0
    max_semitones = 8.5 if split == "train" else 3.5  # training speakers reach female-like voices
    for x in iter_split(tiny_shards / split):
        m = x["meta"]
        assert m["source"] == m["engine"] in ENGINE_NAMES
        assert m["speaker"].startswith(f"{m['engine']}:{m['voice']}#")
        assert set(m["perturb"]) == {"tempo", "pitch_semitones", "warp"}
        assert set(m["prosody"]) == {"rate", "pitch"}
        if m["speaker"].endswith("#0"):  # the unperturbed voice (positives may be sped to fit)
            assert m["perturb"]["pitch_semitones"] == 0 and m["perturb"]["warp"] == 1
            seen_clean += 1
        else:
            assert 0.8 < m["perturb"]["tempo"] < 1.7 and abs(m["perturb"]["pitch_semitones"]) <= max_semitones
            seen_perturbed += 1
    assert seen_clean and seen_perturbed


@needs_engines
def test_tiny_dataset_contents(tiny_shards):
    root = tiny_shards
    assert all((root / s / "index.json").is_file() for s in SPLITS)
    index = read_index(root / "train")
    assert index["label_names"] == ["negative", "hey_nova"]
    assert index["sample_rate"] == 16000 and len(index["shards"]) == 3
    kinds = {}
    for s in iter_split(root / "train"):
        assert s["audio"].shape == (16000,) and np.abs(s["audio"]).max() <= 1.0
        kinds.setdefault(s["meta"]["kind"], []).append(s["meta"])
    assert {"positive", "confusable", "partial", "fragment", "speech", "silence"} <= set(kinds)
    assert all(m["label"] == 1 and not m["hard_negative"] for m in kinds["positive"])
    assert all(m["label"] == 0 and m["hard_negative"] for m in kinds["confusable"])
    assert not any(contains_phrase(m["text"], "hey nova") for k, ms in kinds.items() if k != "positive"
                   for m in ms)  # word-level: "hey novak" is a confusable, not the phrase
    assert len(kinds["positive"]) == round(0.3 * 160)  # none dropped: long ones are sped up to fit

    streams = list(iter_split(root / "stream"))
    assert len(streams) == 8 and all(s["audio"].size >= 30 * 16000 for s in streams)
    assert all(s["meta"]["label"] == 0 and not any(contains_phrase(f"{a} {b}", "hey nova") for a, b in
                                                   zip(*[s["meta"]["text"].split(" | ")[i:] for i in (0, 1)]))
               for s in streams)  # not in an utterance, not across two
    urls = [str(root / "train" / n) for n in index["shards"]]
    assert len(list(wds.WebDataset(urls, shardshuffle=False))) == 160  # plain WebDataset reads them
    kinds = {s["meta"]["kind"] for s in iter_split(root / "background")}
    assert kinds == {f"noise:{k}" for k in noise.NOISE_KINDS}


@needs_engines
def test_silence_clips_are_negatives_of_every_engine_with_no_speech_in_them(tiny_shards):
    """Between utterances a stream's windows hear only the room: every split holds such clips,
    negatives of each engine's speakers, as quiet as a noise floor (speech peaks at -18 to -1 dBFS)."""
    for split in CLIP_SPLITS:
        silent = [s for s in iter_split(tiny_shards / split) if s["meta"]["kind"] == "silence"]
        n = read_index(tiny_shards / split)["num_samples"]
        assert len(silent) == round(0.08 * n), split
        if split == "train":  # 13 of them; val and test hold 3 each
            assert {s["meta"]["engine"] for s in silent} == set(ENGINE_NAMES)
        assert all(s["meta"]["label"] == 0 and not s["meta"]["hard_negative"] for s in silent)
        assert all(s["meta"]["perturb"] == {"tempo": 1.0, "pitch_semitones": 0.0, "warp": 1.0} for s in silent)
        rms_dbfs = [20 * np.log10(np.sqrt(np.mean(s["audio"].astype(np.float64) ** 2))) for s in silent]
        assert max(rms_dbfs) < -30 and min(rms_dbfs) > -75, (min(rms_dbfs), max(rms_dbfs))
        assert any("+" in s["meta"]["text"] for s in silent) or len(silent) < 4  # some hear a hum, a fan, ...


def test_missing_engine_is_a_one_line_error_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no TTS binary on it
    with pytest.raises(RuntimeError) as err:
        synthesize(tmp_path / "out", size="tiny", engines=["flite"], progress=False)
    assert str(err.value) == "flite not found on PATH: install it (apt-get install flite)"
    with pytest.raises(ValueError, match="engines must be a non-empty subset"):
        synthesize(tmp_path / "out", size="tiny", engines=["sam"], progress=False)
    assert not (tmp_path / "out").exists()


@needs_engines
def test_engine_subset_and_speakers_per_voice(tmp_path):
    r = synthesize(tmp_path, size="tiny", engines=["flite"], speakers_per_voice=3, train_clips=30,
                   val_clips=9, test_clips=9, stream_count=2, background_clips=9, progress=False)
    assert all(r["splits"][s]["engines"] == {"flite": n} for s, n in (("train", 30), ("val", 9), ("test", 9)))
    speakers = {x["meta"]["speaker"] for x in iter_split(tmp_path / "train")}
    assert {s.rsplit("#", 1)[1] for s in speakers} == {"0", "1", "2"}
    with pytest.raises(ValueError, match="stream_count must be >= 8"):
        synthesize(tmp_path / "x", size="tiny", stream_count=6, progress=False)


def test_engine_mix_is_set_in_config():
    from wakeword_dist.config import ConfigError, load_config

    assert load_config().data.engines == list(ENGINE_NAMES)
    assert load_config(overrides=["data.engines=[flite, festival]"]).data.engines == ["flite", "festival"]
    with pytest.raises(ConfigError, match=r"^config key 'data.engines': 'sam' is not one of espeak-ng, flite"):
        load_config(overrides=["data.engines=[espeak-ng, sam]"])
    with pytest.raises(ConfigError, match=r"^config key 'data.engines': expected a non-empty list"):
        load_config(overrides=["data.engines=[]"])
    assert load_config(overrides=["data.synth_size=full"]).data.synth_size == "full"


@pytest.mark.parametrize("place", ["random", "end", "start"])
def test_perturbing_only_the_clip_window_matches_the_full_utterance(place):
    """Long negatives get only the 1-s window their clip keeps perturbed; it is the window cut
    from the fully perturbed utterance: its spectrogram matches best at the same place (the
    phase vocoder's phases start elsewhere, so waveforms and fine detail differ)."""
    from wakeword_dist.data import perturb as P
    from wakeword_dist.data.synth import _Item, _perturb_clip_window

    rng = np.random.default_rng(0)  # 3 s of a gliding harmonic tone in noise: speech-like change
    t = np.arange(3 * 16000) / 16000
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t)
    x = sum(np.sin(2 * np.pi * np.cumsum(k * f0) / 16000) / k for k in range(1, 12))
    x = (0.2 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    p = P.Perturbation(0.93, 1.5, 1.08)
    item = _Item("speech", "t", 0, False, place=place, u_offset=0.3, perturb=p)
    window = _perturb_clip_window(item, x, 16000, 16000)
    full = P.perturb(x, 16000, p)
    start = {"random": int(0.3 * (full.size - 16000)), "end": full.size - 16000, "start": 0}[place]
    spec = lambda y: np.log(np.abs(P._stft(y)) + 1e-2).ravel()  # noqa: E731
    lags = [d for d in range(-800, 801, 80) if 0 <= start + d <= full.size - 16000]
    corr = [np.corrcoef(spec(window), spec(full[start + d:start + d + 16000]))[0, 1] for d in lags]
    assert window.shape == (16000,) and max(corr) > 0.85
    assert abs(lags[int(np.argmax(corr))]) <= 80  # samples (5 ms)


@needs_engines
def test_stream_segments_say_when_each_utterance_was_spoken(tiny_shards):
    for s in iter_split(tiny_shards / "stream"):
        audio, segments = s["audio"], s["meta"]["segments"]
        assert [seg[3] for seg in segments] == s["meta"]["text"].split(" | ")
        assert {seg[2] for seg in segments} == {"speech"}  # everyday speech: no near misses by default
        starts, ends = np.array([seg[0] for seg in segments]), np.array([seg[1] for seg in segments])
        assert np.all(starts < ends) and np.all(ends[:-1] <= starts[1:]) and ends[-1] <= audio.size / 16000
        inside = np.zeros(audio.size, bool)
        for a, b in zip(starts, ends):
            inside[int(a * 16000):int(b * 16000)] = True
        rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
        assert rms(audio[inside]) > 3 * rms(audio[~inside])  # speech where the segments say (floors reach -40 dB)


@needs_engines
def test_clip_noise_floors_come_in_the_streams_colours(tiny_shards):
    """White floors only taught the detector that a pink floor is a wake word (docs/results.md)."""
    tilts = []
    for s in iter_split(tiny_shards / "train"):
        lead = s["audio"][:1600]  # 0.1 s; noise only where the utterance starts later
        if np.sqrt(np.mean(lead ** 2)) < 10 ** (-38 / 20) and np.abs(lead).max() > 0:
            power = np.abs(np.fft.rfft(lead)) ** 2
            tilts.append(10 * np.log10(power[1:40].mean() / power[400:].mean()))  # < 400 Hz vs > 4 kHz
    tilts = np.array(tilts)
    assert tilts.size >= 20
    assert (tilts < 5).any() and (tilts > 15).any()  # white floors and pink/brown ones

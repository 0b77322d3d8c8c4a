"""The TTS engines behind synth (data/tts): real binaries, real voices, batched and deterministic."""

import shutil
import stat

import numpy as np
import pytest

from wakeword_dist.data.tts import ENGINE_NAMES, EngineMissing, Prosody, get_engine
from wakeword_dist.data.tts.festival import Festival

TEXTS = ["hey nova", "the weather is nice today", "stop", "hey nova?"]
# (engine, voice, native rate Hz read from the wav header)
VOICES = [("espeak-ng", "en-us+f3", 22050), ("espeak-ng", "en-gb-scotland+m2", 22050),
          ("flite", "kal", 8000), ("flite", "kal16", 16000), ("flite", "slt", 16000),
          ("flite", "awb", 16000), ("flite", "rms", 16000),
          ("festival", "kal_diphone", 16000), ("festival", "ked_diphone", 16000),
          ("festival", "cmu_us_slt_arctic_hts", 32000),
          ("festival-l2", "lp_diphone", 16000), ("festival-l2", "suo_fi_lj_diphone", 22050),
          ("festival-l2", "czech_krb", 32000)]


def _needs(engine):
    return pytest.mark.skipif(shutil.which(get_engine(engine).binary) is None,
                              reason=f"{engine} not installed")


@pytest.mark.parametrize("engine,voice,rate", [pytest.param(*v, marks=_needs(v[0])) for v in VOICES],
                         ids=[f"{e}:{v}" for e, v, _ in VOICES])
def test_speak_batch_is_deterministic_trimmed_and_at_native_rate(engine, voice, rate):
    e = get_engine(engine)
    assert voice in e.voices() and e.version()
    clips, sr = e.speak_batch(TEXTS, voice, Prosody(1.1, 0.95))
    again, _ = e.speak_batch(TEXTS, voice, Prosody(1.1, 0.95))
    assert sr == rate and len(clips) == len(TEXTS)
    for a, b in zip(clips, again):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and 0.15 * sr < a.size < 3.0 * sr
        assert np.abs(a).max() > 0.05 and max(abs(a[0]), abs(a[-1])) < 0.05  # speech, trimmed
    assert clips[1].size > 1.5 * clips[2].size  # one clip per text, in order
    assert not np.array_equal(clips[0], clips[2])


@_needs("flite")
@pytest.mark.parametrize("voice", ["kal", "kal16"])
def test_flite_batch_cuts_equal_speaking_each_text_alone(voice):
    """Diphone voices: a text cut from the batch is bit-identical to the text spoken alone."""
    e = get_engine("flite")
    batch, _ = e.speak_batch(TEXTS, voice)
    for text, clip in zip(TEXTS, batch):
        alone, _ = e.speak_batch([text], voice)
        np.testing.assert_array_equal(clip, alone[0])


@pytest.mark.parametrize("engine,voice", [
    pytest.param("espeak-ng", "en-us+m3", marks=_needs("espeak-ng")),
    pytest.param("flite", "slt", marks=_needs("flite")),
    pytest.param("festival", "kal_diphone", marks=_needs("festival")),
    pytest.param("festival", "cmu_us_slt_arctic_hts", marks=_needs("festival")),
    pytest.param("festival-l2", "czech_dita", marks=_needs("festival"))])
def test_engine_rate_is_honoured(engine, voice):
    e = get_engine(engine)
    slow, _ = e.speak_batch(["the weather is nice today"], voice, Prosody(rate=0.8))
    fast, _ = e.speak_batch(["the weather is nice today"], voice, Prosody(rate=1.3))
    assert fast[0].size < 0.85 * slow[0].size


@_needs("festival")
def test_festival_hts_ignores_pitch_and_says_so():
    e = get_engine("festival")
    assert e.applied("cmu_us_slt_arctic_hts", Prosody(1.2, 1.3)) == Prosody(1.2, 1.0)
    assert e.applied("kal_diphone", Prosody(1.2, 1.3)) == Prosody(1.2, 1.3)
    assert get_engine("festival-l2").applied("lp_diphone", Prosody(1.2, 1.3)) == Prosody(1.2, 1.0)


@_needs("festival")
def test_festival_l2_voices_are_talkers_of_their_own():
    """Eight non-English talkers, none sharing a split group with each other or the English voices."""
    l2, en = get_engine("festival-l2"), get_engine("festival")
    groups = {l2.split_group(v) for v in l2.voices()}
    assert len(groups) == len(l2.voices()) == 8
    assert not groups & {en.split_group(v) for v in en.voices()}


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_missing_binary_names_the_apt_package(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    e = get_engine(engine)
    with pytest.raises(EngineMissing) as err:
        e.speak_batch(["hey"], {"espeak-ng": "en-us", "festival": "kal_diphone",
                                "festival-l2": "lp_diphone"}.get(engine, "kal"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{e.binary} not found on PATH: install it (apt-get install ")
    assert all(p in msg for p in e.apt_packages)


def test_missing_festival_voice_names_its_festvox_package(tmp_path, monkeypatch):
    """A festival whose voice list lacks the HTS voice (a stand-in binary at the real boundary)."""
    fake = tmp_path / "festival"
    fake.write_text('#!/bin/sh\necho "(kal_diphone ked_diphone)"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    Festival.installed_voices.cache_clear()
    try:
        with pytest.raises(EngineMissing, match=r"^festival voice cmu_us_slt_arctic_hts not installed: "
                                                r"install it \(apt-get install festvox-us-slt-hts\)$"):
            get_engine("festival").voices()
    finally:
        Festival.installed_voices.cache_clear()


def test_unknown_engine():
    with pytest.raises(ValueError, match="unknown TTS engine 'sam'"):
        get_engine("sam")

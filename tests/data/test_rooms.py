"""Simulated RIRs (pyroomacoustics): seeded, direct path at 0, unit energy, RT60 follows the walls,
and the ``rir`` split round trip."""

import json
import tarfile

import numpy as np
import pytest

from wakeword_dist.data import rooms
from wakeword_dist.data.reader import iter_split, read_index

SR = 16000


def test_bank_is_seeded():
    a, rooms_a = rooms.simulate_rir_bank(4, sample_rate=SR, seed=0)
    b, rooms_b = rooms.simulate_rir_bank(4, sample_rate=SR, seed=0)
    c, rooms_c = rooms.simulate_rir_bank(4, sample_rate=SR, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and rooms_a == rooms_b
    assert not any(np.array_equal(x, y) for x, y in zip(a, c))
    assert rooms_a != rooms_c


def test_bank_properties():
    rirs, recs = rooms.simulate_rir_bank(12, sample_rate=SR, seed=2, max_seconds=0.5)
    for rir, rec in zip(rirs, recs):
        assert rir.dtype == np.float32 and rir.shape == (8000,)  # 0.5 s at 16 kHz
        assert np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, abs=1e-5)
        # Direct path first: index 0 carries at least half the largest tap (a floor bounce can
        # coincide and beat it, never by 2x), and the faded end is silent.
        assert abs(rir[0]) >= 0.5 * np.abs(rir).max()
        assert rir[-1] == 0.0
        assert all(lo <= d <= hi for lo, d, hi in zip((3.0, 3.0, 2.4), rec["dims_m"], (10.0, 8.0, 4.0)))
        assert 0.5 <= rec["distance_m"] <= 5.0
        assert rec["distance_m"] == pytest.approx(np.linalg.norm(np.subtract(rec["mic_m"], rec["source_m"])), abs=1e-3)
        margin = 0.3 - 1e-6
        for pos in (rec["mic_m"], rec["source_m"]):
            assert all(margin <= p <= d - margin for p, d in zip(pos, rec["dims_m"]))
        assert rec["source"] == "pyroomacoustics" and set(rec["absorption"]) == set(rooms.WALLS)
    # The measured RT60 follows the Sabine target it was drawn for.
    target = [r["rt60_target_s"] for r in recs]
    measured = [r["rt60_s"] for r in recs]
    assert np.corrcoef(target, measured)[0, 1] > 0.6, (target, measured)


def test_rt60_grows_with_lower_absorption():
    dims, src, mic = (6.0, 5.0, 3.0), (1.5, 1.2, 1.6), (4.0, 3.5, 1.2)
    rt60 = [rooms.estimate_rt60(rooms.simulate_rir(dims, a, src, mic, sample_rate=SR, max_seconds=1.0), SR)
            for a in (0.7, 0.35, 0.15)]
    assert rt60[0] < rt60[1] < rt60[2], rt60
    # Sabine: RT60 = 0.161 V / (S a) s; V = 90 m³, S = 126 m²; a = 0.35 -> 0.33 s.
    assert 0.5 * 0.33 < rt60[1] < 2 * 0.33, rt60


def test_almost_anechoic_room_is_one_tap():
    rir = rooms.simulate_rir((8.0, 7.0, 3.5), 0.99, (2.0, 2.0, 1.5), (3.0, 2.5, 1.5), sample_rate=SR)
    # Reflections lose 99 % of their energy and travel farther: the direct tap holds almost all.
    assert np.sum(rir[:3].astype(np.float64) ** 2) > 0.9


def test_write_and_load_rir_split(tmp_path):
    split = tmp_path / "rir"
    index = rooms.write_rir_split(split, 3, sample_rate=SR, seed=5, max_seconds=0.5)
    assert index["num_samples"] == 3 and index["source"] == "pyroomacoustics"
    assert read_index(split)["label_names"] == ["rir"]
    with tarfile.open(split / index["shards"][0]) as tar:  # a plain tar
        assert sorted(tar.getnames())[:2] == ["rir-000000.json", "rir-000000.wav"]
    metas = [s["meta"] for s in iter_split(split)]
    for meta in metas:
        assert meta["source"] == "pyroomacoustics" and meta["kind"] == "rir"
        assert {"dims_m", "rt60_s", "rt60_target_s", "absorption", "distance_m"} <= set(meta)
    json.dumps(metas)  # plain JSON values only
    bank = rooms.load_rir_split(split, SR)
    expected, _ = rooms.simulate_rir_bank(3, sample_rate=SR, seed=5, max_seconds=0.5)
    assert tuple(bank.shape) == (3, 8000)
    np.testing.assert_allclose(bank.norm(dim=1).numpy(), 1.0, atol=1e-5)
    # int16 storage (peak-normalised first): within a few 1e-4 of the simulated float RIRs.
    np.testing.assert_allclose(bank.numpy(), np.stack(expected), atol=5e-4)
    assert tuple(rooms.load_rir_split(split, 8000, max_rirs=2).shape) == (2, 4000)  # resampled


def test_bad_ranges_are_one_line_errors():
    with pytest.raises(ValueError, match="count"):
        rooms.simulate_rir_bank(0)
    with pytest.raises(ValueError, match="rt60_s"):
        rooms.simulate_rir_bank(1, rt60_s=(0.5, 0.2))
    with pytest.raises(ValueError, match="fits room"):
        rooms.simulate_rir_bank(1, distance_m=(20.0, 30.0))

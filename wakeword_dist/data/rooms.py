"""Simulated room impulse responses (pyroomacoustics image-source shoebox rooms) and the ``rir`` split.

A bank is drawn at synth time from one seeded numpy generator: per room its size, wall
absorption (from a target RT60 through Sabine's formula, then jittered per wall), mic and source
positions at a source-mic distance. Each RIR is cut at its direct path (index 0), truncated to
``max_seconds`` with a short fade-out and scaled to unit energy. Augmentation convolves clips
with them on the device (``wakeword_dist.augment.WaveAugment``); ``load_rir_split`` reads the
split back as the ``(R, L)`` tensor it takes.

The image-source order is capped (``max_order``): cost grows ~ order³, and reflections later
than the truncation are never used. Measured on this machine (one core): ~20 ms per RIR at
order 30, so 200 RIRs take ~4 s; see shards/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SPLIT_NAME = "rir"
SOURCE = "pyroomacoustics"
WALLS = ("east", "west", "north", "south", "floor", "ceiling")  # pyroomacoustics' shoebox wall names
_WALL_MARGIN_M = 0.3  # mic and source keep this distance from every wall, m
_FADE_S = 0.02  # raised-cosine fade at the truncation point, s (no step at the end of the RIR)


def simulate_rir(room_dim, absorption, source, mic, *, sample_rate: int = 16000,
                 max_order: int = 30, max_seconds: float = 0.8) -> np.ndarray:
    """One shoebox RIR, float32 ``(L,)`` with ``L = max_seconds * sample_rate``.

    Args:
        room_dim: (3,) room size in m.
        absorption: energy absorption coefficient in (0, 1), one float for all walls or a dict
            wall name (``WALLS``) -> coefficient.
        source, mic: (3,) positions in m, inside the room.
        max_order: image-source reflection order cap.
        max_seconds: truncation, s.

    The direct path is at index 0 (the fractional-delay filter's pre-ringing before it is cut),
    the last ``_FADE_S`` fade to zero, and the energy is 1.
    """
    import pyroomacoustics as pra

    room_dim = np.asarray(room_dim, np.float64)
    walls = absorption if isinstance(absorption, dict) else {w: float(absorption) for w in WALLS}
    materials = {w: pra.Material(float(walls[w])) for w in WALLS}
    room = pra.ShoeBox(room_dim, fs=sample_rate, materials=materials, max_order=int(max_order),
                       air_absorption=False)
    room.add_source(np.asarray(source, np.float64))
    room.add_microphone(np.asarray(mic, np.float64))
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], np.float64)
    # Direct path: pyroomacoustics delays every image by half its fractional-delay filter
    # (81 taps -> 40 samples) plus the propagation time; take the peak near that sample.
    half = pra.constants.get("frac_delay_length") // 2
    expected = half + float(np.linalg.norm(np.subtract(source, mic))) / pra.constants.get("c") * sample_rate
    lo, hi = max(0, int(expected) - half), int(expected) + half + 2
    start = lo + int(np.abs(rir[lo:hi]).argmax())
    length = int(round(max_seconds * sample_rate))
    out = np.zeros(length, np.float64)
    tail = rir[start:start + length]
    out[:tail.size] = tail
    fade = min(int(_FADE_S * sample_rate), length // 4)
    out[length - fade:] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, fade)))
    energy = np.sqrt(np.sum(out ** 2))
    if not energy > 0:
        raise ValueError(f"silent RIR for room {room_dim.tolist()} (source {source}, mic {mic})")
    return (out / energy).astype(np.float32)


def estimate_rt60(rir: np.ndarray, sample_rate: int, *, decay_db: tuple[float, float] = (-5.0, -25.0)) -> float:
    """RT60 in s from Schroeder backward integration: the time of the ``decay_db`` fall of the
    energy decay curve (T20 by default), extrapolated to 60 dB. ``rir`` is ``(L,)``."""
    energy = np.cumsum(np.asarray(rir, np.float64)[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(energy / energy[0] + 1e-30)
    t0 = int(np.argmax(edc_db <= decay_db[0]))
    t1 = int(np.argmax(edc_db <= decay_db[1]))
    if t1 <= t0:
        raise ValueError(f"RIR of {rir.size} samples never decays by {-decay_db[1]:g} dB")
    t = np.arange(t0, t1 + 1) / sample_rate
    slope = np.polyfit(t, edc_db[t0:t1 + 1], 1)[0]  # dB/s, negative
    return float(-60.0 / slope)


def _draw_positions(rng: np.random.Generator, dims: np.ndarray, distance_m: tuple[float, float],
                    tries: int = 1000) -> tuple[np.ndarray, np.ndarray, float]:
    """Mic at 0.5-2 m height, source (a talker) at 0.8-1.9 m, both inside the wall margin, at a
    distance uniform in ``distance_m``; far distances that do not fit a small room are redrawn,
    so small rooms get nearer talkers. Returns (mic, source, distance)."""
    m = _WALL_MARGIN_M
    top = dims[2] - m
    for _ in range(tries):
        mic = np.array([rng.uniform(m, dims[0] - m), rng.uniform(m, dims[1] - m),
                        rng.uniform(0.5, min(2.0, top))])
        dist = rng.uniform(*distance_m)
        z = rng.uniform(0.8, min(1.9, top))
        dz = z - mic[2]
        azimuth = rng.uniform(0, 2 * np.pi)
        if dist <= abs(dz):
            continue
        h = np.sqrt(dist ** 2 - dz ** 2)  # horizontal distance, m
        src = np.array([mic[0] + h * np.cos(azimuth), mic[1] + h * np.sin(azimuth), z])
        if np.all(src[:2] >= m) and np.all(src[:2] <= dims[:2] - m):
            return mic, src, float(dist)
    raise ValueError(f"no source-mic pair at {distance_m} m fits room {dims.round(2).tolist()} m")


def simulate_rir_bank(count: int, *, sample_rate: int = 16000, seed: int = 0,
                      room_min_m: tuple[float, float, float] = (3.0, 3.0, 2.4),
                      room_max_m: tuple[float, float, float] = (10.0, 8.0, 4.0),
                      rt60_s: tuple[float, float] = (0.2, 0.9),
                      distance_m: tuple[float, float] = (0.5, 5.0),
                      wall_jitter: float = 0.3, max_order: int = 30,
                      max_seconds: float = 0.8) -> tuple[list[np.ndarray], list[dict]]:
    """``count`` seeded shoebox RIRs and their rooms: ``(rirs, rooms)``.

    ``rirs[i]`` is float32 ``(max_seconds * sample_rate,)``, direct path at index 0, unit energy.
    ``rooms[i]`` records ``dims_m``, ``rt60_target_s`` (Sabine), ``rt60_s`` (measured, T20),
    ``absorption`` per wall, ``mic_m``, ``source_m``, ``distance_m``, ``max_order``,
    ``source="pyroomacoustics"``.

    Args:
        room_min_m, room_max_m: room size range (length, width, height), m, uniform per axis.
        rt60_s: target reverberation time range, s, uniform; turned into one absorption
            coefficient by ``pyroomacoustics.inverse_sabine``.
        distance_m: source-mic distance range, m.
        wall_jitter: each wall's absorption is the Sabine one times U(1 - j, 1 + j) (rooms do not
            have six identical walls); clipped to [0.01, 0.99].
        max_order: image-source order cap (cost ~ order³; the truncation makes later ones moot).
        max_seconds: RIR length, s.

    Same arguments -> same bank (one numpy generator, drawn in a fixed order per room).
    """
    import pyroomacoustics as pra

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 0 < rt60_s[0] <= rt60_s[1]:
        raise ValueError(f"rt60_s must be a (low, high) range of positive seconds, got {rt60_s}")
    if not 0 < distance_m[0] <= distance_m[1]:
        raise ValueError(f"distance_m must be a (low, high) range of positive metres, got {distance_m}")
    rng = np.random.default_rng([seed, 0x5215])  # own stream: no collision with the synth's other draws
    lo, hi = np.asarray(room_min_m, np.float64), np.asarray(room_max_m, np.float64)
    rirs, rooms = [], []
    for i in range(count):
        dims = rng.uniform(lo, hi)
        target = float(rng.uniform(*rt60_s))
        jitter = rng.uniform(1 - wall_jitter, 1 + wall_jitter, size=len(WALLS))
        mic, src, dist = _draw_positions(rng, dims, distance_m)
        try:
            e_absorption, _ = pra.inverse_sabine(target, dims)
        except ValueError:  # RT60 too short for this room: Sabine needs absorption > 1
            e_absorption = 0.99
        walls = {w: float(np.clip(e_absorption * j, 0.01, 0.99)) for w, j in zip(WALLS, jitter)}
        rir = simulate_rir(dims, walls, src, mic, sample_rate=sample_rate, max_order=max_order,
                           max_seconds=max_seconds)
        rirs.append(rir)
        rooms.append({
            "room": i, "dims_m": [round(float(d), 4) for d in dims],
            "rt60_target_s": round(target, 4), "rt60_s": round(estimate_rt60(rir, sample_rate), 4),
            "absorption": {w: round(a, 4) for w, a in walls.items()},
            "mic_m": [round(float(v), 4) for v in mic], "source_m": [round(float(v), 4) for v in src],
            "distance_m": round(dist, 4), "max_order": int(max_order), "source": SOURCE,
        })
    return rirs, rooms


def write_rir_split(split_dir: str | os.PathLike, count: int, *, sample_rate: int = 16000,
                    seed: int = 0, audio_format: str = "wav", samples_per_shard: int = 250,
                    **simulate_kw) -> dict:
    """Simulate ``count`` RIRs (``simulate_rir_bank``) and write them as the ``rir`` split in
    ``split_dir`` (usually ``<root>/rir``). Returns the written ``index.json`` dict.

    Each sample: ``rir-XXXXXX.<audio_format>`` (peak-normalised to 0.99 before the int16 cast, for
    resolution in the tail; ``load_rir_split`` restores unit energy) and a json with
    ``label = 0`` / ``label_name = "rir"``, ``kind = "rir"``, ``source = "pyroomacoustics"`` and the
    room record of ``simulate_rir_bank``.
    """
    from wakeword_dist.data.shard_writer import ShardWriter

    import pyroomacoustics as pra

    rirs, rooms = simulate_rir_bank(count, sample_rate=sample_rate, seed=seed, **simulate_kw)
    extra = {"split": SPLIT_NAME, "generator": {"name": SOURCE, "version": pra.__version__,
                                                **{k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in simulate_kw.items()}}}
    with ShardWriter(split_dir, samples_per_shard, audio_format, sample_rate, label_names=["rir"],
                     source=SOURCE, seed=seed, extra=extra) as writer:
        for rir, room in zip(rirs, rooms):
            meta = {"label": 0, "label_name": "rir", "speaker": f"room-{room['room']:06d}",
                    "kind": "rir", "text": "", **room}
            writer.write(f"rir-{room['room']:06d}", rir * (0.99 / np.abs(rir).max()), meta)
        return writer.close()


def load_rir_split(split_dir: str | os.PathLike, sample_rate: int, max_rirs: int | None = None):
    """The ``rir`` split as a float32 tensor ``(R, L)``: each RIR resampled to ``sample_rate`` Hz
    when stored at another rate, zero-padded to the longest, direct path at index 0, unit energy.
    ``R <= max_rirs`` (the first ones in key order)."""
    import torch

    from wakeword_dist.data.reader import iter_split

    rirs = []
    for sample in iter_split(split_dir):
        rir = torch.from_numpy(np.asarray(sample["audio"], np.float32))
        if sample["sample_rate"] != sample_rate:
            import torchaudio.functional as AF
            rir = AF.resample(rir, int(sample["sample_rate"]), sample_rate)
        energy = rir.norm()
        if not energy > 0:
            raise ValueError(f"{Path(split_dir)}: RIR {sample['key']} is silent")
        rirs.append(rir / energy)
        if max_rirs is not None and len(rirs) >= max_rirs:
            break
    if not rirs:
        raise ValueError(f"{Path(split_dir) / 'index.json'}: rir split holds no RIRs")
    out = torch.zeros(len(rirs), max(r.numel() for r in rirs))
    for i, r in enumerate(rirs):
        out[i, :r.numel()] = r
    return out

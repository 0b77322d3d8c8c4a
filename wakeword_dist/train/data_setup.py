"""The recipe's data: the dataset's splits checked before any step, their loaders, the augmenter.

Each function maps the typed config onto the plain-argument APIs of `data/` and `augment`, so
those never see a config object or an Accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wakeword_dist.augment import WaveAugment, load_rirs
from wakeword_dist.config import Config
from wakeword_dist.data import reader


@dataclass
class DataSplits:
    """Where each split is: a ``Path`` (local folder), a ``reader.Location`` (URL prefix or
    ``pipe:`` template; joins with ``/`` like a Path) or, for ``data.train_shards`` /
    ``data.val_shards``, a ``reader.Split`` (shard spec without an index)."""
    root: Path
    train_dir: Path
    val_dir: Path
    test_dir: Path
    stream_dir: Path
    background_dir: Path
    label_names: list[str]
    positive_index: int
    train_index: dict
    # data.include_sources / exclude_sources as reader kwargs: training and validation only
    sources: dict = field(default_factory=dict)


def open_data(cfg: Config, job: str) -> DataSplits:
    """Check the dataset before any step: indexes readable, sample rate as configured."""
    d = cfg.data
    root = reader.location(d.root)
    splits = {}
    for name, spec in (("train", d.train_shards), ("val", d.val_shards)):
        if spec:
            splits[name] = reader.Split.from_spec(spec, label_names=d.label_names, sample_rate=d.sample_rate)
        else:
            splits[name] = root / name
    if job == "distill" and cfg.distill.mode == "cached":
        splits["train"] = cached_train_dir(cfg)
    opened = {}
    for name, where in splits.items():
        if isinstance(where, reader.Split):
            opened[name] = where, {"shards": list(where.urls), "label_names": list(where.label_names),
                                   "sample_rate": where.sample_rate, "source": where.location}
        else:
            index = reader.read_index(where)
            reader.check_sample_rate(index, d.sample_rate, where)
            opened[name] = where, index
    (train_dir, index), (val_dir, val_index) = opened["train"], opened["val"]
    label_names = list(index["label_names"])
    for name, (where, idx) in opened.items():
        for other, what in ((label_names, "the train split"), (d.label_names or label_names, "data.label_names")):
            if list(idx["label_names"]) != list(other):
                raise ValueError(f"label maps differ: {_where(where)} has {list(idx['label_names'])}, "
                                 f"{what} has {list(other)}")
    sources = {"include_sources": list(d.include_sources), "exclude_sources": list(d.exclude_sources)}
    return DataSplits(root=root, train_dir=train_dir, val_dir=val_dir, test_dir=root / "test",
                      stream_dir=root / "stream", background_dir=root / "background",
                      label_names=label_names, positive_index=1, train_index=index, sources=sources)


def _where(split) -> str:
    return f"shards {split.location}" if isinstance(split, reader.Split) else str(split / "index.json")


def cached_train_dir(cfg: Config) -> Path:
    """Where `annotate` writes the teacher-annotated training split."""
    return Path(cfg.run.runs_dir) / cfg.run.experiment / "annotated" / "train"


def train_loader(cfg: Config, data: DataSplits, acc, *, epoch: int, skip_batches: int,
                 with_teacher_logits: bool):
    d = cfg.data
    return reader.make_train_loader(
        data.train_dir, batch_size=d.batch_size, batches_per_epoch=cfg.train.batches_per_epoch,
        rank=acc.process_index, world_size=acc.num_processes, seed=cfg.train.seed, epoch=epoch,
        num_workers=d.num_workers, skip_batches=skip_batches, clip_samples=d.clip_samples,
        expected_sample_rate=d.sample_rate, with_teacher_logits=with_teacher_logits,
        retries=d.shard_retries, retry_delay_s=d.shard_retry_delay_s, **data.sources)


def eval_loader(cfg: Config, data: DataSplits, split_dir, *, batch_size: int, rank: int, world_size: int,
                sources: dict | None = None):
    """The evaluation loader the recipe's helpers use (single-process decode, configured retries);
    ``sources``: reader filter kwargs (``data.sources`` for train/val, ``{}`` = none)."""
    d = cfg.data
    return reader.make_eval_loader(split_dir, batch_size=batch_size, rank=rank, world_size=world_size,
                                   num_workers=0, clip_samples=d.clip_samples, expected_sample_rate=d.sample_rate,
                                   retries=d.shard_retries, retry_delay_s=d.shard_retry_delay_s,
                                   **(sources or {}))


def augmenter(cfg: Config, data: DataSplits, device) -> WaveAugment:
    """WaveAugment as configured; its reverb source is, by preference: ``augment.rir_dir`` (real
    RIRs), the dataset's simulated ``rir`` split, generated decaying noise. The choice is printed
    once (main process) and kept as ``aug.rir_source``."""
    from accelerate import PartialState

    from wakeword_dist.data import rooms

    a = cfg.augment
    noise, noise_prob = None, a.noise_prob
    if noise_prob > 0:
        if not (data.background_dir / "index.json").exists():
            raise FileNotFoundError(
                f"augment.noise_prob={noise_prob} but {data.background_dir} has no index.json; "
                "add a background split or set augment.noise_prob=0")
        noise = reader.load_background(data.background_dir, max_clips=256,
                                       clip_samples=cfg.data.clip_samples).to(device)
    rirs, rir_source = None, "none (augment.rir_prob=0)"
    rir_split = data.root / rooms.SPLIT_NAME
    if a.rir_prob > 0 and a.rir_dir:
        rirs = load_rirs(a.rir_dir, cfg.data.sample_rate)
        rir_source = f"augment.rir_dir {a.rir_dir} ({rirs.shape[0]} real RIRs)"
    elif a.rir_prob > 0 and (rir_split / "index.json").exists():
        rirs = rooms.load_rir_split(rir_split, cfg.data.sample_rate, max_rirs=a.rir_max)
        rir_source = f"rir split {rir_split} ({rirs.shape[0]} simulated RIRs)"
    elif a.rir_prob > 0:
        rir_source = f"generated decaying-noise RIRs (no augment.rir_dir, no {rir_split}/index.json)"
    aug = WaveAugment(noise_bank=noise, snr_db=(a.snr_db_min, a.snr_db_max), noise_prob=noise_prob,
                      rir_prob=a.rir_prob, rirs=rirs, gain_db=(-a.gain_db, a.gain_db), shift_ms=a.shift_ms,
                      sample_rate=cfg.data.sample_rate, channel_prob=a.channel_prob,
                      channel_band_hz=(a.channel_low_hz, a.channel_high_hz),
                      channel_mulaw_prob=a.channel_mulaw_prob, speed_prob=a.speed_prob,
                      speed_range=(a.speed_min, a.speed_max)).to(device)
    aug.rir_source = rir_source
    PartialState().print(f"augment: reverb from {rir_source}")
    return aug

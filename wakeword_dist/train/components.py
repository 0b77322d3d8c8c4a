"""Building blocks of the recipe: data, models, teacher, collectives, best-model files.

Each function maps the typed config onto the plain-argument APIs of `data/`, `models/`,
`distill/` and `eval/`, so those packages never see a config object or Accelerate.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from itertools import islice
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from wakeword_dist.atomic import replace_dir, write_json_atomic
from wakeword_dist.augment import WaveAugment, load_rirs
from wakeword_dist.config import Config
from wakeword_dist.data import reader
from wakeword_dist.models.registry import build_student
from wakeword_dist.models.teacher import DTYPES



# ----------------------------------------------------------------------------- data
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
    label_names: list
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


# ----------------------------------------------------------------------------- models
def trainable_model(cfg: Config, job: str, label_names: list) -> tuple[torch.nn.Module, dict]:
    """The model this job trains, plus the architecture record stored in checkpoints."""
    if job == "teacher":
        from wakeword_dist.models.teacher import TeacherModel, build_teacher_from_scratch, load_teacher

        quiet_transformers()
        t = cfg.teacher
        if t.name_or_path:  # fine-tune a pretrained checkpoint, in float32
            model = load_teacher(t.name_or_path, label_names=label_names, dtype="fp32",
                                 trust_remote_code=t.trust_remote_code, sample_rate=cfg.data.sample_rate,
                                 freeze=False)
        else:
            hf = build_teacher_from_scratch(
                label_names, arch=t.arch, hidden_size=t.hidden_size, num_hidden_layers=t.num_hidden_layers,
                num_attention_heads=t.num_attention_heads, intermediate_size=t.intermediate_size,
                **teacher_conv_stack(t.feature_encoder, t.conv_dim))
            model = TeacherModel(hf, label_names=label_names, name_or_path=f"scratch:{t.arch}",
                                 sample_rate=cfg.data.sample_rate, dtype="fp32")
        arch = {"model": f"teacher:{t.name_or_path or t.arch}", "num_classes": len(label_names),
                "label_names": list(label_names)}
        return model, arch
    model = build_student(cfg.student.name, len(label_names), sample_rate=cfg.data.sample_rate,
                          n_mels=cfg.frontend.n_mels, width=cfg.student.width,
                          specaugment={} if cfg.augment.specaugment else None,  # {} = its defaults
                          win_ms=cfg.frontend.win_ms, hop_ms=cfg.frontend.hop_ms)
    arch = {"model": cfg.student.name, "width": cfg.student.width, "num_classes": len(label_names),
            "label_names": list(label_names), "n_mels": cfg.frontend.n_mels}
    return model, arch


def wav2vec2_conv_stack(channels: int) -> dict:
    """Wav2Vec2's own 7-layer feature encoder (total stride 320 = 20 ms frames at 16 kHz) at a
    chosen width. A shorter stack leaves hundreds of frames per second and the attention,
    quadratic in frames, dominates: 800 frames made a tiny teacher ~50x slower on CPU."""
    return {"conv_dim": (channels,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2)}


def filterbank_conv_stack(channels: int) -> dict:
    """A learned filter bank as the feature encoder: one conv of 400 taps (25 ms) at a 160-sample
    (10 ms) hop, like an STFT window, then a kernel-3 stride-2 conv to 20 ms frames (48 per 1-s clip).
    From scratch on the demo's few thousand clips it reached 0.90 val accuracy in 400 steps where
    HF's stack (first kernel 10 samples, 0.6 ms: no frequency resolution until deep layers) was at
    0.74 (docs/results.md); its steps were also faster in those runs (one conv at a 10-ms hop instead of 7 at full rate)."""
    return {"conv_dim": (channels, channels), "conv_kernel": (400, 3), "conv_stride": (160, 2)}


def teacher_conv_stack(kind: str, channels: int) -> dict:
    """The from-scratch teacher's conv feature encoder by name (``teacher.feature_encoder``)."""
    stacks = {"wav2vec2": wav2vec2_conv_stack, "filterbank": filterbank_conv_stack}
    return stacks[kind](channels)


def fit_cmvn(model, data: DataSplits, cfg: Config, acc) -> None:
    """Global CMVN from a few training batches of rank 0, broadcast so all ranks agree."""
    from wakeword_dist.models.frontend import compute_cmvn

    batches = eval_loader(cfg, data, data.train_dir, batch_size=cfg.data.batch_size, rank=0, world_size=1,
                          sources=data.sources)
    mean, std = compute_cmvn(model.frontend, (b["audio"].to(acc.device) for b in islice(batches, 20)))
    stats = broadcast_object_list([mean.cpu(), std.cpu()])
    model.frontend.set_cmvn(stats[0].to(acc.device), stats[1].to(acc.device))


# ----------------------------------------------------------------------------- teacher
def quiet_transformers() -> None:
    """No per-tensor "Loading weights" bars in training logs (our own bar and banner say enough)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def frozen_teacher(cfg: Config, acc, label_names: list):
    """Load, freeze and place the teacher. Returns (module, callable, placement decision)."""
    from wakeword_dist.distill.placement import place_teacher
    from wakeword_dist.models.fast_teacher import optimize_teacher
    from wakeword_dist.models.teacher import load_teacher

    quiet_transformers()
    teacher = load_teacher(cfg.teacher_path(), label_names=label_names, dtype=cfg.teacher.dtype,
                           trust_remote_code=cfg.teacher.trust_remote_code, device="cpu")
    # Exact and free: the positional conv's weight norm is folded once instead of every call.
    # Before placement, since ZeRO-3 partitions the weights.
    optimize_teacher(teacher, fold_weight_norm=True)
    fn, decision = place_teacher(
        teacher, placement=cfg.teacher.placement, device=acc.device, batch_size=cfg.data.batch_size,
        clip_samples=cfg.data.clip_samples, dtype=DTYPES[cfg.teacher.dtype],
        memory_share=cfg.teacher.memory_share, world_size=acc.num_processes)
    acc.print(f"teacher placement: {decision.get('placement')} - {decision.get('reason', '')}")
    if decision.get("placement") == "replicate":
        speed_up_teacher(teacher, cfg, acc.device)
    # recorded with the run (final.json "placement"): what the teacher really ran as
    decision["fast_teacher"] = dict(getattr(teacher, "fast_teacher", {}))
    return teacher, fn, decision


def speed_up_teacher(teacher, cfg: Config, device) -> None:
    """The configured rewrites, in place on the placed teacher (the placement's callable calls
    the same module). Only for a replicated teacher: ZeRO-3 has partitioned the weights, and
    its parameter-fetch hooks must see the original modules."""
    from wakeword_dist.models.fast_teacher import optimize_teacher

    rewrites = set(cfg.teacher.fast_forward)
    cuda_graphs = cfg.teacher.cuda_graphs and torch.device(device).type == "cuda"
    compile_mode = None if cfg.teacher.compile in ("none", "default") else cfg.teacher.compile
    if not (rewrites or cuda_graphs or cfg.teacher.compile != "none"):
        return
    optimize_teacher(teacher, fold_weight_norm=False,  # folded before placement (frozen_teacher)
                     fuse_feature_norm="fuse_feature_norm" in rewrites,
                     channels_last_encoder="channels_last_encoder" in rewrites,
                     dense_pos_conv="dense_pos_conv" in rewrites,
                     compile=cfg.teacher.compile != "none", compile_mode=compile_mode,
                     cuda_graphs=cuda_graphs)


def release_teacher(decision: dict) -> None:
    if decision.get("placement") == "zero3":
        from wakeword_dist.distill.placement import shutdown_teacher

        shutdown_teacher(decision)


def teacher_quality_gate(cfg: Config, acc, teacher_fn, data: DataSplits) -> dict:
    """Refuse to distil from a teacher below `teacher.min_val_accuracy` on the val split.

    Every rank makes the same number of teacher calls (padding with silent batches), since
    a ZeRO-3 teacher hangs if one rank calls it fewer times than another."""
    loader = list(eval_loader(cfg, data, data.val_dir, batch_size=cfg.data.batch_size,
                              rank=acc.process_index, world_size=acc.num_processes, sources=data.sources))
    n_max = int(max_over_ranks(acc, len(loader)))
    correct = total = nonfinite = 0
    for i in range(n_max):
        if i < len(loader):
            batch = loader[i]
            audio, labels = batch["audio"].to(acc.device), batch["label"].to(acc.device)
        else:
            audio, labels = torch.zeros(1, cfg.data.clip_samples, device=acc.device), None
        with torch.no_grad():
            logits = teacher_fn(audio)
        if labels is not None:
            nonfinite += int((~torch.isfinite(logits)).any(dim=-1).sum())
            keep = labels >= 0
            correct += int((logits.argmax(-1)[keep] == labels[keep]).sum())
            total += int(keep.sum())
    correct, total, nonfinite = sum_over_ranks(acc, [correct, total, nonfinite])
    if nonfinite:  # every rank sees the same sums and raises together
        raise RuntimeError(
            f"teacher {cfg.teacher_path()} gives non-finite logits on {int(nonfinite)} of {int(total)} val clips "
            f"in teacher.dtype={cfg.teacher.dtype}; fix its weights or use teacher.dtype=bf16/fp32")
    accuracy = correct / max(total, 1)
    result = {"val_accuracy": accuracy, "val_clips": int(total), "min_val_accuracy": cfg.teacher.min_val_accuracy}
    acc.print(f"teacher val accuracy {accuracy:.4f} on {int(total)} clips (gate {cfg.teacher.min_val_accuracy})")
    if accuracy < cfg.teacher.min_val_accuracy and not cfg.teacher.skip_quality_gate:
        raise RuntimeError(
            f"teacher {cfg.teacher_path()} has val accuracy {accuracy:.4f} < teacher.min_val_accuracy="
            f"{cfg.teacher.min_val_accuracy}; train it longer or set teacher.skip_quality_gate=true")
    return result


def check_cached_logits(cfg: Config, data: DataSplits) -> None:
    from wakeword_dist.distill.annotate import check_cached_fingerprint
    from wakeword_dist.models.teacher import load_teacher

    quiet_transformers()
    teacher = load_teacher(cfg.teacher_path(), label_names=data.label_names, dtype="fp32",
                           trust_remote_code=cfg.teacher.trust_remote_code, device="cpu")
    check_cached_fingerprint(data.train_index, teacher.fingerprint(), data.train_dir / "index.json")


# ----------------------------------------------------------------------------- collectives
def _reduce(acc, values, reduction: str) -> list[float]:
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        t = acc.reduce(t, reduction=reduction)
    return t.tolist()


def sum_over_ranks(acc, values) -> list[float]:
    return _reduce(acc, values, "sum")


def max_over_ranks(acc, value: float) -> float:
    if acc.num_processes == 1:
        return float(value)
    return float(acc.gather(torch.tensor([float(value)], device=acc.device)).max())


def broadcast_object(acc, obj):
    if acc.num_processes == 1:
        return obj
    return broadcast_object_list([obj], from_process=0)[0]


# ----------------------------------------------------------------------------- best model
def is_better(candidate: dict, best: dict | None, cfg: Config, job: str) -> bool:
    """Teacher: higher val accuracy. Students: lowest FRR with FA/h <= target (ties: higher F1)."""
    if best is None:
        return True
    if job == "teacher":
        return candidate["accuracy"] > best["accuracy"]
    from wakeword_dist.eval.det import select_best

    # select_best returns the winning mapping itself; on a tie it keeps the earlier one (best).
    return select_best([best, candidate], cfg.eval.target_fa_per_hour) is candidate


def save_teacher_dir(hf_model, out_dir: Path, sample_rate: int = 16000, quality: dict | None = None) -> Path:
    """A HF folder (config, safetensors, feature-extractor config, optional `quality.json`) that
    `load_teacher` reads by path. Written to a temp folder that replaces `out_dir` whole, so a
    reader never sees half a teacher or a quality record of another one."""
    from transformers import Wav2Vec2FeatureExtractor

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_model.save_pretrained(tmp, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sample_rate, do_normalize=True,
                             return_attention_mask=False).save_pretrained(tmp)
    if quality is not None:
        write_json_atomic(tmp / "quality.json", quality)
    replace_dir(tmp, out_dir)
    return out_dir


def save_best(acc, model, best_dir: Path, architecture: dict, label_names: list, val: dict, cfg: Config) -> None:
    """Rank 0: students -> safetensors + JSON to rebuild the module; teacher -> a HF folder."""
    from safetensors.torch import save_file

    unwrapped = acc.unwrap_model(model)
    if hasattr(unwrapped, "fingerprint"):  # the teacher job
        save_teacher_dir(unwrapped.model, best_dir, cfg.data.sample_rate,
                         quality={"val": val, "label_names": label_names})
        return
    # Weights and metadata go to a temp folder that replaces best/ whole: never one without the other.
    tmp = best_dir.with_name(f".{best_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in unwrapped.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    meta = {"architecture": architecture, "label_names": label_names, "val": val,
            "arch_args": getattr(unwrapped, "arch_args", None)}
    write_json_atomic(tmp / "model.json", meta)
    replace_dir(tmp, best_dir)


def load_best_student(best_dir: Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a student from `best/` (weights_only-safe: safetensors + JSON)."""
    from safetensors.torch import load_file

    meta = json.loads((Path(best_dir) / "model.json").read_text())
    args = dict(meta["arch_args"])
    model = build_student(args.pop("name"), args.pop("num_classes"), **args)
    model.load_state_dict(load_file(str(Path(best_dir) / "model.safetensors"), device="cpu"))
    return model.to(device).eval(), meta


# ----------------------------------------------------------------------------- progress
class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


class LineProgress:
    """A progress "bar" for logs (SLURM .out files, CI): one plain line every ``every_s``
    seconds and one at ``close``, instead of tqdm's carriage-return redraws, which a file
    keeps as thousands of updates on one line."""

    def __init__(self, total: int, initial: int, desc: str, every_s: float, stream):
        self.total, self.n, self.start_n, self.desc = total, initial, initial, desc
        self.every_s, self.stream, self.postfix = every_s, stream, {}
        self.t0 = self.last = time.monotonic()
        self.printed_n = initial

    def update(self, n):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self._line(now)

    def set_postfix(self, **kw):
        self.postfix = kw

    def close(self):
        if self.n != self.printed_n:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)  # steps/s since this process began
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f} %), "
              f"{rate:.2f} step/s{extra}", file=self.stream, flush=True)
        self.last, self.printed_n = now, self.n


def progress_bar(acc, cfg: Config, total: int, initial: int, *, line_every_s: float = 30.0):
    """Rank 0's progress: tqdm on a terminal; elsewhere a line every ``line_every_s`` s."""
    if not (acc.is_main_process and cfg.logging.progress):
        return _NoBar()
    if not sys.stderr.isatty():
        return LineProgress(total, initial, cfg.train.job, line_every_s, sys.stderr)
    return tqdm(total=total, initial=initial, desc=cfg.train.job, unit="step", dynamic_ncols=True)

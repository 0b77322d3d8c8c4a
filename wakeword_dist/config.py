"""Typed configuration: one dataclass per section, loaded from YAML plus dotted overrides.

Every setting lives here with its unit and a one-line help text. Unknown keys, wrong types
and out-of-range values are errors that name the key (and suggest the nearest valid one),
so a typo in a 200-GPU job fails in the first second instead of silently using a default.
This file holds the sections and their loading and saving; how a field carries its help text
and checks (``_help``, ``Range``, ``_coerce``) is in `config_fields.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wakeword_dist.atomic import write_bytes_atomic  # temp file removed if anything fails
from wakeword_dist.config_fields import (AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, ConfigError, Range,
                                         _check_metadata, _coerce, _field_types, _help)

SYNTH_ENGINES = ("espeak-ng", "flite", "festival", "festival-l2")  # data.engines (= wakeword_dist.data.tts.ENGINE_NAMES)
TEACHER_REWRITES = ("fuse_feature_norm", "channels_last_encoder", "dense_pos_conv")  # teacher.fast_forward


@dataclass
class RunConfig:
    experiment: str = _help("Experiment name: W&B group and runs/<experiment>/ folder.", "demo")
    runs_dir: str = _help("Root folder of run outputs.", "runs")


@dataclass
class DataConfig:
    root: str = _help("Where the dataset's splits (train/ val/ test/ stream/ background/) are: a folder, an "
                      "http(s):// URL prefix, or a pipe: command template with {path} for object stores "
                      "('pipe:aws s3 cp s3://bucket/demo/{path} -'); index.json is read the same way.", "shards/demo")
    train_shards: str = _help("Train from these shards instead of <root>/train/: a webdataset spec with brace "
                              "expansion ('https://host/ds/train-{000000..000999}.tar'), no index.json; needs "
                              "data.label_names. Empty = <root>/train/.", "")
    val_shards: str = _help("Validate on these shards (spec as data.train_shards) instead of <root>/val/.", "")
    label_names: list[str] = _help("Label map (index = label id) for data.train_shards / data.val_shards; with an "
                                   "index.json the index's own map is used and must equal this when both are set.", [])
    include_sources: list[str] = _help(
        "Training and validation read only samples whose json `source` is one of "
        "these (e.g. TTS engines); empty = all. Test/evaluate callers pass their own.", [])
    exclude_sources: list[str] = _help("Training and validation skip samples whose json `source` is one of these "
                                       "(leave-one-engine-out); the number of batches per epoch is unchanged.", [])
    shard_retries: int = _help("Re-reads of a shard URL whose transfer failed (HTTP error, cut connection, "
                               "pipe exit) before its loss is counted as bad data.", 2, range=NON_NEGATIVE)
    shard_retry_delay_s: float = _help("Seconds before re-read k (times k).", 1.0, range=NON_NEGATIVE)
    sample_rate: int = _help("Audio sample rate in Hz; shards with another rate are refused.", 16000, range=POSITIVE)
    clip_seconds: float = _help("Clip length in seconds (training and clip-level eval).", 1.0, range=POSITIVE)
    batch_size: int = _help("Clips per batch per rank.", 64, range=AT_LEAST_ONE)
    num_workers: int = _help("CPU decode workers per rank.", 1, range=NON_NEGATIVE)
    label_fraction: float = _help(
        "Fraction of training clips whose label the *student* sees (chosen by a hash of the key); "
        "the rest become unlabelled (label -1, KD term only). The teacher job always sees all labels.",
        1.0, range=FRACTION)
    synth_size: str = _help(
        "Preset for `synth`: tiny (tests), demo (the README's job) or full.", "demo", choices=("tiny", "demo", "full"))
    engines: list[str] = _help(
        "TTS engines `synth` mixes (equal shares of every split and of the streams): "
        "espeak-ng, flite, festival, festival-l2 (festival's Italian, Finnish and Czech voices reading English).",
        ["espeak-ng", "flite", "festival", "festival-l2"], choices=SYNTH_ENGINES, non_empty=True)
    speakers_per_voice: int = _help(
        "`synth`: derived (perturbed) speakers per engine voice, #0 unperturbed; "
        "0 = the preset's (tiny 2; demo 3 espeak-ng / 8 flite / 12 festival).", 0, range=NON_NEGATIVE)
    stream_near_miss_rate: float = _help(
        "`synth`: share of stream utterances that are curated near misses of the phrase; 0 = everyday speech "
        "only (FA/h as benchmarks measure it; near misses are judged on the test clips, hard_negative_far).",
        0.0, range=FRACTION)
    synth_seed: int = _help("Seed of the synthetic generator.", 0)
    wake_phrase: str = _help("Wake phrase spoken by the synthetic generator.", "hey nova")
    audio_format: str = _help(
        "Audio member format written by synth/build-shards: flac, wav or npy.", "wav", choices=("flac", "wav", "npy"))

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))


@dataclass
class FrontendConfig:
    n_mels: int = _help("Mel bands.", 40, range=AT_LEAST_ONE)
    win_ms: float = _help("STFT window in ms.", 25.0, range=POSITIVE)
    hop_ms: float = _help("STFT hop in ms.", 10.0, range=POSITIVE)
    cmvn: bool = _help("Global CMVN with statistics from the training shards, stored with the run.", False)


@dataclass
class AugmentConfig:
    noise_prob: float = _help("Probability of mixing a background clip into a training clip.", 0.8, range=FRACTION)
    snr_db_min: float = _help("Lowest noise SNR in dB.", 0.0)
    snr_db_max: float = _help("Highest noise SNR in dB.", 20.0)
    rir_prob: float = _help("Probability of convolving with a room impulse response.", 0.3, range=FRACTION)
    rir_dir: str = _help("Folder of real RIR audio files (.wav/.flac, any rate); wins over the dataset's "
                         "simulated `rir` split. Empty = that split (<data.root>/rir/), else generated "
                         "decaying-noise RIRs.", "")
    rir_max: int = _help(
        "Most RIRs taken from the `rir` split (each ~0.8 s = 12,800 floats on the device).", 512, range=AT_LEAST_ONE)
    channel_prob: float = _help("Probability of a telephone-like channel: band-pass (channel_low_hz - "
                                "channel_high_hz, edges jittered +-20 %) then maybe 8-bit mu-law.", 0.0, range=FRACTION)
    channel_low_hz: float = _help("Channel pass band low edge, Hz (300 = telephone).", 300.0, range=POSITIVE)
    channel_high_hz: float = _help("Channel pass band high edge, Hz (3400 = telephone; x1.2 must stay below "
                                   "Nyquist).", 3400.0, range=POSITIVE)
    channel_mulaw_prob: float = _help("Probability a channelled clip is also 8-bit mu-law coded (G.711, "
                                      "~38 dB SNR).", 0.5, range=FRACTION)
    speed_prob: float = _help("Probability a clip is played faster/slower (tempo, pitch and formants "
                              "together: one talker becomes another), before the room.", 0.0, range=FRACTION)
    speed_min: float = _help("Slowest speed factor (0.85 = 15 % slower, ~2.8 semitones down).", 0.85, range=POSITIVE)
    speed_max: float = _help("Fastest speed factor (1.15 = 15 % faster, ~2.4 semitones up).", 1.15, range=POSITIVE)
    gain_db: float = _help("Random gain drawn from +-gain_db dB.", 6.0)
    shift_ms: float = _help("Random time shift up to +-shift_ms ms.", 100.0)
    specaugment: bool = _help("SpecAugment on the student's log-mel (training only).", True)


@dataclass
class StudentConfig:
    name: str = _help("Student architecture: tiny_conv, mobilenetv3_small, bc_resnet.", "tiny_conv")
    width: float = _help("Width multiplier (bc_resnet: 1 ~ 10k params, 8 ~ 320k).", 1.0, range=POSITIVE)


@dataclass
class TeacherConfig:
    name_or_path: str = _help(
        "HF model id or local folder for AutoModelForAudioClassification.from_pretrained; empty = "
        "the teacher trained by `train-teacher` (runs/<experiment>/teacher/best/).", "")
    arch: str = _help(
        "Architecture for from-scratch teachers: wav2vec2, hubert, wavlm.",
        "wav2vec2", choices=("wav2vec2", "hubert", "wavlm"))
    hidden_size: int = _help("From-scratch teacher: transformer width.", 64)
    num_hidden_layers: int = _help("From-scratch teacher: transformer layers.", 2)
    num_attention_heads: int = _help("From-scratch teacher: attention heads.", 2)
    intermediate_size: int = _help("From-scratch teacher: feed-forward width.", 128)
    conv_dim: int = _help("From-scratch teacher: channels of each feature-encoder conv.", 32)
    feature_encoder: str = _help(
        "From-scratch teacher's conv feature encoder: wav2vec2 (HF's 7 convs, first kernel 10 samples, "
        "20 ms frames) | filterbank (one learned 25-ms filter bank at 10-ms hop, then a stride-2 conv: "
        "20 ms frames; learns far faster from scratch, see docs/results.md).",
        "wav2vec2", choices=("wav2vec2", "filterbank"))
    dtype: str = _help(
        "Frozen teacher precision while distilling: fp16, bf16 or fp32.", "bf16", choices=("fp16", "bf16", "fp32"))
    placement: str = _help(
        "auto | replicate | zero3 (DeepSpeed ZeRO-3 sharded, inference only).",
        "auto", choices=("auto", "replicate", "zero3"))
    memory_share: float = _help(
        "auto placement: replicate when teacher+activations fit this share of free device memory.",
        0.5, range=Range(0, 1, low_open=True))
    trust_remote_code: bool = _help("Allow teachers that need remote code. Off: such teachers are refused.", False)
    min_val_accuracy: float = _help(
        "Quality gate: refuse to distil from a teacher below this val accuracy.", 0.8, range=FRACTION)
    skip_quality_gate: bool = _help("Distil even if the teacher fails the quality gate.", False)
    train_lr: float = _help(
        "train-teacher: peak AdamW learning rate (train.lr is the students').", 1e-3, range=POSITIVE)
    train_epochs: int = _help(
        "train-teacher: epochs of train.batches_per_epoch steps (train.epochs is the students').",
        6, range=AT_LEAST_ONE)
    train_time_masking: bool = _help(
        "train-teacher: keep Wav2Vec2's SpecAugment-style time masking (the checkpoint's mask_time_*; HF's "
        "defaults mask two 10-frame spans, ~36 % of a 1-s clip's 49 frames, often the syllable that tells "
        "the phrase from a near miss). Off: no masking; dropout and layerdrop stay.", False)
    fast_forward: list[str] = _help(
        "Same-function teacher rewrites (models/fast_teacher.py) for a replicated teacher: "
        "fuse_feature_norm, channels_last_encoder, dense_pos_conv; [] = plain HF (weight norm is "
        "always folded). Their GPU gain is what launch/gpu_check.sh measures.", [], choices=TEACHER_REWRITES)
    compile: str = _help(
        "torch.compile the replicated teacher: none | default | max-autotune-no-cudagraphs | "
        "reduce-overhead.", "none", choices=("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead"))
    cuda_graphs: bool = _help("Replay the replicated teacher's forward as a CUDA graph per batch shape "
                              "(GPU only; ignored on CPU; exclusive with teacher.compile).", False)


@dataclass
class DistillConfig:
    alpha: float = _help("Weight of the KD term in [0, 1]; 0 = plain cross-entropy.", 0.7, range=FRACTION)
    temperature: float = _help("Softmax temperature T > 0 for the KD term.", 2.0, range=POSITIVE)
    mode: str = _help(
        "online: teacher runs every step; cached: logits from the annotate stage.",
        "online", choices=("online", "cached"))
    hard_negative_weight: float = _help(
        "Loss weight of hard-negative clips (applies to CE and KD).", 2.0, range=NON_NEGATIVE)
    overlap_teacher: bool = _help(
        "Online, replicated teacher: run it one batch ahead (a second CUDA stream on GPU) so the student "
        "step overlaps it; same results, one more batch in memory (distill/ahead.py).", False)


@dataclass
class TrainConfig:
    job: str = _help("baseline | distill | teacher.", "distill", choices=("baseline", "distill", "teacher"))
    seed: int = _help("Seed for weights, data order and augmentation.", 0)
    epochs: int = _help("Epochs; each is batches_per_epoch steps on every rank.", 4, range=AT_LEAST_ONE)
    batches_per_epoch: int = _help(
        "Batches per rank per epoch (equal on every rank: no DDP hang).", 50, range=AT_LEAST_ONE)
    lr: float = _help("Peak AdamW learning rate.", 3e-3, range=POSITIVE)
    weight_decay: float = _help("AdamW weight decay.", 1e-2)
    warmup_steps: int = _help("Linear warm-up steps before the cosine decay.", 20)
    grad_clip: float = _help("Gradient-norm clip; 0 disables.", 5.0)
    mixed_precision: str = _help("Accelerate mixed precision: no, fp16, bf16.", "no", choices=("no", "fp16", "bf16"))
    eval_every: int = _help("Validate every N optimizer steps (and at the end); 0 = end only.", 100)
    checkpoint_every: int = _help("Checkpoint every N steps; 0 = only at the end / on a stop signal.", 100)
    keep_checkpoints: int = _help("Newest complete checkpoints kept.", 2)
    resume: str = _help("never | auto (newest complete checkpoint) | a checkpoint folder.", "auto")
    max_bad_fraction: float = _help(
        "Stop when surely (97.5 % Wilson lower bound) more than this fraction of clips failed to decode.",
        0.05, range=FRACTION)
    max_nonfinite_steps: int = _help("Stop after this many NaN/inf steps in a row.", 5, range=AT_LEAST_ONE)
    max_steps: int = _help("Stop after this many steps (0 = epochs x batches_per_epoch); for tests.", 0)


@dataclass
class EvalConfig:
    target_fa_per_hour: float = _help(
        "False accepts per hour the threshold is chosen for (on val).", 2.0, range=POSITIVE)
    window_s: float = _help("Streaming detector window in s.", 1.0, range=POSITIVE)
    hop_s: float = _help("Streaming detector hop in s.", 0.1, range=POSITIVE)
    smoothing_frames: int = _help("Moving-average smoothing of detector scores, in hops.", 3)
    lockout_s: float = _help("No second activation within this many s.", 1.0)
    batch_size: int = _help("Clips per evaluation batch.", 128)
    test_root: str = _help(
        "Report test on another dataset (folder, URL or pipe: root holding test/ and stream/, e.g. your own "
        "recordings made into shards with build-shards); θ still comes from this run's own val. "
        "Empty = data.root (its test split and the second half of its streams).", "")
    test_sources: list[str] = _help(
        "Report test only on clips and streams whose json `source` is listed (e.g. the held-out engine of "
        "leave-one-engine-out); [] = all.", [])
    per_engine: bool = _help("Add the test metrics at the same θ per source (engine) to report.json.", True)


@dataclass
class ExportConfig:
    opset: int = _help("ONNX opset.", 18)
    int8: bool = _help("Also write an int8 (dynamic quantization) model.", True)
    jobs: list[str] = _help(
        "Whose first-seed student `pipeline` exports: distill (the detector it ships) and/or baseline; "
        "`wakeword-dist export` exports any run.", ["distill"], choices=("baseline", "distill"), non_empty=True)


@dataclass
class LoggingConfig:
    wandb: str = _help(
        "auto (offline without an API key) | online | offline | disabled.",
        "auto", choices=("auto", "online", "offline", "disabled"))
    project: str = _help("W&B project.", "wakeword-dist")
    log_every: int = _help("Log train metrics every N steps.", 10)
    progress: bool = _help("Progress bar on rank 0.", True)


@dataclass
class CompareConfig:
    seeds: list[int] = _help("Seeds run for each of baseline and distill.", [0, 1, 2], non_empty=True)
    launcher: str = _help(
        "sequential (in-process) | accelerate (one `accelerate launch` per run) | slurm (all runs as one "
        "job array of slurm/compare.sbatch, waited for with progress).",
        "sequential", choices=("sequential", "accelerate", "slurm"))
    num_processes: int = _help("Processes per run when launcher=accelerate.", 2, range=AT_LEAST_ONE)
    parallel_runs: int = _help(
        "Runs trained side by side on this machine (launcher sequential or accelerate), each its own "
        "process with cpus / parallel_runs threads, or its own GPUs; 1 = one after another.", 1, range=AT_LEAST_ONE)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)

    # ---- derived paths -------------------------------------------------------------
    def job_dir(self, job: str | None = None, seed: int | None = None) -> Path:
        job = job or self.train.job
        base = Path(self.run.runs_dir) / self.run.experiment
        if job == "teacher":
            return base / "teacher"
        return base / job / f"seed{self.train.seed if seed is None else seed}"

    def teacher_path(self) -> str:
        return self.teacher.name_or_path or str(Path(self.run.runs_dir) / self.run.experiment / "teacher" / "best")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- loading: YAML + overrides, each value checked by its field (config_fields) ----------

def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], [v.split(".")[-1] for v in valid], n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    if not close:
        full = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean '{full[0]}'?" if full else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _build(cls, values: dict, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _field_types(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(key, [f"{prefix}{n}" for n in fields])
        f = fields[name]
        if dataclasses.is_dataclass(f.default_factory() if f.default_factory is not dataclasses.MISSING else None):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}': expected a section (mapping), got {value!r}")
            kwargs[name] = _build(f.default_factory().__class__, value, f"{key}.")
        else:
            value = _coerce(key, value, hints[name])
            _check_metadata(key, value, f.metadata)
            kwargs[name] = value
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# `--config` left out: the README's demo, the very file (its light augmentation and 20 % labels
# are what learns on 2 CPU cores; the dataclass defaults are the settings for real data)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Load a YAML config (None = configs/demo.yaml, the default of every stage) and apply
    `key=value` overrides."""
    if path is None and not DEFAULT_CONFIG.is_file():
        raise ConfigError(f"no --config given and the default {DEFAULT_CONFIG} is missing "
                          "(an install without the repository's configs/); pass --config")
    path = Path(DEFAULT_CONFIG if path is None else path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    tree = _merge(tree, parse_overrides(list(overrides)))
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that one key alone cannot express."""
    if cfg.augment.snr_db_min > cfg.augment.snr_db_max:
        raise ConfigError("config key 'augment.snr_db_min' is larger than 'augment.snr_db_max'")
    a = cfg.augment  # channel edges are jittered x(1 +- 0.2) per clip (augment.WaveAugment)
    if a.channel_prob > 0 and a.channel_low_hz * 1.2 >= a.channel_high_hz * 0.8:
        raise ConfigError("config key 'augment.channel_low_hz': must stay below 'augment.channel_high_hz' "
                          "after +-20 % jitter (low*1.2 < high*0.8)")
    if a.channel_prob > 0 and a.channel_high_hz * 1.2 >= cfg.data.sample_rate / 2:
        raise ConfigError(f"config key 'augment.channel_high_hz': {a.channel_high_hz} x1.2 jitter reaches "
                          f"Nyquist ({cfg.data.sample_rate / 2:g} Hz)")
    if a.speed_min > a.speed_max:
        raise ConfigError("config key 'augment.speed_min' is larger than 'augment.speed_max'")
    if cfg.teacher.compile != "none" and cfg.teacher.cuda_graphs:
        raise ConfigError("config keys 'teacher.compile' and 'teacher.cuda_graphs' are exclusive "
                          "(teacher.compile=reduce-overhead gives compiled CUDA graphs)")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically (temp file, then rename)."""
    write_bytes_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode("utf-8"))


def describe() -> str:
    """Every key with its default and help text (for `wakeword-dist config --help`-style docs)."""
    lines = []
    for section in dataclasses.fields(Config):
        lines.append(f"{section.name}:")
        for f in dataclasses.fields(section.default_factory().__class__):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name}: {default!r}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


__all__ = ["Config", "ConfigError", "load_config", "save_config", "parse_overrides", "describe"]

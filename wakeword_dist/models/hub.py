"""Students in the Hugging Face layout: ``config.json`` + ``model.safetensors`` + ``README.md``.

    save_pretrained(student, architecture, out_dir, card=StudentCard(job="distill", ...))
    student = from_pretrained(out_dir)            # or a Hub repo id "org/name"
    logits = student(audio)                       # (B, S) float32 raw audio -> (B, C) logits

It follows huggingface_hub's ``ModelHubMixin`` conventions (``HubStudent`` is the mixin class), so
the folder is what ``push_to_hub`` uploads and what the Hub shows. What each file holds:

- ``config.json``: everything to rebuild the module (``arch_args``: the exact ``build_student``
  arguments), the recipe's ``architecture`` record, the label map (``label_names``, ``id2label``,
  ``label2id``), the front end's settings read from the module, and the card's training record and
  metrics, so a program can read them without parsing the card.
- ``model.safetensors``: the student's state dict, front-end window and CMVN buffers included.

The recipe's best-model store (``train/best_store.py``) writes each run's ``best/`` this way.
- ``README.md``: the model card: metrics, label map, front end, how it was trained.

A local folder never touches the network. Errors about a folder are one line naming the file.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, snapshot_download

from wakeword_dist.atomic import replace_dir, to_jsonable

from .registry import Student, build_student, count_parameters

FORMAT = "wakeword-dist/student"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"      # huggingface_hub.constants.CONFIG_NAME
WEIGHTS_FILE = "model.safetensors"  # huggingface_hub.constants.SAFETENSORS_SINGLE_FILE
CARD_FILE = "README.md"
JOBS = ("baseline", "distill")


@dataclass(frozen=True)
class StudentCard:
    """How a student was trained and how well it did: the model card's content beyond the model.

    ``metrics``: flat name -> number (or short string), e.g. the best-model store's val summary
    ``{"f1_macro": 0.91, "frr_at_target": 0.04, "fa_per_hour": 1.8}``; NaN/inf are shown as n/a.
    ``teacher``: for distill, ``TeacherModel.fingerprint()`` (``name_or_path`` and ``weights_sha256``
    are shown) or at least ``{"name_or_path": ...}``.
    """

    job: str                           # "baseline" (CE only) | "distill" (CE + KD from a teacher)
    steps: int                         # optimizer steps trained
    seed: int                          # train.seed
    metrics: dict = field(default_factory=dict)
    teacher: dict | None = None        # distill only: {"name_or_path", "weights_sha256", ...}
    alpha: float | None = None         # distill.alpha: weight of the KD term (1 - alpha on CE)
    temperature: float | None = None   # distill.temperature: softmax temperature of the KD term
    dataset: str = ""                  # where the training data came from (free text, e.g. data.root)
    notes: str = ""                    # free text, shown under the title

    def __post_init__(self):
        if self.job not in JOBS:
            raise ValueError(f"StudentCard.job must be one of {JOBS}, got {self.job!r}")
        if self.job == "distill":
            if not self.teacher or not self.teacher.get("name_or_path"):
                raise ValueError("StudentCard: a distill card needs teacher={'name_or_path': ..., "
                                 "'weights_sha256': ...} (TeacherModel.fingerprint())")
            if self.alpha is None or self.temperature is None:
                raise ValueError("StudentCard: a distill card needs alpha and temperature")
        elif self.teacher is not None:
            raise ValueError("StudentCard: a baseline student has no teacher")
        for name, value in self.metrics.items():
            if not isinstance(value, (int, float, str)) and value is not None:
                raise ValueError(f"StudentCard.metrics[{name!r}] must be a number or a string, "
                                 f"got {type(value).__name__}")

    def training(self) -> dict:
        """The training record as stored in config.json (no metrics, no free text)."""
        record = {"job": self.job, "steps": self.steps, "seed": self.seed, "dataset": self.dataset}
        if self.job == "distill":
            record.update(alpha=self.alpha, temperature=self.temperature,
                          teacher={k: self.teacher.get(k) for k in ("name_or_path", "weights_sha256")})
        else:
            record.update(alpha=0.0, temperature=None, teacher=None)
        return record


def frontend_settings(student: Student) -> dict:
    """The log-mel front end as it runs, read from the module (not from the arguments that built it)."""
    fe = student.frontend
    mel = fe.mel  # torchaudio MelSpectrogram
    sr = fe.sample_rate
    return {
        "sample_rate": sr,                                # Hz of the raw input audio
        "n_mels": fe.n_mels,
        "win_length": mel.win_length,                     # samples
        "hop_length": mel.hop_length,                     # samples
        "win_ms": 1000.0 * mel.win_length / sr,
        "hop_ms": 1000.0 * mel.hop_length / sr,
        "n_fft": mel.n_fft,
        "window": "hann",                                 # torchaudio MelSpectrogram default, as LogMel builds it
        "f_min": float(mel.mel_scale.f_min),              # Hz
        "f_max": float(mel.mel_scale.f_max),              # Hz (None at build time = sample_rate / 2)
        "mel_scale": mel.mel_scale.mel_scale,
        "power": mel.power,
        "center": mel.spectrogram.center,
        "top_db": fe.top_db,                              # dB kept below each clip's peak; None = no floor
        "cmvn": not (bool((fe.cmvn_mean == 0).all()) and bool((fe.cmvn_std == 1).all())),
    }


class HubStudent(ModelHubMixin, library_name="wakeword-dist", pipeline_tag="audio-classification",
                 tags=["wake-word", "keyword-spotting", "audio-classification"]):
    """The ``ModelHubMixin`` side of a student: ``save_pretrained`` writes the three files,
    ``from_pretrained`` reads them back. ``module``: the ``Student``; ``config``: config.json's dict.
    Use the module-level ``save_pretrained`` / ``from_pretrained``, which check their inputs."""

    def __init__(self, module: Student, config: dict):
        self.module = module
        self.config = config

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        # contiguous CPU copies, as the best-model store writes them (safetensors refuses views)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(Path(save_directory) / WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         config: dict | None = None, **kwargs) -> "HubStudent":
        folder = Path(model_id)  # from_pretrained below resolves Hub ids to a local snapshot first
        config = _check_config(config if config is not None else _read_json(folder / CONFIG_FILE),
                               folder / CONFIG_FILE)
        return cls(_load_student(folder, config), config)

    def generate_model_card(self, card: StudentCard | None = None, **kwargs) -> ModelCard:
        data = ModelCardData(**self._hub_mixin_info.model_card_data.to_dict())
        data.tags = sorted({*(data.tags or []), self.config["student"], *([card.job] if card else [])})
        return ModelCard(f"---\n{data.to_yaml()}\n---\n{_card_body(self.config, card)}")


# ----------------------------------------------------------------------------- save
def save_pretrained(model: Student, architecture: dict, out_dir: str | Path, *, card: StudentCard) -> Path:
    """Write ``model`` (a registry ``Student``, unwrapped from DDP) to ``out_dir`` in the HF layout.

    ``architecture``: the recipe's record (``{"model", "width", "num_classes", "label_names",
    "n_mels"}``), checked against the module's own ``arch_args``. The files go to a temp folder
    that then replaces ``out_dir`` whole: a reader never sees weights without their config.
    """
    config = student_config(model, architecture, card)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    HubStudent(model, config).save_pretrained(tmp, config=config, model_card_kwargs={"card": card})
    replace_dir(tmp, out_dir)
    return out_dir


def student_config(model: Student, architecture: dict, card: StudentCard) -> dict:
    """config.json's content for ``model``; raises if ``architecture`` describes another model."""
    arch_args = getattr(model, "arch_args", None)
    if not isinstance(model, Student) or not arch_args:
        raise ValueError(f"save_pretrained saves registry students (build_student); got {type(model).__name__} "
                         "without arch_args (a teacher is saved with its own HF save_pretrained)")
    labels = list(architecture.get("label_names") or [])
    checks = {"model": arch_args["name"], "num_classes": arch_args["num_classes"],
              "width": arch_args.get("width"), "n_mels": arch_args.get("n_mels")}
    for key, actual in checks.items():
        if key in architecture and architecture[key] != actual:
            raise ValueError(f"architecture[{key!r}]={architecture[key]!r} but the model was built with {actual!r}")
    if len(labels) != arch_args["num_classes"]:
        raise ValueError(f"architecture['label_names'] has {len(labels)} names for {arch_args['num_classes']} classes")
    return to_jsonable({  # NaN/inf -> null: strict JSON
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "student": arch_args["name"],
        "arch_args": dict(arch_args),
        "architecture": dict(architecture),
        "num_classes": arch_args["num_classes"],
        "num_parameters": count_parameters(model),
        "label_names": labels,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "input": {"audio": "(B, S) float32 raw mono audio", "sample_rate": arch_args["sample_rate"]},
        "output": {"logits": f"(B, {arch_args['num_classes']}) float32, softmax over label_names"},
        "frontend": frontend_settings(model),
        "training": card.training(),
        "metrics": dict(card.metrics),
    })


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _card_body(config: dict, card: StudentCard | None) -> str:
    fe, arch = config["frontend"], config["arch_args"]
    lines = [f"# {config['student']} wake-word student" + (f" ({card.job})" if card else ""), ""]
    if card and card.notes:
        lines += [card.notes, ""]
    lines += [
        f"A {config['num_parameters']:,}-parameter `{config['student']}` (width {arch.get('width')}) trained "
        f"with wakeword-dist: raw {fe['sample_rate']} Hz mono audio (B, S) float32 in, "
        f"(B, {config['num_classes']}) logits out; the log-mel front end is part of the model.", "",
        "## Labels", "", "| index | label |", "|---|---|",
        *(f"| {i} | {name} |" for i, name in enumerate(config["label_names"])), "",
        "## Front end", "", "| setting | value |", "|---|---|",
        f"| sample rate | {fe['sample_rate']} Hz |",
        f"| mel bins (n_mels) | {fe['n_mels']} |",
        f"| window | {fe['win_ms']:g} ms ({fe['win_length']} samples, {fe['window']}) |",
        f"| hop | {fe['hop_ms']:g} ms ({fe['hop_length']} samples) |",
        f"| FFT size (n_fft) | {fe['n_fft']} |",
        f"| mel range | {fe['f_min']:g} - {fe['f_max']:g} Hz ({fe['mel_scale']}) |",
        f"| dynamic range below each clip's peak (top_db) | {_fmt(fe['top_db'])} dB |",
        f"| global CMVN | {'fitted, stored in the weights' if fe['cmvn'] else 'none'} |", "",
    ]
    if card is not None:
        t = config["training"]
        teacher = t["teacher"]
        lines += ["## Training", "", "| setting | value |", "|---|---|",
                  f"| job | {t['job']} ({'CE + KD from the teacher' if t['job'] == 'distill' else 'CE only'}) |",
                  f"| steps | {t['steps']} |", f"| seed | {t['seed']} |"]
        if teacher:
            lines += [f"| teacher | `{teacher['name_or_path']}` |",
                      f"| teacher weights sha256 | `{_fmt(teacher['weights_sha256'])}` |",
                      f"| alpha (KD weight) | {_fmt(t['alpha'])} |", f"| temperature | {_fmt(t['temperature'])} |"]
        if t["dataset"]:
            lines.append(f"| data | {t['dataset']} |")
        lines += ["", "## Metrics", ""]
        if config["metrics"]:
            lines += ["| metric | value |", "|---|---|",
                      *(f"| {k} | {_fmt(v)} |" for k, v in sorted(config["metrics"].items()))]
        else:
            lines.append("None recorded.")
        lines.append("")
    lines += ["## Use", "", "```python", "from wakeword_dist.models.hub import from_pretrained", "",
              "model = from_pretrained(\"path/to/this/folder\")  # or the Hub repo id",
              f"logits = model(audio)  # audio (B, S) float32 at {fe['sample_rate']} Hz -> "
              f"(B, {config['num_classes']}) logits", "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- load
def from_pretrained(dir_or_name: str | Path, *, device: str | torch.device = "cpu", revision: str | None = None,
                    local_files_only: bool = False) -> Student:
    """The student saved in ``dir_or_name`` (a local folder, read offline) or a Hub repo id, in eval mode."""
    folder = _resolve(dir_or_name, revision=revision, local_files_only=local_files_only)
    config = read_config(folder)  # checked here so a bad config.json is a one-line error naming it
    hub = HubStudent.from_pretrained(str(folder), local_files_only=True, config=config)
    return hub.module.to(device).eval()


def read_config(dir_or_name: str | Path) -> dict:
    """config.json of a saved student (local folder), checked: label map, front end, training, metrics."""
    path = Path(dir_or_name) / CONFIG_FILE
    return _check_config(_read_json(path), path)


def _resolve(dir_or_name: str | Path, *, revision: str | None, local_files_only: bool) -> Path:
    """A local folder as it is; anything that is not a path on disk but could be a Hub repo id
    ("name" or "org/name") is downloaded (or taken from the HF cache with local_files_only)."""
    text = str(dir_or_name)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{path}: a file, not a saved student folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
        return path
    if isinstance(dir_or_name, Path) or path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"{path}: no such folder (a saved student: {CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        return Path(snapshot_download(repo_id=text, revision=revision, local_files_only=local_files_only,
                                      allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE]))
    except Exception as exc:  # HF errors are multi-line: one line naming what was asked for
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FileNotFoundError(f"{text}: not a local folder, and the Hub gave {type(exc).__name__}: {first}") from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a saved student has {CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_config(config: dict, path: Path) -> dict:
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a wakeword-dist student config (format={config.get('format')!r}, "
                         f"expected {FORMAT!r})")
    if not isinstance(config.get("format_version"), int) or config["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version={config.get('format_version')!r}; this wakeword-dist reads "
                         f"up to {FORMAT_VERSION}")
    missing = [k for k in ("arch_args", "label_names", "frontend", "training", "metrics") if k not in config]
    args = config.get("arch_args")
    if not missing and not (isinstance(args, dict) and "name" in args and "num_classes" in args):
        missing = ["arch_args.name/num_classes"]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    if len(config["label_names"]) != args["num_classes"]:
        raise ValueError(f"{path}: {len(config['label_names'])} label_names for num_classes={args['num_classes']}")
    return config


def _load_student(folder: Path, config: dict) -> Student:
    from safetensors.torch import load_file

    args = dict(config["arch_args"])
    try:
        model = build_student(args.pop("name"), args.pop("num_classes"), **args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{folder / CONFIG_FILE}: arch_args do not build a student ({exc})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing (the student's weights)")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError on a damaged header
        raise ValueError(f"{weights}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        parts = [f"{what} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                 for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
                 if keys]
        raise ValueError(f"{weights}: does not fit the {config['student']} of {folder / CONFIG_FILE}: "
                         f"tensors {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


__all__ = ["StudentCard", "HubStudent", "save_pretrained", "from_pretrained", "read_config", "student_config",
           "frontend_settings", "FORMAT", "FORMAT_VERSION"]

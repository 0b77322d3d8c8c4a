"""The best model of a run, on disk: which validation result wins, and `best/` written and read back.

Students: the Hugging Face layout of `models.hub` (``config.json`` + ``model.safetensors`` +
``README.md``, a model card with the winning val figures, label map, front end and how the
student was trained), so ``models.hub.from_pretrained("runs/<exp>/<job>/seed<k>/best")`` loads it
and the folder is what ``push_to_hub`` uploads. The teacher: a HF folder that
`models.teacher.load_teacher` reads by path. Both are written to a temp folder that replaces
`best/` whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from wakeword_dist.atomic import replace_dir, write_json_atomic
from wakeword_dist.config import Config
from wakeword_dist.models import hub
from wakeword_dist.models.registry import Student, build_student
from wakeword_dist.train.run_logger import file_sha256

LEGACY_META = "model.json"  # best/ before the HF layout: model.safetensors + model.json


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


def dataset_record(cfg: Config, train_dir) -> str:
    """The card's ``dataset`` line: ``data.root``, and the train split trained on with the sha256
    of its ``index.json`` when that is a local file (for ``<root>/train`` the digest W&B's dataset
    artifact records; cached distillation trains on the annotated copy, named here)."""
    index = Path(train_dir) / "index.json" if isinstance(train_dir, Path) else None
    if index is None or not index.is_file():  # remote data or shard specs: named, not hashed
        return str(cfg.data.root)
    return f"{cfg.data.root} (train split {train_dir}, index.json sha256 {file_sha256(index)})"


KD_TARGETS = {"online": "the teacher run on each training batch", "cached": "teacher logits cached by `annotate`"}


def student_card(cfg: Config, val: dict, *, teacher: dict | None = None, dataset: str = "") -> hub.StudentCard:
    """The model card of the best student: ``val`` is the winning candidate (``{"step", **val
    summary}``): ``step`` becomes the card's steps, the rest its metrics. ``teacher``: for
    distill, ``TeacherModel.fingerprint()`` (online) or the cached logits' fingerprint; without
    one the card names ``teacher_path()`` only."""
    job, step = cfg.train.job, int(val["step"])
    notes = (f"The checkpoint of step {step}, the best on the validation split (lowest FRR with at most "
             f"{cfg.eval.target_fa_per_hour:g} false accepts per hour); the metrics are validation figures.")
    common = dict(job=job, steps=step, seed=cfg.train.seed, dataset=dataset or str(cfg.data.root),
                  metrics={k: v for k, v in val.items() if k != "step"})
    if job != "distill":
        return hub.StudentCard(**common, notes=notes)
    return hub.StudentCard(**common, teacher=dict(teacher or {"name_or_path": cfg.teacher_path()}),
                           alpha=cfg.distill.alpha, temperature=cfg.distill.temperature,
                           notes=f"{notes} KD targets: {KD_TARGETS.get(cfg.distill.mode, cfg.distill.mode)}.")


def save_best(acc, model, best_dir: Path, architecture: dict, label_names: list[str], val: dict,
              cfg: Config, *, teacher: dict | None = None, dataset: str = "") -> None:
    """Rank 0: students -> `models.hub.save_pretrained` (card from ``student_card``); teacher -> a
    HF folder. ``val``: ``{"step", **val summary}`` of the winning validation."""
    unwrapped = acc.unwrap_model(model)
    if hasattr(unwrapped, "fingerprint"):  # the teacher job
        save_teacher_dir(unwrapped.model, best_dir, cfg.data.sample_rate,
                         quality={"val": val, "label_names": label_names})
        return
    # hub.save_pretrained writes to a temp folder that replaces best/ whole: never weights
    # without their config.json and card, or those of another save.
    card = student_card(cfg, val, teacher=teacher, dataset=dataset)
    hub.save_pretrained(unwrapped, {**architecture, "label_names": list(label_names)}, best_dir, card=card)


def load_best_student(best_dir: Path, device="cpu") -> tuple[Student, dict]:
    """The student in `best/` (safetensors + JSON, no pickle) and its ``config.json`` (models.hub):
    ``label_names``, ``architecture``, ``training`` (``steps``: the best step, job, seed, teacher)
    and ``metrics`` (the winning val figures)."""
    best_dir = Path(best_dir)
    if not (best_dir / hub.CONFIG_FILE).is_file() and (best_dir / LEGACY_META).is_file():
        return _load_legacy(best_dir, device)
    return hub.from_pretrained(best_dir, device=device), hub.read_config(best_dir)


def _load_legacy(best_dir: Path, device) -> tuple[Student, dict]:
    """A `best/` written before the HF layout (runs trained by an older wakeword-dist), its
    ``model.json`` read into config.json's keys."""
    from safetensors.torch import load_file

    meta = json.loads((best_dir / LEGACY_META).read_text())
    args = dict(meta["arch_args"])
    model = build_student(args.pop("name"), args.pop("num_classes"), **args)
    model.load_state_dict(load_file(str(best_dir / hub.WEIGHTS_FILE), device="cpu"))
    metrics = dict(meta["val"])
    config = {"arch_args": meta["arch_args"], "architecture": meta["architecture"],
              "label_names": meta["label_names"], "training": {"steps": metrics.pop("step", None)},
              "metrics": metrics}
    return model.to(device).eval(), config

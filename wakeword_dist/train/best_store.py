"""The best model of a run, on disk: which validation result wins, and `best/` written and read back.

Students: ``model.safetensors`` + ``model.json`` (architecture args to rebuild the module, label
map, the winning val figures). The teacher: a HF folder that `models.teacher.load_teacher` reads
by path. Both are written to a temp folder that replaces `best/` whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from wakeword_dist.atomic import replace_dir, write_json_atomic
from wakeword_dist.config import Config
from wakeword_dist.models.registry import build_student


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


def save_best(acc, model, best_dir: Path, architecture: dict, label_names: list[str], val: dict,
              cfg: Config) -> None:
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

"""The model a job trains: the teacher (fine-tuned or from scratch) or a student, and the
student front end's global CMVN.

Maps the typed config onto `models/`, which never sees a config object or an Accelerator.
"""

from __future__ import annotations

from itertools import islice

import torch

from wakeword_dist import collectives
from wakeword_dist.config import Config
from wakeword_dist.models.registry import build_student
from wakeword_dist.train.data_setup import DataSplits, eval_loader
from wakeword_dist.train.teacher_setup import quiet_transformers, teacher_conv_stack


def trainable_model(cfg: Config, job: str, label_names: list[str]) -> tuple[torch.nn.Module, dict]:
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
        # HF's time masking is sized for 10-s utterances; on a 1-s clip it hides ~36 % of the frames
        # and with them, often, the one syllable that separates "hey nova" from "pay nova".
        model.model.config.apply_spec_augment = t.train_time_masking
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


def fit_cmvn(model, data: DataSplits, cfg: Config, acc) -> None:
    """Global CMVN from a few training batches of rank 0, broadcast so all ranks agree."""
    from wakeword_dist.models.frontend import compute_cmvn

    batches = eval_loader(cfg, data, data.train_dir, batch_size=cfg.data.batch_size, rank=0, world_size=1,
                          sources=data.sources)
    mean, std = compute_cmvn(model.frontend, (b["audio"].to(acc.device) for b in islice(batches, 20)))
    mean, std = collectives.broadcast_object((mean.cpu(), std.cpu()))
    model.frontend.set_cmvn(mean.to(acc.device), std.to(acc.device))

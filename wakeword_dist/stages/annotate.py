"""`wakeword-dist annotate`: the frozen teacher's logits written beside every training sample.

Runs on all ranks (`accelerate launch -m wakeword_dist.cli annotate ...`), each shard on
exactly one rank; the output split (runs/<experiment>/annotated/train) carries the teacher's
fingerprint, and `distill.mode=cached` refuses logits from any other teacher. Unlabelled audio
(label -1) is annotated like any other clip: that is the point of distilling on large pools.
"""

from __future__ import annotations

from accelerate import Accelerator

from wakeword_dist.config import Config
from wakeword_dist.distill.annotate import annotate_split
from wakeword_dist.train import data_setup, teacher_setup


def annotate(cfg: Config) -> dict:
    acc = Accelerator()
    data = data_setup.open_data(cfg, job="baseline")
    teacher, teacher_fn, decision = teacher_setup.frozen_teacher(cfg, acc, data.label_names)
    try:
        out_dir = data_setup.cached_train_dir(cfg)
        summary = annotate_split(teacher_fn, teacher.fingerprint(), in_split_dir=data.train_dir,
                                 out_split_dir=out_dir, rank=acc.process_index, world_size=acc.num_processes,
                                 batch_size=cfg.eval.batch_size, device=acc.device, barrier=acc.wait_for_everyone)
    finally:
        teacher_setup.release_teacher(decision)
    acc.print(f"[annotate] {data.train_dir} -> {out_dir} with teacher {cfg.teacher_path()} "
              f"(placement {decision.get('placement')})")
    return summary

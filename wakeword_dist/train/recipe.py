"""The one training recipe: teacher fine-tune, baseline student, distilled student.

Reads top to bottom: `setup()` builds everything, `train()` runs the loop, `cleanup()` closes
loggers. The same code runs as `python launch/train.py` (one process, debug), as
`accelerate launch launch/train.py` (DDP over GPUs/nodes, or gloo CPU ranks) and from
`wakeword-dist train`. Accelerate is the distributed API used here; sums of a few numbers over
the ranks go through `collectives` (the torch.distributed call Accelerate's reduce makes, shared
with the teacher placement), and the ZeRO-3 teacher placement through `distill.placement`. The
training step itself is `train/step.py: train_step`, which the benchmark (`bench/`) times as it is.
What `setup()` builds comes from `train/`: `data_setup` (splits, loaders, augmenter),
`model_setup` (the trained model), `teacher_setup` (the frozen teacher and its gate), `best_store`
(the best model on disk) and `progress` (rank 0's progress bar).

Job differences, and nothing else:
- teacher:  the HF teacher is the trainable model; CE on every label.
- baseline: the student is trained with CE only (alpha = 0) on the labels it is allowed to see.
- distill:  the same student, same seed and same batches, plus the teacher's KD term.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from wakeword_dist import collectives
from wakeword_dist.config import Config, save_config
from wakeword_dist.data.sources import bad_fraction_lower_bound
from wakeword_dist.distill.ahead import TeacherAhead
from wakeword_dist.distill.loss import KDLoss
from wakeword_dist.train import best_store, data_setup, model_setup, progress, teacher_setup
from wakeword_dist.train import checkpoint as ckpt
from wakeword_dist.train.run_logger import RunLogger
from wakeword_dist.train.step import StepParts, label_keep_mask, train_step
from wakeword_dist.eval.report import to_jsonable
from wakeword_dist.errors import EXIT_REQUEUE, TrainingFailed, TrainingStopped
from wakeword_dist.train.signals import StopFlag
from wakeword_dist.train.validate import validate

__all__ = ["Recipe", "run", "label_keep_mask", "EXIT_REQUEUE", "TrainingFailed", "TrainingStopped"]


def with_next(items):
    """``(item, next item or None)`` pairs: the step's batch and the one the teacher runs ahead on."""
    iterator = iter(items)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following
        current = following


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


class Recipe:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.job = cfg.train.job
        self.run_dir = cfg.job_dir()
        self.teacher = None          # frozen teacher module (online distill), for tests and hooks
        self.teacher_fn = None       # callable (B, S) -> (B, C) float32 logits
        self.ahead: TeacherAhead | None = None  # distill.overlap_teacher: the teacher one batch ahead
        self.placement: dict = {}
        self.teacher_quality: dict | None = None  # the quality gate's figures (online distill)
        self.teacher_fingerprint: dict | None = None  # distill: the teacher's identity, for best/'s card
        self.dataset_record = ""     # the card's data line: data.root, train index.json sha256
        self.nonfinite_in_row = 0     # consecutive skipped steps; restored on resume

    # ------------------------------------------------------------------ setup
    def setup(self) -> "Recipe":
        cfg = self.cfg
        # From the first moment: a preemption notice during a long setup (teacher load, quality
        # gate) must end in exit 75 like one during training, not in the signal's default action.
        self.stop = StopFlag().install()
        self.accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision)
        acc = self.accelerator
        launched = int(os.environ.get("WORLD_SIZE", acc.num_processes))
        if launched != acc.num_processes:  # e.g. cpu_ddp.yaml without ACCELERATE_USE_CPU=1
            raise RuntimeError(
                f"the launcher started WORLD_SIZE={launched} processes but Accelerate sees {acc.num_processes}: "
                "each would train alone. On CPU set ACCELERATE_USE_CPU=1 (see docs/distributed.md)")
        set_seed(cfg.train.seed)
        self.data = data_setup.open_data(cfg, job=self.job)
        self.label_names = self.data.label_names
        self.dataset_record = best_store.dataset_record(cfg, self.data.train_dir)

        self.model, self.architecture = model_setup.trainable_model(cfg, self.job, self.label_names)
        self.model.to(acc.device)
        if cfg.frontend.cmvn and self.job != "teacher":
            model_setup.fit_cmvn(self.model, self.data, cfg, acc)

        if self.job == "distill":
            # Forked RNG: loading and gating the teacher must not shift the random stream
            # (dropout, SpecAugment) that the baseline twin, which has no teacher, also sees.
            with torch.random.fork_rng(devices=[]):
                if cfg.distill.mode == "online":
                    self.teacher, self.teacher_fn, self.placement = teacher_setup.frozen_teacher(
                        cfg, acc, self.label_names)
                    self.teacher_fingerprint = self.teacher.fingerprint()  # hashed when loaded (frozen)
                    self.teacher_quality = teacher_setup.teacher_quality_gate(cfg, acc, self.teacher_fn, self.data)
                    if cfg.distill.overlap_teacher and self.placement.get("placement") == "replicate":
                        self.ahead = TeacherAhead(self.teacher_fn, acc.device)
                    self.placement["overlap_teacher"] = self.ahead is not None
                else:
                    self.placement = {"placement": "cached", "reason": "distill.mode=cached"}
                    teacher_setup.check_cached_logits(cfg, self.data)
                    self.teacher_fingerprint = self.data.train_index["teacher"]  # checked: the configured teacher's

        alpha = cfg.distill.alpha if self.job == "distill" else 0.0
        hn_weight = cfg.distill.hard_negative_weight if self.job != "teacher" else 1.0
        self.loss_fn = KDLoss(alpha=alpha, temperature=cfg.distill.temperature, hard_negative_weight=hn_weight)
        self.augment = data_setup.augmenter(cfg, self.data, acc.device)

        # The teacher has its own schedule: it usually needs more steps and a lower peak LR.
        epochs, lr = (cfg.teacher.train_epochs, cfg.teacher.train_lr) if self.job == "teacher" \
            else (cfg.train.epochs, cfg.train.lr)
        self.total_steps = epochs * cfg.train.batches_per_epoch
        if cfg.train.max_steps:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(cfg.train.warmup_steps, epochs * cfg.train.batches_per_epoch))
        # The scheduler stays out of prepare(): Accelerate would step it once per process per
        # step, compressing warm-up and decay by the world size. It is checkpointed explicitly.
        self.model, self.optimizer = acc.prepare(self.model, optimizer)
        self.scheduler = scheduler
        acc.register_for_checkpointing(self.scheduler)

        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: dict | None = None
        resume_from = self._resume_point()
        if resume_from is not None:
            self._load(resume_from)
        if acc.is_main_process:
            save_config(cfg, self.run_dir / "config.yaml")
        self.logger = RunLogger(
            self.run_dir, is_main=acc.is_main_process, wandb_mode=cfg.logging.wandb,
            project=cfg.logging.project, group=cfg.run.experiment, job_type=self.job,
            name=f"{self.job}-seed{cfg.train.seed}" if self.job != "teacher" else "teacher",
            config=cfg.to_dict(), resume_step=self.step if resume_from is not None else None)
        self._banner()
        return self

    def _resume_point(self) -> Path | None:
        mode = self.cfg.train.resume
        if mode == "never":
            return None
        if mode == "auto":
            return ckpt.latest_checkpoint(self.run_dir / "checkpoints")
        path = Path(mode)
        if not (path / ckpt.TRAIN_STATE).is_file():
            raise FileNotFoundError(f"train.resume={mode}: not a complete checkpoint (no {ckpt.TRAIN_STATE})")
        return path

    def _load(self, path: Path) -> None:
        state = ckpt.read_train_state(path)
        ckpt.check_resume_compatible(state, self.architecture, path)
        self.accelerator.load_state(str(path))
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best = state.get("best")
        self.nonfinite_in_row = state.get("nonfinite_in_row", 0)
        self.accelerator.print(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    def _banner(self) -> None:
        acc, cfg = self.accelerator, self.cfg
        n_params = sum(p.numel() for p in acc.unwrap_model(self.model).parameters())
        teacher = ""
        if self.job == "distill":
            teacher = (f" | teacher {cfg.teacher_path()} dtype={cfg.teacher.dtype} "
                       f"placement={self.placement.get('placement')} ({self.placement.get('reason', '')})")
        acc.print(
            f"[wakeword-dist] job={self.job} seed={cfg.train.seed} world_size={acc.num_processes} "
            f"global_batch={cfg.data.batch_size * acc.num_processes} precision={cfg.train.mixed_precision} "
            f"model={self.architecture['model']} params={n_params:,} steps={self.total_steps}{teacher}")

    # ------------------------------------------------------------------ train
    def train(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        stop = self.stop
        if stop.agreed(acc):  # signalled during setup: no step taken, the last checkpoint stands
            raise TrainingStopped(f"stop signal received during setup; nothing to save, resume from step {self.step}")
        bar = progress.progress_bar(acc, cfg, self.total_steps, self.step)
        self.keys_digest = hashlib.sha1()  # which clips this rank trained on (since start/resume)
        read = skipped = 0  # clips the reader decoded or tried to, and the bad ones among them
        window_t0, window_clips = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                batches = self.train_loader_for_epoch(self.epoch, skip_batches=self.batch_in_epoch)
                for batch, next_batch in with_next(batches) if self.ahead else ((b, None) for b in batches):
                    metrics = self._train_step(batch, next_batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    bar.update(1)
                    self.keys_digest.update("\n".join(batch["key"]).encode())
                    skipped += int(batch.get("skipped", 0))
                    read += int(batch.get("read", len(batch["key"])))
                    window_clips += len(batch["key"])
                    if self.step % cfg.logging.log_every == 0 or self.step == self.total_steps:
                        read_all, skipped_all, clips_all = collectives.sum_over_ranks(
                            [read, skipped, window_clips], acc.device)
                        bad_fraction = skipped_all / max(read_all, 1)
                        elapsed = time.perf_counter() - window_t0
                        metrics.update({"data/skipped": skipped_all, "data/bad_fraction": bad_fraction,
                                        "train/clips_per_s": clips_all / max(elapsed, 1e-9),
                                        "train/lr": self.scheduler.get_last_lr()[0], "train/epoch": self.epoch})
                        self.logger.log(metrics, self.step)
                        bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
                        window_t0, window_clips = time.perf_counter(), 0
                        if bad_fraction_lower_bound(skipped_all, read_all) > cfg.train.max_bad_fraction:
                            raise TrainingFailed(
                                f"{skipped_all:.0f} of {read_all:.0f} clips read failed to decode "
                                f"({bad_fraction:.1%}, surely more than train.max_bad_fraction="
                                f"{cfg.train.max_bad_fraction}); see the log for shards and keys")
                    if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < self.total_steps:
                        self._validate_and_select()
                    if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                        self._save()
                    if stop.stopping:  # settled in this step's all-reduce
                        self._save()
                        raise TrainingStopped(f"stop signal received; checkpoint at step {self.step} written")
                    if self.step >= self.total_steps:
                        break
                else:  # epoch done (a stop at max_steps leaves the position to _save)
                    self.epoch += 1
                    self.batch_in_epoch = 0
            final = self._validate_and_select()
            self._save()
            self._finish(final)
            return {"step": self.step, "val": final, "best": self.best, "run_dir": str(self.run_dir)}
        finally:
            bar.close()

    def train_loader_for_epoch(self, epoch: int, skip_batches: int = 0):
        """This rank's batches of `epoch`, the first `skip_batches` left out (resume).

        Batches are fetched under a forked RNG: torch's DataLoader draws a base seed from the
        global generator on its first `next()`, which would shift dropout/SpecAugment
        randomness between a resumed run and an uninterrupted one."""
        cached = self.job == "distill" and self.cfg.distill.mode == "cached"
        loader = data_setup.train_loader(self.cfg, self.data, self.accelerator, epoch=epoch,
                                         skip_batches=skip_batches, with_teacher_logits=cached)
        iterator = iter(loader)
        while True:
            with torch.random.fork_rng(devices=[]):
                batch = next(iterator, None)
            if batch is None:
                return
            yield batch

    def step_parts(self) -> StepParts:
        """What `train_step` (train/step.py, also timed by the benchmark) works with, read from
        the recipe's current attributes: tests and fault injectors swap teacher_fn / loss_fn."""
        cfg = self.cfg
        kd = None
        if self.job == "distill":
            kd = "cached" if cfg.distill.mode == "cached" else "online"
        return StepParts(
            accelerator=self.accelerator, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            loss_fn=self.loss_fn, augment=self.augment, stop=self.stop, seed=cfg.train.seed,
            grad_clip=cfg.train.grad_clip, label_fraction=cfg.data.label_fraction if self.job != "teacher" else 1.0,
            kd=kd, teacher_fn=self.teacher_fn, ahead=self.ahead, teacher_dtype=cfg.teacher.dtype)

    def _train_step(self, batch: dict, next_batch: dict | None = None) -> dict:
        """One step (train/step.py), then the run of non-finite steps: give up after
        train.max_nonfinite_steps in a row. Returns the step's train/ metrics."""
        cfg, acc = self.cfg, self.accelerator
        result = train_step(self.step_parts(), batch, self.step, next_batch)
        if result.finite:
            self.nonfinite_in_row = 0
        elif result.overflow:  # the fp16 loss scaler lowered its scale: skipped, not a fault
            acc.print(f"step {self.step + 1}: fp16 gradient overflow, step skipped, loss scale lowered")
        else:
            self.nonfinite_in_row += 1
            acc.print(f"step {self.step + 1}: non-finite loss or gradient, step skipped ({self.nonfinite_in_row} in a row)")
            if self.nonfinite_in_row >= cfg.train.max_nonfinite_steps:
                raise TrainingFailed(
                    f"{self.nonfinite_in_row} non-finite steps in a row (train.max_nonfinite_steps); "
                    f"the last good checkpoint is kept in {self.run_dir / 'checkpoints'}")
        out = {"train/loss": result.loss, "train/ce_loss": result.ce, "train/nonfinite_skipped": float(not result.finite)}
        if self.job == "distill":
            out["train/kd_loss"] = result.kd
        return out

    # ------------------------------------------------------------------ eval, checkpoints
    def _validate_and_select(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        # Forked RNG: evaluating (its loaders draw seeds) must not change the training run.
        with torch.random.fork_rng(devices=[]):
            report = validate(acc, self.model, self.data, cfg, split="val", job=self.job)
        if acc.is_main_process:
            self.logger.log({f"val/{k}": v for k, v in report["summary"].items()}, self.step)
            candidate = {"step": self.step, **report["summary"]}
            if best_store.is_better(candidate, self.best, cfg, self.job):
                self.best = candidate
                best_store.save_best(acc, self.model, self.run_dir / "best", self.architecture, self.label_names,
                                     candidate, cfg, teacher=self.teacher_fingerprint, dataset=self.dataset_record)
        self.best = collectives.broadcast_object(self.best)
        return report["summary"]

    def _save(self) -> None:
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                 "architecture": self.architecture, "best": self.best, "nonfinite_in_row": self.nonfinite_in_row,
                 "world_size": self.accelerator.num_processes, "config": self.cfg.to_dict()}
        if self.batch_in_epoch >= self.cfg.train.batches_per_epoch:
            state["epoch"], state["batch_in_epoch"] = self.epoch + 1, 0
        ckpt.save_checkpoint(self.accelerator, self.run_dir / "checkpoints", self.step, state,
                             keep=self.cfg.train.keep_checkpoints)

    def _finish(self, final: dict) -> None:
        acc = self.accelerator
        # Per-rank record: which data each rank saw and a digest of its weights, so a reader
        # (or a test) can check that ranks trained on different clips and ended in sync.
        # Parameters only: BatchNorm running stats are per-rank between DDP's buffer broadcasts.
        weights = hashlib.sha1()
        for tensor in acc.unwrap_model(self.model).parameters():
            weights.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        mine = {"rank": acc.process_index, "keys_sha1": self.keys_digest.hexdigest(),
                "weights_sha1": weights.hexdigest()}
        ranks = gather_object([mine]) if acc.num_processes > 1 else [mine]
        if acc.is_main_process:
            summary = {"step": self.step, "completed": True, "best": self.best, "final_val": final,
                       "placement": self.placement, "world_size": acc.num_processes, "ranks": ranks}
            if self.teacher_quality is not None:
                summary["teacher_quality"] = self.teacher_quality
            ckpt.write_json_atomic(self.run_dir / "final.json", to_jsonable(summary))
            self.logger.summary({f"best/{k}": v for k, v in (self.best or {}).items()})
        acc.wait_for_everyone()

    def cleanup(self) -> None:
        if hasattr(self, "logger"):
            self.logger.close()
        teacher_setup.release_teacher(self.placement)
        if hasattr(self, "accelerator"):
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()
        if hasattr(self, "stop"):
            self.stop.uninstall()


def run(cfg: Config) -> dict:
    recipe = Recipe(cfg)
    try:
        recipe.setup()
        return recipe.train()
    finally:
        recipe.cleanup()

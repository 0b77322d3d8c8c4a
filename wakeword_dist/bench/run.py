"""Side-by-side throughput of every stage of a distillation step, in ONE run, against goals P1-P5.

    wakeword-dist bench [all|loader|student|teacher|online_kd|cached_kd|ddp] --config C [--out F]
    python -m wakeword_dist.bench.run all --config C --shapes real --batch 256,1024 [--compile]

Shapes (``bench/plan.py``): ``tiny`` on CPU (the config's tiny teacher and batch, seconds), ``real``
on a GPU (wav2vec2-base-shaped teacher from random init, batches 256 and 1024). Every workload
runs warm-up calls, then timed rounds with the device synchronised at round ends; clips/s come
from the best round. Figures go to stdout and to JSON (default ``bench_out/bench.json``).

Sections and the goal each feeds:
- ``loader``: clips/s per DataLoader worker (``bench/loader.py``, the data owner's) -> P4 >= 8000.
Every step figure times the recipe's own step, ``train/step.py: train_step`` (``BenchStep``).

- ``student``: baseline student step (augment + log-mel + SpecAugment + fwd/bwd + all-reduce + clip +
  AdamW + scheduler), plus its front end and augmentation alone (on the device's path, and with
  every transform on every clip: ``augment_all_rows``).
- ``teacher``: teacher forward, plain HF eager fp32 / fp16 / bf16 and each ``optimize_teacher``
  rewrite (``models/fast_teacher.py``) in the run dtype, with the max logit error relative to fp32
  -> P3 = best variant within 1e-2 / eager, same dtype and batch, >= 2.
- ``teacher_compile``: the all-exact-rewrites teacher under torch.compile at the compile batches
  (on GPU: the largest), added to the teacher table and to P3; its own section so that a slow
  compile can be given (or denied) its own time.
- ``online_kd``: the online KD step vs the teacher forward alone, back to back, serial and with
  the teacher one batch ahead (``distill.overlap_teacher``; a second CUDA stream on GPU) -> P1 >= 0.9.
- ``cached_kd``: student step + KD loss on cached logits vs the baseline step; and one epoch of
  loader + step each way over shards with ``.teacher.npy`` logits -> P2 = epoch time ratio <= 1.1.
- ``ddp``: 1 vs 2 CPU gloo ranks, same per-rank batch -> P5 = 2-rank / (2 x 1-rank) >= 0.9.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from wakeword_dist.bench.plan import BenchPlan, make_plan
from wakeword_dist.bench.timing import first_call_seconds, machine_info, measure, sync
from wakeword_dist.config import Config

SECTIONS = ("loader", "student", "teacher", "teacher_compile", "online_kd", "cached_kd", "ddp")
DEFAULT_OUT = Path("bench_out") / "bench.json"
LOGIT_TOLERANCE = 1e-2  # max |z - z_fp32| / max |z_fp32| for a teacher variant to count for P3
GOALS = {  # name: (what, comparison, target)
    "P1": ("online KD step clips/s / teacher forward alone clips/s", ">=", 0.9),
    "P2": ("cached-logit KD epoch time / baseline epoch time (loader + step)", "<=", 1.1),
    "P3": ("best teacher forward (logits within 1e-2 of fp32) / plain HF eager, same dtype + batch", ">=", 2.0),
    "P4": ("loader clips/s per worker", ">=", 8000.0),
    "P5": ("2-rank clips/s / (2 x 1-rank clips/s), CPU gloo, same per-rank batch", ">=", 0.9),
}


def _say(msg: str) -> None:
    print(msg, flush=True)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _timed(plan: BenchPlan, fn, clips: int) -> dict:
    return measure(fn, device=plan.device, clips=clips, warmup=plan.warmup, iters=plan.iters, rounds=plan.rounds)


def _speed(plan: BenchPlan, r: dict) -> float:
    """Clips/s on the plan's basis: per process-CPU-second (CPU, one thread) or wall clock (GPU)."""
    return r["cpu_clips_per_s"] if plan.basis == "cpu" else r["clips_per_s"]


def _row(section: str, name: str, batch, r: dict, extra: str = "") -> None:
    if "error" in r:
        _say(f"  {section:10s} {name:38s} b={batch!s:>5s}  ERROR {r['error']}")
        return
    cpu = f" | cpu {r['cpu_ms']:8.1f} ms {r['cpu_clips_per_s']:>9,.0f} clips/cpu-s" if "cpu_ms" in r else ""
    _say(f"  {section:10s} {name:38s} b={batch!s:>5s} {r['clips_per_s']:>10,.0f} clips/s {r['ms']:8.2f} ms"
         f"{cpu}{extra}")


# ------------------------------------------------------------------------------------- sections
def bench_loader_section(cfg: Config, plan: BenchPlan, labels, results, work_dir: Path) -> dict:
    from wakeword_dist.bench.loader import bench_loader

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        per_format = bench_loader(tmp, formats=plan.loader_formats, n_clips=plan.loader_clips,
                                  batch_size=min(64, plan.loader_clips // 4), num_workers=plan.loader_workers,
                                  repeats=plan.loader_repeats, print_table=True)
    fmt = cfg.data.audio_format if cfg.data.audio_format in per_format else next(iter(per_format))
    return {"formats": per_format, "workers": plan.loader_workers, "headline_format": fmt,
            "clips_per_s_per_worker": per_format[fmt]["clips_per_s_per_worker"],
            "clips_per_worker_cpu_s": per_format[fmt]["clips_per_worker_cpu_s"]}


def bench_student_section(cfg: Config, plan: BenchPlan, labels, results, work_dir) -> dict:
    from wakeword_dist.bench.workloads import BenchStep, random_audio

    out = {"name": cfg.student.name, "width": cfg.student.width, "precision": plan.student_precision, "batches": {}}
    for b in plan.batch_sizes:
        audio = random_audio(b, plan.clip_samples, plan.device)
        step = BenchStep(cfg, labels, plan.device, b, plan.student_precision)
        student = step.accelerator.unwrap_model(step.model)
        out["params"] = sum(p.numel() for p in student.parameters())
        rows = {}
        with torch.no_grad():
            rows["frontend"] = _timed(plan, lambda: student.frontend(audio), b)
            gen = torch.Generator(device=plan.device).manual_seed(0)
            rows["augment"] = _timed(plan, lambda: step.augment(audio, gen), b)
            # every transform computed on every clip and masked: what an accelerator does
            step.augment.all_rows = True
            rows["augment_all_rows"] = _timed(plan, lambda: step.augment(audio, gen), b)
            step.augment.all_rows = None
        rows["baseline_step"] = _timed(plan, lambda: step.step(), b)
        for name, r in rows.items():
            _row("student", name, b, r)
        out["batches"][str(b)] = rows
        del step
        _free(plan.device)
    return out


def bench_teacher_section(cfg: Config, plan: BenchPlan, labels, results, work_dir) -> dict:
    from wakeword_dist.bench.workloads import master_teacher, teacher_variants

    hf = master_teacher(plan, labels)
    out = {"arch": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.teacher_arch.items()},
           "params": sum(p.numel() for p in hf.parameters()), "run_dtype": plan.teacher_dtype,
           "logit_tolerance": LOGIT_TOLERANCE, "batches": {}}
    for b in plan.batch_sizes:
        audio, ref = _audio_and_reference(plan, hf, labels, b)
        rows = {}
        for name, spec in teacher_variants(plan).items():
            rows[name] = r = _time_variant(plan, spec, hf, labels, audio, ref, b)
            _row("teacher", name, b, r, "" if "error" in r else
                 f"  err {r['max_rel_err']:.1e}  first {r['first_call_s']:.2f} s")
        rows[f"exact_all+compile_{plan.teacher_dtype}"] = {
            "skipped": "torch.compile is timed by the teacher_compile section, at the compile batches "
                       "(compile=True / --compile; default: on GPU, the largest batch)",
            "dtype": plan.teacher_dtype, "exact": True}
        out["batches"][str(b)] = rows
    out["p3"] = _p3(out, plan)
    return out


def _audio_and_reference(plan, hf, labels, batch: int):
    """Random audio (B, S) on the device and the fp32 teacher's logits (B, C) on it: what every
    teacher variant is timed on and checked against."""
    from wakeword_dist.bench.workloads import frozen, random_audio, reference_precision

    audio = random_audio(batch, plan.clip_samples, plan.device)
    reference = frozen(hf, labels, "fp32", plan.device)
    with reference_precision(plan.device):
        ref = reference(audio)
    del reference  # the fp32 copy must not sit beside the timed variants in device memory
    return audio, ref


def _time_variant(plan: BenchPlan, spec: dict, hf, labels, audio, ref, b: int) -> dict:
    """One teacher variant: first call (compile / capture included), logit error, timed rounds."""
    torch.backends.cudnn.benchmark = bool(spec.get("cudnn_benchmark"))
    model = None
    try:
        from wakeword_dist.bench.workloads import build_variant, max_rel_err

        model = build_variant(spec, hf, labels, plan.device)
        first = first_call_seconds(lambda: model(audio), plan.device)
        err = max_rel_err(model(audio), ref)
        r = _timed(plan, lambda: model(audio), b)
        r.update(dtype=spec["dtype"], exact=spec["exact"], max_rel_err=err, first_call_s=first, note=spec["note"])
        if hasattr(model, "fast_teacher"):
            r["applied"] = model.fast_teacher
    except Exception as exc:  # noqa: BLE001 - one failing variant (OOM, no compiler) must not end the run
        r = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
             "dtype": spec["dtype"], "exact": spec["exact"]}
    finally:
        model = None
        torch.backends.cudnn.benchmark = False
        _free(plan.device)
    return r


def bench_teacher_compile_section(cfg: Config, plan: BenchPlan, labels, results, work_dir) -> dict:
    """torch.compile of the all-exact teacher at ``plan.compile_batches``; its rows replace the
    teacher table's "skipped" ones and P3 is taken again (when the teacher section ran)."""
    from wakeword_dist.bench.workloads import compile_variant, master_teacher

    out = {"batches": {}, "compile_batches": list(plan.compile_batches)}
    if not plan.compile_batches:
        out["skipped"] = "no compile batches (compile=False; on CPU pass --compile)"
        return out
    hf = master_teacher(plan, labels)
    name, spec = compile_variant(plan)
    for b in plan.compile_batches:
        audio, ref = _audio_and_reference(plan, hf, labels, b)
        r = _time_variant(plan, spec, hf, labels, audio, ref, b)
        _row("teacher", name, b, r, "" if "error" in r else
             f"  err {r['max_rel_err']:.1e}  first {r['first_call_s']:.2f} s")
        out["batches"][str(b)] = {name: r}
        if "teacher" in results and str(b) in results["teacher"].get("batches", {}):
            results["teacher"]["batches"][str(b)][name] = r
    if "teacher" in results and "batches" in results["teacher"]:
        results["teacher"]["p3"] = _p3(results["teacher"], plan)
    return out


def _p3(teacher: dict, plan: BenchPlan) -> dict:
    """Per batch: best variant within tolerance in the run dtype / plain eager in that dtype."""
    d = plan.teacher_dtype
    per_batch = {}
    for b, rows in teacher["batches"].items():
        eager = rows.get(f"eager_{d}", {})
        ok = {n: r for n, r in rows.items() if "clips_per_s" in r and r["dtype"] == d and n != f"eager_{d}"
              and r["max_rel_err"] <= LOGIT_TOLERANCE}
        if "clips_per_s" not in eager or not ok:
            continue
        best = max(ok, key=lambda n: _speed(plan, ok[n]))
        per_batch[b] = {"best": best, "ratio": round(_speed(plan, ok[best]) / _speed(plan, eager), 3),
                        "max_rel_err": ok[best]["max_rel_err"], "eager": f"eager_{d}", "basis": plan.basis}
    return per_batch


def _best_teacher_name(results: dict, plan: BenchPlan, batch: int) -> str:
    p3 = results.get("teacher", {}).get("p3", {}).get(str(batch))
    if p3 and "compile" not in p3["best"]:  # compile time is paid again by every section; not here
        return p3["best"]
    return f"exact_all_{plan.teacher_dtype}"


def bench_online_kd_section(cfg: Config, plan: BenchPlan, labels, results, work_dir) -> dict:
    """Per batch and teacher (plain eager, and the teacher section's best exact variant): the
    teacher forward alone, the recipe's online KD step serial, and with the teacher one batch
    ahead; each step's ratio to the teacher alone (P1)."""
    from wakeword_dist.bench.workloads import BenchStep, build_variant, master_teacher, random_audio, teacher_variants

    hf = master_teacher(plan, labels)
    out = {"batches": {}}
    for b in plan.batch_sizes:
        audio = random_audio(b, plan.clip_samples, plan.device)
        specs = teacher_variants(plan)
        rows = {}
        for name in dict.fromkeys([f"eager_{plan.teacher_dtype}", _best_teacher_name(results, plan, b)]):
            torch.backends.cudnn.benchmark = bool(specs[name].get("cudnn_benchmark"))
            teacher = build_variant(specs[name], hf, labels, plan.device)
            t_only = _timed(plan, lambda: teacher(audio), b)
            row = {"teacher_only": t_only, "basis": plan.basis}
            _row("online_kd", f"teacher {name}", b, t_only)
            for key, overlap in (("online_kd", False), ("online_kd_overlapped", True)):
                step = BenchStep(cfg, labels, plan.device, b, plan.student_precision, teacher=teacher, overlap=overlap)
                row[key] = r = _timed(plan, lambda: step.step(), b)
                r["ratio"] = round(_speed(plan, r) / _speed(plan, t_only), 4)
                _row("online_kd", f"{'ahead' if overlap else 'serial'} step, teacher {name}", b, r,
                     f"  ratio {r['ratio']:.3f}")
                del step
            row["ratio"] = row["online_kd"]["ratio"]
            row["ratio_overlapped"] = row["online_kd_overlapped"]["ratio"]
            rows[name] = row
            del teacher
            torch.backends.cudnn.benchmark = False
            _free(plan.device)
        out["batches"][str(b)] = rows
    return out


def _write_logit_split(split_dir: Path, labels, n_clips: int, clip_samples: int, audio_format: str) -> None:
    """Shards like the annotate stage writes: audio + label + float16 ``.teacher.npy`` logits."""
    import numpy as np

    from wakeword_dist.bench.loader import _speechlike
    from wakeword_dist.data.shard_writer import ShardWriter

    rng = np.random.default_rng(0)
    bank = [_speechlike(rng, clip_samples) for _ in range(32)]
    with ShardWriter(split_dir, 1000, audio_format, label_names=list(labels), source="bench", seed=0) as w:
        for i in range(n_clips):
            w.write(f"c{i:07d}", bank[i % len(bank)], {"label": i % len(labels), "label_name": labels[i % len(labels)]},
                    teacher_logits=rng.standard_normal(len(labels)).astype(np.float32))


def _epoch_seconds(cfg, plan: BenchPlan, labels, split: Path, cached: bool) -> tuple[float, float]:
    """(wall s, process CPU s) of batches 2..n of one epoch: load -> device -> step (cached: KD on the
    loaded logits). Process CPU covers the loader only when it runs in-process (0 workers)."""
    from wakeword_dist.bench.workloads import BenchStep
    from wakeword_dist.data.reader import make_train_loader

    b = plan.epoch_batch
    step = BenchStep(cfg, labels, plan.device, b, plan.student_precision,
                     logits=torch.zeros(b, len(labels)) if cached else None)
    loader = make_train_loader(split, batch_size=b, batches_per_epoch=plan.epoch_batches, rank=0, world_size=1,
                               seed=0, epoch=0, num_workers=plan.epoch_workers, clip_samples=plan.clip_samples,
                               expected_sample_rate=cfg.data.sample_rate, with_teacher_logits=cached)

    it = iter(loader)
    step.step(next(it))  # worker start-up, shuffle-buffer fill, first-call costs: not timed
    sync(plan.device)
    c0, t0 = time.process_time(), time.perf_counter()
    for batch in it:  # the loader's batch as the recipe gets it: the step moves it to the device
        step.step(batch)
    sync(plan.device)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_cached_kd_section(cfg: Config, plan: BenchPlan, labels, results, work_dir: Path) -> dict:
    from wakeword_dist.bench.workloads import BenchStep

    out = {"batches": {}}
    for b in plan.batch_sizes:
        logits = torch.randn(b, len(labels), generator=torch.Generator().manual_seed(0))
        base = BenchStep(cfg, labels, plan.device, b, plan.student_precision)
        cached = BenchStep(cfg, labels, plan.device, b, plan.student_precision, logits=logits)
        rb = _timed(plan, lambda: base.step(), b)
        rc = _timed(plan, lambda: cached.step(), b)
        row = {"baseline_step": rb, "cached_kd_step": rc, "basis": plan.basis,
               "step_time_ratio": round(_speed(plan, rb) / _speed(plan, rc), 4)}
        _row("cached_kd", "baseline step", b, rb)
        _row("cached_kd", "cached-logit KD step", b, rc, f"  time ratio {row['step_time_ratio']:.3f}")
        out["batches"][str(b)] = row
        del base, cached
        _free(plan.device)
    # One epoch each way through the real loader, with logits stored in the shards.
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        split = Path(tmp) / "train"
        n_clips = max(256, plan.epoch_batch * plan.epoch_batches)
        _write_logit_split(split, labels, n_clips, plan.clip_samples, cfg.data.audio_format)
        times = {"baseline": [], "cached": []}
        for _ in range(plan.epoch_repeats):  # interleaved, best kept: load drift hits both alike
            for mode in times:
                times[mode].append(_epoch_seconds(cfg, plan, labels, split, cached=mode == "cached"))
    # CPU time only when the whole epoch (loader included) runs in this process on one thread.
    basis = "cpu" if plan.basis == "cpu" and plan.epoch_workers == 0 else "wall"
    k = 1 if basis == "cpu" else 0
    base_s, cached_s = min(t[k] for t in times["baseline"]), min(t[k] for t in times["cached"])
    clips = plan.epoch_batch * (plan.epoch_batches - 1)
    out["epoch"] = {"batch": plan.epoch_batch, "timed_batches": plan.epoch_batches - 1,
                    "workers": plan.epoch_workers, "audio_format": cfg.data.audio_format, "basis": basis,
                    "baseline_s": round(base_s, 4), "cached_kd_s": round(cached_s, 4),
                    "baseline_wall_s": round(min(t[0] for t in times["baseline"]), 4),
                    "cached_kd_wall_s": round(min(t[0] for t in times["cached"]), 4),
                    "baseline_clips_per_s": round(clips / base_s, 1), "cached_kd_clips_per_s": round(clips / cached_s, 1),
                    "time_ratio": round(cached_s / base_s, 4)}
    e = out["epoch"]
    _say(f"  cached_kd  epoch (loader + step, {basis} s)            b={plan.epoch_batch:>5d}  baseline "
         f"{e['baseline_s']:.3f} s, cached KD {e['cached_kd_s']:.3f} s, ratio {e['time_ratio']:.3f}")
    return out


def bench_ddp_section(cfg: Config, plan: BenchPlan, labels, results, work_dir) -> dict:
    from wakeword_dist.bench.ddp import run_weak_scaling

    r = run_weak_scaling(cfg, batch=plan.ddp_batch, iters=plan.ddp_iters, warmup=plan.ddp_warmup,
                         rounds=plan.ddp_rounds)
    for world in ("1_rank", "2_rank"):
        _row("ddp", f"{world} CPU gloo, 1 thread/rank", plan.ddp_batch, r[world])
    _say(f"  ddp        weak-scaling efficiency {r['efficiency']:.3f} (wall), {r['cpu_efficiency']:.3f} (rank CPU "
         f"time); one small all-reduce {r['2_rank'].get('small_allreduce')}")
    return r


SECTION_FNS = {"loader": bench_loader_section, "student": bench_student_section, "teacher": bench_teacher_section,
               "teacher_compile": bench_teacher_compile_section, "online_kd": bench_online_kd_section, "cached_kd": bench_cached_kd_section, "ddp": bench_ddp_section}


# ------------------------------------------------------------------------------------- goals
def goals(results: dict) -> dict:
    """P1-P5 from whatever sections were measured: value, goal, met (None = not measured)."""
    values: dict = {}
    top = lambda d: d[max(d, key=int)] if d else None  # noqa: E731 - the largest batch
    if (ok := results.get("online_kd", {}).get("batches")):
        rows = top(ok)
        name = list(rows)[-1]  # the optimised teacher (the eager one is first)
        # the better of the recipe's two ways (serial, teacher ahead): the one its default should be
        ahead = rows[name].get("ratio_overlapped")
        best, how = (ahead, "teacher ahead") if ahead is not None and ahead > rows[name]["ratio"] else \
            (rows[name]["ratio"], "serial")
        values["P1"] = (best, f"teacher {name}, batch {max(ok, key=int)}, {how}; "
                        + ", ".join(f"{n}: serial {r['ratio']}, ahead {r.get('ratio_overlapped')}"
                                    for n, r in rows.items()))
    if (e := results.get("cached_kd", {}).get("epoch")):
        steps = results["cached_kd"]["batches"]
        values["P2"] = (e["time_ratio"], f"epoch of {e['timed_batches']} x {e['batch']} clips; step-only ratio "
                        + ", ".join(f"b={b}: {r['step_time_ratio']}" for b, r in steps.items()))
    if (p3 := results.get("teacher", {}).get("p3")):
        b = max(p3, key=int)
        values["P3"] = (p3[b]["ratio"], f"{p3[b]['best']} vs {p3[b]['eager']} at batch {b}, "
                        f"max rel logit err {p3[b]['max_rel_err']:.1e}")
    if (ld := results.get("loader")) and "clips_per_s_per_worker" in ld:
        # CPU basis: clips per worker-CPU-second (a worker with a core of its own; the wall figure
        # of a loaded 2-core box measures the other jobs). GPU machine: wall clips/s per worker.
        cpu_basis = results.get("plan", {}).get("basis") == "cpu" and ld["clips_per_worker_cpu_s"]
        value = ld["clips_per_worker_cpu_s"] if cpu_basis else ld["clips_per_s_per_worker"]
        values["P4"] = (value, f"{ld['headline_format']}, {ld['workers']} worker(s), basis "
                        f"{'worker CPU time' if cpu_basis else 'wall'}; wall {ld['clips_per_s_per_worker']} "
                        f"clips/s/worker, {ld['clips_per_worker_cpu_s']} clips/worker-CPU-s")
    if (dd := results.get("ddp")) and "efficiency" in dd:
        cpu_basis = results.get("plan", {}).get("basis") == "cpu" and "cpu_efficiency" in dd
        values["P5"] = (dd["cpu_efficiency"] if cpu_basis else dd["efficiency"],
                        f"basis {'rank CPU time' if cpu_basis else 'wall'}; wall: 1 rank {dd['1_rank']['clips_per_s']} "
                        f"clips/s, 2 ranks {dd['2_rank']['clips_per_s']} clips/s = {dd['efficiency']}; CPU time: "
                        f"{dd.get('cpu_efficiency')}")
    out = {}
    for key, (what, cmp, target) in GOALS.items():
        value, detail = values.get(key, (None, "not measured"))
        met = None if value is None else (value >= target if cmp == ">=" else value <= target)
        out[key] = {"what": what, "goal": f"{cmp} {target:g}", "value": value, "met": met, "detail": detail}
    return out


def print_goals(g: dict) -> None:
    _say("goals:")
    for key, r in g.items():
        state = "not measured" if r["met"] is None else ("met" if r["met"] else "MISSED")
        value = "-" if r["value"] is None else f"{r['value']:,.3f}" if r["value"] < 100 else f"{r['value']:,.0f}"
        _say(f"  {key} {value:>10s} (goal {r['goal']:>7s}) {state:12s} {r['what']}; {r['detail']}")


# ------------------------------------------------------------------------------------- entry
def run_bench(cfg: Config, what: str = "all", out: str | os.PathLike | None = None, *, shapes: str = "auto",
              batch_sizes=None, compile: bool | None = None, quick: bool | None = None,
              strict: bool = True, append: bool = False) -> dict:
    """Measure ``what`` (``all`` or one section), print the figures and P1-P5, write JSON.

    Args:
        cfg: the experiment config (student, augmentation, KD settings; tiny teacher shape).
        what: ``all`` or one or more of loader, student, teacher, online_kd, cached_kd, ddp (comma-
            separated, run in that order; online_kd uses the teacher section's best variant if run first).
        out: JSON path (default ``bench_out/bench.json``); written even when a section fails.
        shapes: ``auto`` (real on CUDA, else tiny) | tiny | real; see ``bench/plan.py``.
        batch_sizes: clips per call, e.g. (256, 1024); default from the shapes preset.
        compile: time torch.compile variants (default: on GPU only).
        quick: one timed call per workload (tests); default from ``WAKEWORD_BENCH_QUICK``.
        strict: raise ``RuntimeError`` after writing the JSON if any section failed.
        append: keep the sections already in ``out`` (same shapes, device, batches and dtypes, else
            ``ValueError``) and add these, goals taken over all: one benchmark split over several
            processes, each under its own time limit (``launch/gpu_check.py``).
    Returns the results dict (also written to ``out``).
    """
    from wakeword_dist.atomic import write_json_atomic
    from wakeword_dist.bench.workloads import label_names

    sections = SECTIONS if what == "all" else tuple(w.strip() for w in what.split(",") if w.strip())
    unknown = [w for w in sections if w not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f"bench: unknown workload {what!r}; choose all or one or more (comma-separated) of "
                         f"{', '.join(SECTIONS)}")
    plan = make_plan(cfg, shapes=shapes, batch_sizes=batch_sizes, compile=compile, quick=quick)
    out = Path(out) if out is not None else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    labels = label_names(cfg)
    results: dict = {"machine": machine_info(plan.device), "plan": plan.to_dict(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if append and out.is_file():
        results = {**_previous_results(out, plan), **results}
    m = results["machine"]
    _say(f"[bench] {what} | shapes={plan.shapes} device={plan.device} {m.get('gpu', '')} cpus={m['cpu_count']} "
         f"load={m.get('load_avg_1min')} threads={plan.threads or m['torch_threads']} batches={list(plan.batch_sizes)} "
         f"teacher dtype={plan.teacher_dtype} student {cfg.student.name} precision={plan.student_precision} "
         f"ratio basis={plan.basis}")
    failed = []
    threads = torch.get_num_threads()
    if plan.threads:
        torch.set_num_threads(plan.threads)
    try:
        for section in sections:
            t0 = time.perf_counter()
            _say(f"[bench] {section}")
            try:
                results[section] = SECTION_FNS[section](cfg, plan, labels, results, out.parent)
            except Exception as exc:  # noqa: BLE001 - record and go on: the other sections are still worth having
                traceback.print_exc()
                results[section] = {"error": f"{type(exc).__name__}: {exc}"}
                failed.append(section)
            results[section]["section_s"] = round(time.perf_counter() - t0, 2)
            write_json_atomic(out, results)  # after every section: a run killed later keeps these
    finally:
        torch.set_num_threads(threads)
    results["goals"] = goals(results)
    print_goals(results["goals"])
    write_json_atomic(out, results)
    _say(f"[bench] figures written to {out}")
    if failed and strict:
        raise RuntimeError(f"bench sections failed: {', '.join(failed)} (details in {out})")
    return results


def _previous_results(path: Path, plan: BenchPlan) -> dict:
    """The sections of an earlier run in ``path``, if it measured the same thing as ``plan``."""
    import json

    previous = json.loads(path.read_text())
    now = plan.to_dict()
    for key in ("shapes", "device", "batch_sizes", "clip_samples", "teacher_dtype", "student_precision"):
        if previous.get("plan", {}).get(key) != now[key]:
            raise ValueError(f"bench --append: {path} holds a run with {key}={previous.get('plan', {}).get(key)!r}, "
                             f"this one has {now[key]!r}; write to another --out")
    previous.pop("goals", None)
    return previous


def main(argv=None) -> int:
    from wakeword_dist.config import load_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", default="all", help="all | " + " | ".join(SECTIONS))
    p.add_argument("--config", default=None, help="YAML config (default: embedded demo defaults)")
    p.add_argument("--out", default=None, help=f"JSON file (default {DEFAULT_OUT})")
    p.add_argument("--shapes", default="auto", choices=("auto", "tiny", "real"))
    p.add_argument("--batch", default=None, help="comma-separated batch sizes, e.g. 256,1024")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="time torch.compile variants")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--quick", action="store_true", default=None, help="one timed call per workload")
    p.add_argument("--keep-going", action="store_true", help="exit 0 even if a section failed")
    p.add_argument("--append", action="store_true", help="add these sections to those already in --out")
    p.add_argument("overrides", nargs="*", help="dotted config overrides")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    batches = tuple(int(x) for x in a.batch.split(",")) if a.batch else None
    try:
        run_bench(cfg, a.what, a.out, shapes=a.shapes, batch_sizes=batches, compile=a.compile,
                  quick=a.quick, strict=not a.keep_going, append=a.append)
    except (RuntimeError, ValueError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

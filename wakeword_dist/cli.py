"""`wakeword-dist <stage>`: one entry point per stage (also `python -m wakeword_dist`).

Every stage takes `--config configs/<x>.yaml` (default: configs/demo.yaml) and any
number of dotted overrides (`train.seed=3 distill.alpha=0.5`). Each stage that can run on
several processes does so under `accelerate launch -m wakeword_dist.cli <stage> ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wakeword_dist.config import ConfigError, load_config
from wakeword_dist.errors import TrainingFailed, TrainingStopped

STAGES: dict[str, tuple[str, object]] = {}


def stage(name: str, help_text: str):
    def register(fn):
        STAGES[name] = (help_text, fn)
        return fn
    return register


def _cfg(args):
    return load_config(args.config, args.overrides)


# ----------------------------------------------------------------------------- stages
@stage("synth", "Generate the synthetic dataset with espeak-ng, flite, festival and festival-l2 (wake phrase, "
                "confusables, silence, noise, streams) as shards.")
def _synth(args):
    from wakeword_dist.stages.pipeline import synthesize_from_config

    print(json.dumps(synthesize_from_config(_cfg(args)), indent=2, default=str))


@stage("build-shards", "Build shards from audio folders (positive/ negative/ hard_negative/ background/) or the "
                       "Speech Commands layout into data.root; bad files are skipped and listed.")
def _build_shards(args):
    from wakeword_dist.data.build_shards import build_shards

    cfg = _cfg(args)
    report = build_shards(args.src, cfg.data.root, layout=args.layout, wake_words=tuple(args.wake_word),
                          clip_seconds=cfg.data.clip_seconds, sample_rate=cfg.data.sample_rate,
                          audio_format=cfg.data.audio_format, seed=cfg.data.synth_seed)
    print(f"built {cfg.data.root}: " + ", ".join(f"{k} {v.get('num_samples', v)}" for k, v in report["splits"].items()))
    if report["skipped"]:
        print(f"{len(report['skipped'])} files skipped: see the list above")


@stage("inspect-shards", "Counts, hours, label balance, speakers; checks every member decodes and counts match.")
def _inspect(args):
    from wakeword_dist.data.inspect_shards import inspect_shards, print_inspection

    cfg = _cfg(args)
    result = inspect_shards(cfg.data.root)
    print_inspection(result)
    if result.get("problems"):
        sys.exit(1)


@stage("train", "Train with the Accelerate recipe (train.job=baseline|distill|teacher).")
def _train(args):
    from wakeword_dist.train.recipe import run

    return run(_cfg(args))


@stage("train-teacher", "Fine-tune (or train from scratch) the HF teacher on the shards; saves runs/<exp>/teacher/best.")
def _train_teacher(args):
    from wakeword_dist.train.recipe import run

    args.overrides = [*args.overrides, "train.job=teacher"]
    return run(_cfg(args))


@stage("annotate", "Run the frozen teacher once over the training split and store its logits beside each sample "
                   "(for distill.mode=cached); records the teacher fingerprint.")
def _annotate(args):
    from wakeword_dist.stages.annotate import annotate

    annotate(_cfg(args))


@stage("evaluate", "Score the run's best checkpoint: θ chosen on val for the target FA/h, reported on test "
                   "(report.json, det.png).")
def _evaluate(args):
    from wakeword_dist.stages.evaluate import evaluate_run

    evaluate_run(_cfg(args))


@stage("export", "Export the run's best student to ONNX (+ int8), check onnxruntime parity, score both on test.")
def _export(args):
    from wakeword_dist.stages.export import export_run

    export_run(_cfg(args))


@stage("compare", "Train/evaluate compare.seeds x {baseline, distill}; mean ± std, paired difference with 95% CI, "
                  "comparison.json/png, W&B group summary.")
def _compare(args):
    from wakeword_dist.stages.compare import compare

    compare(_cfg(args))


@stage("loeo", "Leave one engine out: for each TTS engine, teacher + compare.seeds x {baseline, distill} trained "
               "without it and tested on it alone; runs/<experiment>/loeo.json/png.")
def _loeo(args):
    from wakeword_dist.stages.loeo import loeo

    loeo(_cfg(args))


@stage("report", "One self-contained runs/<experiment>/report.html: comparison with CI, DET and bar plots, "
                 "per-seed rows, teacher quality, config differences, export figures.")
def _report(args):
    from wakeword_dist.stages.html_report import write_html_report

    cfg = _cfg(args)
    print(f"[report] {write_html_report(Path(cfg.run.runs_dir) / cfg.run.experiment)}")


@stage("pipeline", "The main job: synth -> teacher -> (annotate) -> students x seeds -> evaluate -> compare -> "
                   "export -> report.html; finished stages are skipped.")
def _pipeline(args):
    from wakeword_dist.stages.pipeline import pipeline

    pipeline(_cfg(args))


@stage("bench", "Side-by-side throughput: loader, student step, teacher forward variants, online/cached KD, "
                "1- vs 2-rank DDP. `bench all` or one of them; prints clips/s and ratios, writes JSON.")
def _bench(args):
    from wakeword_dist.bench.run import run_bench

    batch_sizes = [int(b) for b in args.batch.split(",")] if args.batch else None
    run_bench(_cfg(args), args.what, out=args.out, shapes=args.shapes, batch_sizes=batch_sizes,
              compile=args.compile, quick=args.quick or None)


@stage("models", "List the student architectures with their parameter counts.")
def _models(args):
    from wakeword_dist.models.registry import STUDENTS, list_students

    counts = list_students(num_classes=2)
    for name, n in counts.items():
        print(f"{name:20s} {n:>10,d} params  {STUDENTS[name].description}")


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wakeword-dist", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for name, (help_text, _) in STAGES.items():
        p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        if name == "build-shards":
            p.add_argument("--src", required=True, help="source folder (folder or Speech Commands layout)")
            p.add_argument("--layout", default="auto", choices=["auto", "folder", "speech_commands"])
            p.add_argument("--wake-word", action="append", default=[],
                           help="Speech Commands word(s) that form the positive class (repeatable)")
        if name == "bench":
            p.add_argument("what", nargs="?", default="all",
                           help="all | loader | student | teacher | online_kd | cached_kd | ddp")
            p.add_argument("--out", default=None, help="JSON file for the figures (default: bench_out/bench.json)")
            p.add_argument("--shapes", default="auto", choices=["auto", "tiny", "real"],
                           help="tiny = the config's models; real = wav2vec2-base-sized teacher (auto: real on GPU)")
            p.add_argument("--batch", default=None, help="comma-separated batch sizes, e.g. 256,1024")
            p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                           help="also time torch.compile of the teacher")
            p.add_argument("--quick", action="store_true", help="one timed call per workload (smoke test)")
        p.add_argument("--config", default=None, help="YAML config (default: configs/demo.yaml)")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.seed=1 distill.alpha=0.5")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one stage; returns the process exit code (0 ok, 1 error, 2 config error, 75 requeue)."""
    parser = build_parser()
    # Overrides may also follow options (`bench teacher --config C a=b`), which argparse
    # alone cannot place: collect the leftovers that look like key=value.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    try:
        STAGES[args.stage][1](args)
    except ConfigError as exc:
        print(f"wakeword-dist {args.stage}: config error: {exc}", file=sys.stderr)
        return 2
    except TrainingStopped as exc:
        print(f"wakeword-dist {args.stage}: {exc}; exit {exc.exit_code} (requeue me)", file=sys.stderr)
        return exc.exit_code
    except (TrainingFailed, FileNotFoundError, ValueError, RuntimeError, FloatingPointError) as exc:
        print(f"wakeword-dist {args.stage}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def exit_with(code: int) -> None:
    """End the process with ``code`` through ``process_exit.end_process`` and this process's
    state (any ZeRO-3 teacher still alive is released, the process group torn down, a rank or a
    process that ran DeepSpeed leaves by ``os._exit``; why: wakeword_dist/process_exit.py)."""
    from wakeword_dist.process_exit import PROCESS, end_process

    end_process(code, PROCESS)


def console_main() -> None:
    exit_with(main())


if __name__ == "__main__":
    exit_with(main())

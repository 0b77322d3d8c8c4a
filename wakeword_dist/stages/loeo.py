"""`wakeword-dist loeo`: leave one engine out. A detector is only as good as its worst unseen voice.

For every TTS engine (json ``source``) in the training split: a teacher and ``compare.seeds`` x
{baseline, distill} students are trained without that engine (``data.exclude_sources``: its
clips are dropped from training, from val's clips and from val's streams, so θ never sees it
either), then tested on the held-out engine alone (``eval.test_sources``: its test clips and
all of its streams). Each held-out engine is its own experiment, ``<experiment>-loeo-<engine>``,
with the usual run folders; the summary goes to ``runs/<experiment>/loeo.json`` and
``loeo.png``: per engine, baseline vs distill clip AUC, FRR at θ and FA/h (mean over seeds).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from wakeword_dist.atomic import write_json_atomic
from wakeword_dist.config import Config
from wakeword_dist.data import reader

METRICS = ("clip_auc", "frr_at_target", "det_frr_at_target", "fa_per_hour", "stream_hours", "n_clips")


def engines_in(cfg: Config) -> list[str]:
    """The sources of the training split's clips (json members only; no audio decoded)."""
    train = reader.location(cfg.data.root) / "train"
    return sorted({s for s in reader.split_sources(train).values() if s})


def held_out_config(cfg: Config, engine: str) -> Config:
    """``cfg`` with ``engine`` left out of training and validation, and test restricted to it."""
    out = copy.deepcopy(cfg)
    out.run.experiment = f"{cfg.run.experiment}-loeo-{engine}"
    out.data.exclude_sources = sorted(set(cfg.data.exclude_sources) | {engine})
    out.data.include_sources = [s for s in cfg.data.include_sources if s != engine]
    out.eval.test_sources = [engine]
    return out


def summarize(reports: dict) -> dict:
    """{job: {seed: report}} -> {job: {metric: mean over seeds}, plus per-seed values}."""
    out = {}
    for job, by_seed in reports.items():
        row = {}
        for metric in METRICS:
            values = [float(r[metric]) for r in by_seed.values() if r.get(metric) is not None]
            row[metric] = float(np.mean(values)) if values else None
            row[f"{metric}_per_seed"] = values
        out[job] = row
    return out


def loeo(cfg: Config) -> dict:
    """Run every held-out engine (skipping finished runs); write loeo.json and loeo.png."""
    from wakeword_dist.stages.compare import run_jobs
    from wakeword_dist.stages.pipeline import ensure_teacher

    engines = engines_in(cfg)
    if len(engines) < 2:
        raise ValueError(f"{cfg.data.root}/train: leave-one-engine-out needs clips of >= 2 sources, "
                         f"found {engines}")
    root = Path(cfg.run.runs_dir) / cfg.run.experiment
    results = {}
    for i, engine in enumerate(engines, 1):
        sub = held_out_config(cfg, engine)
        print(f"\n=== leave out {engine} ({i}/{len(engines)}): {Path(sub.run.runs_dir) / sub.run.experiment} ===", flush=True)
        ensure_teacher(sub)
        results[engine] = summarize(run_jobs(sub))
    summary = {"experiment": cfg.run.experiment, "engines": engines,
               "target_fa_per_hour": cfg.eval.target_fa_per_hour, "per_engine": results}
    write_json_atomic(root / "loeo.json", summary)
    plot_loeo(results, root / "loeo.png", target_fa_per_hour=cfg.eval.target_fa_per_hour)
    print_loeo(results)
    return summary


def print_loeo(results: dict) -> None:
    print(f"\n{'held-out engine':18s} {'job':9s} {'clip AUC':>9s} {'FRR@θ':>9s} {'FRR@DET':>9s} {'FA/h':>9s} "
          f"{'stream h':>9s}")
    for engine, jobs in results.items():
        for job, row in jobs.items():
            cells = [row.get(m) for m in ("clip_auc", "frr_at_target", "det_frr_at_target", "fa_per_hour",
                                          "stream_hours")]
            print(f"{engine:18s} {job:9s} " + " ".join(f"{v:>9.3f}" if v is not None else f"{'-':>9s}"
                                                      for v in cells))


def plot_loeo(results: dict, path: Path, *, target_fa_per_hour: float) -> Path:
    """Grouped bars per held-out engine: clip AUC and FRR at θ, baseline vs distill."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = list(results)
    jobs = sorted({job for r in results.values() for job in r})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(len(jobs), 1)
    for ax, metric, title in ((axes[0], "clip_auc", "clip AUC (higher is better)"),
                              (axes[1], "frr_at_target", f"FRR at θ for ≤ {target_fa_per_hour:g} FA/h on val")):
        for j, job in enumerate(jobs):
            values = [results[e].get(job, {}).get(metric) for e in engines]
            ax.bar(np.arange(len(engines)) + j * width, [np.nan if v is None else v for v in values],
                   width, label=job)
        ax.set_xticks(np.arange(len(engines)) + width * (len(jobs) - 1) / 2, engines)
        ax.set_xlabel("held-out engine (never trained on)")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path

"""Baseline vs distilled: per-job mean ± std over seeds, paired per-seed difference with CI.

Input: ``{job: {seed: report dict}}`` (report dicts from ``wakeword_dist.eval.report``).
The paired difference is other job − baseline on the seeds both jobs have, with a 95 %
Student-t confidence interval (n − 1 degrees of freedom).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wakeword_dist.atomic import write_json_atomic

# det_frr_at_target: FRR at the target FA/h on test's own DET curve (θ not from val; docs/results.md)
DEFAULT_METRICS = ("f1_macro", "frr_at_target", "det_frr_at_target", "fa_per_hour", "hard_negative_far", "accuracy")

# two-sided 95 % Student-t quantiles t_{0.975, dof}, used when scipy is missing
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}


def t_quantile_975(dof: int) -> float:
    """t_{0.975} with ``dof`` degrees of freedom (scipy if present, else the table above,
    taking the nearest smaller tabulated dof — slightly conservative — and 1.960 past 60)."""
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, dof))
    except ImportError:
        if dof > 60:
            return 1.960
        return _T975[max(k for k in _T975 if k <= dof)]


def describe(values: Sequence[float]) -> dict:
    """{mean, std (sample, ddof=1), n, ci95 [lo, hi]}; NaN std/CI when n < 2."""
    x = np.asarray([v for v in values], dtype=np.float64)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    half = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half]}


def _baseline_name(jobs: Sequence[str], baseline_job: str | None) -> str:
    if baseline_job is not None:
        if baseline_job not in jobs:
            raise KeyError(f"baseline job {baseline_job!r} not among {list(jobs)}")
        return baseline_job
    matches = [j for j in jobs if "baseline" in j]
    if len(matches) != 1:
        raise ValueError(f"cannot tell the baseline job among {list(jobs)}; pass baseline_job=")
    return matches[0]


def aggregate(reports: Mapping[str, Mapping], metrics: Sequence[str] | None = None, *,
              baseline_job: str | None = None) -> dict:
    """Seed statistics per job and paired differences against the baseline job.

    reports: {job: {seed: report}}; the baseline is ``baseline_job`` or the one job whose
    name contains "baseline". Returns
      {"metrics": [...], "baseline": job, "seeds": {job: [seed, ...]},
       "jobs": {job: {metric: {mean, std, n, ci95, values {seed: v}}}},
       "paired": {job: {metric: {mean, std, n, ci95, diffs {seed: job − baseline}}}}}
    (one "paired" entry per non-baseline job, on the seeds both jobs have).
    Seeds become strings (JSON keys).
    """
    jobs = list(reports)
    base = _baseline_name(jobs, baseline_job)
    if metrics is None:  # the defaults every report has (reports of older runs lack hard_negative_far)
        metrics = [m for m in DEFAULT_METRICS
                   if all(m in r for by_seed in reports.values() for r in by_seed.values())]
    out: dict = {"metrics": list(metrics), "baseline": base, "seeds": {}, "jobs": {}, "paired": {}}
    for job, by_seed in reports.items():
        seeds = sorted(by_seed, key=str)
        out["seeds"][job] = [str(s) for s in seeds]
        out["jobs"][job] = {}
        for m in metrics:
            values = {str(s): float(by_seed[s][m]) for s in seeds}
            out["jobs"][job][m] = {**describe(list(values.values())), "values": values}
    for job in jobs:
        if job == base:
            continue
        common = [s for s in out["seeds"][job] if s in out["seeds"][base]]
        out["paired"][job] = {}
        for m in metrics:
            diffs = {s: out["jobs"][job][m]["values"][s] - out["jobs"][base][m]["values"][s]
                     for s in common}
            out["paired"][job][m] = {**describe(list(diffs.values())), "diffs": diffs}
    return out


def write_comparison(comparison: dict, path: str | Path) -> Path:
    """``comparison.json`` written atomically (temp file + os.replace); NaN → null."""
    return write_json_atomic(path, comparison)


def _fmt(mean: float, spread: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.4f}" + (f" ± {spread:.4f}" if np.isfinite(spread) else "")


def print_table(comparison: dict, console=None):
    """Rich table: metric × job (mean ± std) and paired difference [95 % CI]; returns it."""
    from rich.console import Console
    from rich.table import Table

    base = comparison["baseline"]
    jobs = list(comparison["jobs"])
    n = {j: len(comparison["seeds"][j]) for j in jobs}
    table = Table(title=f"baseline = {base}; mean ± sample std over seeds; Δ = job − {base}")
    table.add_column("metric")
    for j in jobs:
        table.add_column(f"{j} (n={n[j]})", justify="right")
    for j in comparison["paired"]:
        table.add_column(f"Δ {j} [95% CI]", justify="right")
    for m in comparison["metrics"]:
        row = [m] + [_fmt(comparison["jobs"][j][m]["mean"], comparison["jobs"][j][m]["std"]) for j in jobs]
        for j, by_metric in comparison["paired"].items():
            d = by_metric[m]
            lo, hi = d["ci95"]
            ci = f" [{lo:+.4f}, {hi:+.4f}]" if np.isfinite(lo) else ""
            row.append(f"{d['mean']:+.4f}{ci}" if np.isfinite(d["mean"]) else "–")
        table.add_row(*row)
    (console or Console()).print(table)
    return table


def plot_comparison(comparison: dict, det_curves: Mapping, path: str | Path) -> Path:
    """comparison.png: one bar panel per metric (mean, error bar = sample std, dots = seeds)
    plus a DET panel (each seed thin, per-job mean bold).

    det_curves: {job: {seed: det}} or flat {"<job> seed<k>": det} (grouped by job prefix).
    Mean DET per job averages FRR and FA/h at each threshold (all runs share the grid).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = list(comparison["jobs"])
    metrics = comparison["metrics"]
    grouped = _group_curves(det_curves, jobs)
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(3.2 * (len(metrics) + 1), 3.6))
    colors = {j: f"C{i}" for i, j in enumerate(jobs)}
    for ax, m in zip(axes, metrics):
        for i, j in enumerate(jobs):
            s = comparison["jobs"][j][m]
            std = s["std"] if np.isfinite(s["std"]) else 0.0
            ax.bar(i, s["mean"], yerr=std, color=colors[j], alpha=0.7, capsize=4)
            vals = list(s["values"].values())
            ax.plot([i] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(range(len(jobs)), jobs)
        ax.set_title(m)
    ax = axes[-1]
    all_fa = [f for curves in grouped.values() for d in curves for f in d["fa_per_hour"]
              if f is not None and np.isfinite(f) and f > 0]
    floor = 0.5 * min(all_fa) if all_fa else 1e-2
    for j, curves in grouped.items():
        for d in curves:
            ax.plot(np.maximum(_arr(d["fa_per_hour"]), floor), 100 * _arr(d["frr"]),
                    color=colors.get(j, "gray"), lw=0.6, alpha=0.5)
        if curves and len({len(d["frr"]) for d in curves}) == 1:
            fa = np.nanmean([_arr(d["fa_per_hour"]) for d in curves], axis=0)
            frr = np.nanmean([_arr(d["frr"]) for d in curves], axis=0)
            ax.plot(np.maximum(fa, floor), 100 * frr, color=colors.get(j, "gray"), lw=2, label=j)
    ax.set_xscale("log")
    ax.set_xlabel(f"FA per hour (0 drawn at {floor:.2g})")
    ax.set_ylabel("FRR (%)")
    ax.set_title("DET")
    ax.grid(True, which="both", alpha=0.3)
    if grouped:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _arr(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _group_curves(det_curves: Mapping, jobs: Sequence[str]) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for name, value in det_curves.items():
        if isinstance(value, Mapping) and "frr" not in value:          # {job: {seed: det}}
            grouped.setdefault(name, []).extend(value.values())
        else:                                                           # {"job seedK": det}
            job = next((j for j in sorted(jobs, key=len, reverse=True) if str(name).startswith(j)),
                       str(name))
            grouped.setdefault(job, []).append(value)
    return grouped


def log_to_wandb(comparison: dict, project: str, group: str, mode: str = "offline",
                 out_dir: str | Path | None = None, name: str = "compare") -> str | None:
    """Log the comparison as a wandb.Table (+ summary scalars) in a job_type="compare" run.

    mode: "online" | "offline" | "disabled" (honoured as given). out_dir: wandb's dir
    (None → WANDB_DIR / cwd). Returns the run's local directory (None when disabled).
    """
    import wandb

    kwargs = {"dir": str(out_dir)} if out_dir is not None else {}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, group=group, job_type="compare", name=name, mode=mode,
                     config={"baseline": comparison["baseline"], "seeds": comparison["seeds"]},
                     reinit="create_new", **kwargs)
    try:
        columns = ["metric", "job", "mean", "std", "n", "diff_vs_baseline", "diff_ci95_lo", "diff_ci95_hi"]
        rows = []
        for m in comparison["metrics"]:
            for job, stats in comparison["jobs"].items():
                s = stats[m]
                p = comparison["paired"].get(job, {}).get(m)
                rows.append([m, job, _num(s["mean"]), _num(s["std"]), s["n"],
                             _num(p["mean"]) if p else None, _num(p["ci95"][0]) if p else None,
                             _num(p["ci95"][1]) if p else None])
                run.summary[f"compare/{job}/{m}_mean"] = _num(s["mean"])
                if p:
                    run.summary[f"compare/{job}/{m}_diff"] = _num(p["mean"])
        run.log({"compare/summary": wandb.Table(columns=columns, data=rows)})
        run_dir = None if mode == "disabled" else str(Path(run.dir).parent)
    finally:
        run.finish()
    return run_dir


def _num(v):
    return None if v is None or not np.isfinite(v) else float(v)

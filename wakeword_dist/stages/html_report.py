"""`wakeword-dist report`: one self-contained ``runs/<experiment>/report.html``.

Reads only what the other stages wrote (no model is loaded, nothing is recomputed):

  comparison.json, comparison.png          compare: mean ± std per job, paired Δ with 95 % CI
  <job>/seed<k>/report.json, det.png       evaluate: one row per (job, seed)
  teacher/best/quality.json                train-teacher: the teacher's val figures
  <job>/seed<k>/config.yaml                train: the baseline / distill config differences
  <job>/seed<k>/export.json                export: ONNX sizes, parity, int8 minus fp32
  loeo.json, report.json["per_engine"]     leave-one-engine-out / per-engine figures, if any
  report.json["false_accepts"]             what each test false accept at θ heard, by kind

Images are inlined as base64 PNG ``data:`` URIs and there is no script or external style, so
the one file can be mailed, attached to a ticket or opened from an artefact store offline. A
missing input leaves its section with a one-line note naming the file, never a failure.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from wakeword_dist.atomic import write_bytes_atomic

REPORT_NAME = "report.html"
NOT_RUNS = {"teacher", "annotated", "wandb"}   # folders of runs/<exp>/ that hold no (job, seed) runs
SEED_DIR = re.compile(r"^seed(\d+)$")
# per-seed columns: (report.json key, header); FRR / FA/h are at val's θ, on test
SEED_COLUMNS = (("f1_macro", "F1 macro"), ("accuracy", "accuracy"), ("frr_at_target", "FRR at θ"),
                ("det_frr_at_target", "FRR at target, θ on test"),
                ("fa_per_hour", "FA/h"), ("threshold", "θ (from val)"), ("meets_target", "FA/h ≤ target"),
                ("clip_auc", "clip AUC"), ("clip_eer", "clip EER"), ("det_eer", "DET EER"),
                ("best_step", "best step"), ("stream_hours", "stream h"))
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#1b1b1b;max-width:1150px}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc;padding-bottom:2px}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}.note{color:#666;font-style:italic}
.pos{color:#0a6d1f}.neg{color:#a31515}img{max-width:100%;border:1px solid #ddd}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{margin:0;width:270px}
figcaption{font-size:0.8em;color:#444}
"""


# ----------------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict | None:
    """The file's JSON object, or None when it is missing (a stage not run yet)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def find_runs(root: Path) -> dict[str, dict[int, Path]]:
    """{job: {seed: run folder}} for every ``<job>/seed<k>/`` under runs/<experiment>/."""
    runs: dict[str, dict[int, Path]] = {}
    for job_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in NOT_RUNS):
        seeds = {int(m.group(1)): d for d in job_dir.iterdir() if d.is_dir() and (m := SEED_DIR.match(d.name))}
        if seeds:
            runs[job_dir.name] = dict(sorted(seeds.items()))
    return runs


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested config sections -> {"section.key": value}."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------- formatting
def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 4) -> str:
    """A figure as text: None / NaN (an undefined metric, null in strict JSON) as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,d}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _esc(value)


def _sci(value) -> str:
    """Small differences (probabilities, 1e-8 .. 1e-2) in scientific notation."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.2e}"


def _signed(value) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    css = "pos" if value > 0 else "neg" if value < 0 else ""
    return f'<span class="{css}">{value:+.4f}</span>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are already HTML (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _img(path: Path, alt: str) -> str:
    """The PNG inlined as a base64 ``data:`` URI (the page needs no other file)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


# ----------------------------------------------------------------------------- sections
def _comparison_section(root: Path) -> str:
    comparison = _read_json(root / "comparison.json")
    if comparison is None:
        return _note(f"{_esc(root / 'comparison.json')} not found: run <code>wakeword-dist compare</code>.")
    base, jobs = comparison["baseline"], list(comparison["jobs"])
    header = ["metric", *(f"{_esc(j)} (n={len(comparison['seeds'][j])})" for j in jobs),
              *(f"Δ {_esc(j)} − {_esc(base)} [95 % CI]" for j in comparison["paired"])]
    rows = []
    for m in comparison["metrics"]:
        row = [_esc(m)]
        for j in jobs:
            s = comparison["jobs"][j][m]
            spread = f" ± {_num(s['std'])}" if s["std"] is not None and math.isfinite(s["std"]) else ""
            row.append(_num(s["mean"]) + spread)
        for by_metric in comparison["paired"].values():
            d = by_metric[m]
            lo, hi = d["ci95"]
            ci = f" [{lo:+.4f}, {hi:+.4f}]" if lo is not None and hi is not None else ""
            row.append(_signed(d["mean"]) + ci)
        rows.append(row)
    note = _note(f"mean ± sample std over seeds; Δ = paired per-seed difference against {_esc(base)}, "
                 "95 % Student-t interval (n − 1 dof). FRR and FA/h are on test at the θ chosen on val.")
    plot = root / "comparison.png"
    figure = _img(plot, "comparison: bars per metric and DET curves") if plot.is_file() else \
        _note(f"{_esc(plot)} not found.")
    return _table(header, rows) + note + figure


def _seed_section(runs: dict[str, dict[int, Path]]) -> str:
    rows, thumbs = [], []
    for job, seeds in runs.items():
        for seed, run_dir in seeds.items():
            report = _read_json(run_dir / "report.json")
            if report is None:
                rows.append([_esc(job), str(seed), "no report.json", *[""] * (len(SEED_COLUMNS) - 1)])
                continue
            rows.append([_esc(job), str(seed), *(_num(report.get(key)) for key, _ in SEED_COLUMNS)])
            if (run_dir / "det.png").is_file():
                thumbs.append(f"<figure>{_img(run_dir / 'det.png', f'DET {job} seed{seed}')}"
                              f"<figcaption>{_esc(job)} seed{seed}: DET on test</figcaption></figure>")
    if not rows:
        return _note("no <code>&lt;job&gt;/seed&lt;k&gt;/</code> runs found.")
    table = _table(["job", "seed", *(h for _, h in SEED_COLUMNS)], rows)
    return table + (f'<div class="thumbs">{"".join(thumbs)}</div>' if thumbs else "")


def _teacher_section(root: Path) -> str:
    path = root / "teacher" / "best" / "quality.json"
    quality = _read_json(path)
    if quality is None:
        return _note(f"{_esc(path)} not found (a given HF teacher, or train-teacher not run).")
    val = quality.get("val", {})
    rows = [[_esc(k), _num(v)] for k, v in val.items() if not isinstance(v, (dict, list))]
    labels = ", ".join(_esc(n) for n in quality.get("label_names", []))
    return _table(["val metric", "value"], rows) + _note(f"labels: {labels}. Teacher validation scores clips "
                                                         "only (no streams): FA/h-based figures are undefined (–).")


def _config_section(runs: dict[str, dict[int, Path]]) -> str:
    if "baseline" not in runs or "distill" not in runs:
        return _note("needs both a baseline and a distill run.")
    common = [s for s in runs["baseline"] if s in runs["distill"]]
    if not common:
        return _note("no seed has both a baseline and a distill run.")
    seed = common[0]
    paths = {job: runs[job][seed] / "config.yaml" for job in ("baseline", "distill")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        return _note(f"{_esc(missing[0])} not found.")
    flat = {job: flatten(yaml.safe_load(p.read_text()) or {}) for job, p in paths.items()}
    keys = sorted(set(flat["baseline"]) | set(flat["distill"]))
    diff = [k for k in keys if flat["baseline"].get(k, "(absent)") != flat["distill"].get(k, "(absent)")]
    rows = [[_esc(k), _esc(flat["baseline"].get(k, "(absent)")), _esc(flat["distill"].get(k, "(absent)"))]
            for k in diff]
    table = _table(["key", "baseline", "distill"], rows) if rows else _note("the two configs are identical.")
    return table + _note(f"seed {seed}: {len(diff)} of {len(keys)} resolved keys differ; the rest are equal.")


def _export_section(runs: dict[str, dict[int, Path]]) -> str:
    rows = []
    metrics: list[str] = []
    for job, seeds in runs.items():
        for seed, run_dir in seeds.items():
            export = _read_json(run_dir / "export.json")
            if export is None:
                continue
            deltas = export.get("int8_minus_fp32") or {}
            metrics = metrics or list(deltas)
            diff = max((export.get("max_abs_diff") or {}).values(), default=None)
            int8_diff = max((export.get("int8_max_abs_diff") or {}).values(), default=None)
            rows.append((job, seed, export, diff, int8_diff, deltas))
    if not rows:
        return _note("no export.json found: run <code>wakeword-dist export</code>.")
    header = ["job", "seed", "fp32 KiB", "int8 KiB", "max |ort − torch|", "max |int8 − torch|",
              *(f"test {_esc(m)} fp32 → int8 (Δ)" for m in metrics)]
    table = []
    for job, seed, export, diff, int8_diff, deltas in rows:
        fp32, int8 = export.get("test_fp32") or {}, export.get("test_int8") or {}
        cells = [f"{_num(fp32.get(m))} → {_num(int8.get(m))} ({_signed(deltas.get(m))})" for m in metrics]
        int8_kib = export["int8_bytes"] / 1024 if export.get("int8_bytes") else None
        table.append([_esc(job), str(seed), _num(export["onnx_bytes"] / 1024, 0), _num(int8_kib, 0),
                      _sci(diff), _sci(int8_diff), *cells])
    return _table(header, table) + _note("parity: max absolute difference of class probabilities on the "
                                         "export's check batches; test figures at val's θ.")


def _scalar_table(mapping: Mapping, first: str) -> str | None:
    """{row: {column: scalar}} as a table, or None if the mapping has another shape."""
    if not mapping or not all(isinstance(v, Mapping) for v in mapping.values()):
        return None
    columns: list[str] = []
    for v in mapping.values():
        columns += [k for k, x in v.items() if not isinstance(x, (Mapping, list)) and k not in columns]
    if not columns:
        return None
    rows = [[_esc(name), *(_num(v.get(c)) for c in columns)] for name, v in mapping.items()]
    return _table([first, *map(_esc, columns)], rows)


def _nested_tables(mapping: Mapping, first: str, depth: int = 0) -> str:
    """Tables for any {name: {engine: {metric: value}}} nesting (shape not fixed yet); two levels."""
    table = _scalar_table(mapping, first)
    if table is not None:
        return table
    parts = []
    for name, value in mapping.items():
        if isinstance(value, Mapping) and depth < 2:
            inner = _nested_tables(value, first, depth + 1)
            if inner:
                parts.append(f"<h4>{_esc(name)}</h4>{inner}")
    return "".join(parts)


def _loeo_table(loeo: Mapping) -> str | None:
    """loeo.json's {"per_engine": {held-out engine: {job: {metric: mean over seeds}}}} as one
    table (rows: engine x job), or None if it has another shape."""
    per_engine = loeo.get("per_engine")
    if not isinstance(per_engine, Mapping) or not all(isinstance(j, Mapping) for j in per_engine.values()):
        return None
    rows = {(engine, job): row for engine, jobs in per_engine.items() for job, row in jobs.items()
            if isinstance(row, Mapping)}
    columns = [k for k in dict.fromkeys(k for row in rows.values() for k, v in row.items()
                                        if not isinstance(v, (Mapping, list)))]
    if not rows or not columns:
        return None
    body = [[_esc(engine), _esc(job), *(_num(row.get(c)) for c in columns)] for (engine, job), row in rows.items()]
    return _table(["held-out engine", "job", *map(_esc, columns)], body)


def _report_entries(runs: dict[str, dict[int, Path]], key: str):
    """``(job, seed, report.json[key])`` for every run whose report.json holds ``key`` as a mapping."""
    for job, seeds in runs.items():
        for seed, run_dir in seeds.items():
            entry = (_read_json(run_dir / "report.json") or {}).get(key)
            if isinstance(entry, Mapping):
                yield job, seed, entry


def _engine_section(root: Path, runs: dict[str, dict[int, Path]]) -> str:
    parts = []
    loeo = _read_json(root / "loeo.json")
    if loeo is not None:
        table = _loeo_table(loeo) or _nested_tables(loeo, "engine") or \
            _note("loeo.json has no {engine: {metric: value}} tables.")
        note = _note("each held-out engine: teacher and students trained without it, tested on it alone; "
                     "mean over seeds, FRR / FA/h at the θ chosen on val (which never saw the engine).")
        plot = _img(root / "loeo.png", "leave one engine out") if (root / "loeo.png").is_file() else ""
        parts.append("<h3>Leave one engine out (loeo.json)</h3>" + table + note + plot)
    rows: list[list[str]] = []
    columns: list[str] = []
    for job, seed, per_engine in _report_entries(runs, "per_engine"):
        for engine, figures in per_engine.items():
            if isinstance(figures, Mapping):
                columns += [k for k, v in figures.items() if k not in columns and not isinstance(v, (Mapping, list))]
                rows.append([job, seed, engine, figures])
    if rows:
        body = [[_esc(job), str(seed), _esc(engine), *(_num(figures.get(c)) for c in columns)]
                for job, seed, engine, figures in rows]
        parts.append("<h3>Per engine, in-domain test (report.json)</h3>"
                     + _table(["job", "seed", "engine", *map(_esc, columns)], body)
                     + _note("each source's test clips and streams at the run's θ (FA/h – where a source has no streams)."))
    return "".join(parts) or _note("no loeo.json and no per_engine section in any report.json: omitted.")


def _false_accept_section(runs: dict[str, dict[int, Path]]) -> str:
    """report.json's false_accepts: per run, how many test false accepts at θ heard a near miss,
    plain speech or noise only, and the first few with what was said."""
    rows, examples = [], []
    kinds: list[str] = []
    for job, seed, fa in _report_entries(runs, "false_accepts"):
        by_kind = fa.get("by_kind", {})
        kinds += [k for k in by_kind if k not in kinds]
        rows.append((job, seed, by_kind))
        examples += [[_esc(job), str(seed), _esc(f.get("stream")), _num(f.get("time_s"), 2), _esc(f.get("kind")),
                      _esc(" | ".join(f.get("heard", [])))] for f in fa.get("first", [])[:3]]
    if not rows:
        return _note("no false_accepts in any report.json (streams without segments, or none scored): omitted.")
    counts = [[_esc(job), str(seed), *(str(by_kind.get(k, 0)) for k in kinds)] for job, seed, by_kind in rows]
    return (_table(["job", "seed", *map(_esc, kinds)], counts)
            + _note("test false accepts at θ by what most of the detector's window held: confusable = a "
                    "curated near miss, speech = other speech, none = noise only.")
            + (_table(["job", "seed", "stream", "time s", "kind", "heard"], examples) if examples else ""))


# ----------------------------------------------------------------------------- page
def build_html(root: str | Path) -> str:
    """The whole page for runs/<experiment>/ as one HTML string."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no run folder {root} (run `wakeword-dist pipeline` first)")
    runs = find_runs(root)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("Baseline vs distilled", _comparison_section(root)),
        ("Per seed (test, θ from val)", _seed_section(runs)),
        ("Teacher quality (val)", _teacher_section(root)),
        ("Config differences, baseline vs distill", _config_section(runs)),
        ("Export (ONNX, int8)", _export_section(runs)),
        ("Per engine / leave one engine out", _engine_section(root, runs)),
        ("What the false accepts heard (test)", _false_accept_section(runs)),
    ]
    body = "".join(f'<h2 id="s{i}">{title}</h2>{content}' for i, (title, content) in enumerate(sections))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>wakeword-dist report: {_esc(root.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>wakeword-dist report: {_esc(root.name)}</h1>"
            f'<p class="note">{_esc(root)} · written {now}</p>{body}</body></html>\n')


def write_html_report(root: str | Path) -> Path:
    """Write ``<root>/report.html`` atomically; returns its path."""
    path = Path(root) / REPORT_NAME
    write_bytes_atomic(path, build_html(root).encode("utf-8"))
    return path

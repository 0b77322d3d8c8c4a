"""report.html: built from a real tiny pipeline's outputs and rendered by a real headless
Chromium (Debian `chromium`; launch/test.sh installs it as root). The page must load, every
image must be an inline PNG that decodes, and the screenshot must show the plots' colours."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wakeword_dist.cli import main
from wakeword_dist.stages.html_report import build_html, write_html_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")


class _Page(HTMLParser):
    """The <img> sources, the table cells and the headings of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.cells, self.headings, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag in ("td", "h2", "h3"):
            self._in, self._text = tag, ""

    def handle_data(self, data):
        if self._in:
            self._text += data

    def handle_endtag(self, tag):
        if tag == self._in:
            (self.cells if tag == "td" else self.headings).append(self._text.strip())
            self._in = None


def _chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}", *args, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _near(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 14) -> int:
    """Pixels within ``tol`` (0-255 per channel) of ``colour``."""
    return int((np.abs(rgb.astype(int) - np.array(colour)).max(axis=-1) <= tol).sum())


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_chromium_with_its_images(pipeline_run, tmp_path):
    root = pipeline_run["root"]
    page = root / "report.html"
    assert page.is_file(), "the pipeline writes report.html at the end"

    dom = _chromium(page.as_uri(), tmp_path, "--dump-dom").stdout  # the DOM after Chromium loaded it
    parsed = _Page()
    parsed.feed(dom)
    runs = [root / job / f"seed{seed}" for job in ("baseline", "distill") for seed in (0, 1)]
    assert len(parsed.images) == 1 + len(runs), "comparison.png + one DET per run"
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        image.load()
        assert image.width > 300 and image.height > 200
    for heading in ("Baseline vs distilled", "Per seed", "Teacher quality", "Config differences", "Export"):
        assert any(h.startswith(heading) for h in parsed.headings), heading
    # the figures are the stages' own: each run's test F1 and the teacher's val accuracy
    for run_dir in runs:
        assert f"{json.loads((run_dir / 'report.json').read_text())['f1_macro']:.4f}" in parsed.cells
    quality = json.loads((root / "teacher" / "best" / "quality.json").read_text())
    assert f"{quality['val']['accuracy']:.4f}" in parsed.cells
    assert "train.job" in parsed.cells, "the baseline/distill config difference is listed"
    # evaluate's per-engine figures (eval.per_engine): one row per (job, seed, engine)
    per_engine = json.loads((runs[0] / "report.json").read_text())["per_engine"]
    assert "Per engine, in-domain test (report.json)" in parsed.headings
    for engine, figures in per_engine.items():
        assert parsed.cells.count(engine) == len(runs), engine
    assert "no loeo.json" not in dom and "Leave one engine out (loeo.json)" not in parsed.headings

    shot = tmp_path / "report.png"
    _chromium(page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,2000")
    rgb = np.asarray(Image.open(shot).convert("RGB"))
    assert rgb.shape[:2] == (2000, 1200)
    assert (rgb.min(axis=-1) < 250).mean() > 0.03, "the screenshot is (nearly) blank"
    # matplotlib's C0 / C1 bars at alpha 0.7 on white: only the decoded images have these colours
    assert _near(rgb, (98, 160, 203)) > 2000 and _near(rgb, (255, 165, 86)) > 2000


def test_missing_inputs_leave_notes_and_extra_sections_render(tmp_path):
    root = tmp_path / "exp"
    (root / "distill" / "seed0").mkdir(parents=True)
    (root / "distill" / "seed0" / "report.json").write_text(json.dumps({
        "f1_macro": 0.5, "per_engine": {"espeak-ng": {"frr_at_target": 0.25, "fa_per_hour": None}},
        "false_accepts": {"by_kind": {"confusable": 2, "speech": 1}, "first": [
            {"stream": "stream-000040", "time_s": 12.3, "kind": "confusable", "heard": ["say nova", "stop"]}]}}))
    # the shape stages/loeo.py writes: per held-out engine, per job, means over seeds
    (root / "loeo.json").write_text(json.dumps({"experiment": "exp", "engines": ["flite"], "per_engine": {
        "flite": {"distill": {"clip_auc": 0.71, "clip_auc_per_seed": [0.7, 0.72], "n_clips": 40}}}}))
    page = build_html(root)
    for note in (f"{root / 'comparison.json'} not found", f"{root / 'teacher/best/quality.json'} not found",
                 "needs both a baseline and a distill run", "no export.json found"):
        assert note in page, note
    parsed = _Page()
    parsed.feed(page)
    windows = [parsed.cells[i:i + 5] for i in range(len(parsed.cells))]
    assert ["distill", "0", "espeak-ng", "0.2500", "–"] in windows, "per-engine table (null FA/h: –)"
    assert ["distill", "0", "2", "1"] in [w[:4] for w in windows], "false accepts by kind"
    assert parsed.cells[-6:] == ["distill", "0", "stream-000040", "12.30", "confusable", "say nova | stop"]
    assert ["flite", "distill", "0.7100", "40"] in [parsed.cells[i:i + 4] for i in range(len(parsed.cells))], \
        "leave-one-engine-out table (the per-seed lists are not columns)"
    assert parsed.images == []


def test_bad_json_is_one_line_naming_the_file(tmp_path, capsys):
    root = tmp_path / "runs" / "exp"
    root.mkdir(parents=True)
    (root / "comparison.json").write_text("{not json")
    assert main(["report", f"run.runs_dir={tmp_path / 'runs'}", "run.experiment=exp"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(root / "comparison.json") in err
    (root / "comparison.json").unlink()
    assert write_html_report(root) == root / "report.html"

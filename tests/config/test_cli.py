"""The CLI: every stage has --help, errors are one line with an exit code, inspect works."""

import subprocess
import sys

import pytest

from tests.conftest import REPO
from wakeword_dist.cli import STAGES, main

EXPECTED = {"synth", "build-shards", "inspect-shards", "train-teacher", "train", "evaluate", "export", "compare",
            "pipeline", "report", "bench", "models"}


def test_all_stages_exist():
    assert EXPECTED <= set(STAGES)


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_each_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as info:
        main([stage, "--help"])
    assert info.value.code == 0
    assert STAGES[stage][0].split()[0] in capsys.readouterr().out


def test_config_error_is_one_line_exit_2(capsys):
    assert main(["train", "distill.alpah=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("wakeword-dist train: config error: unknown config key 'distill.alpah'; "
                   "did you mean 'distill.alpha'?")


def test_missing_shards_are_named(tmp_path, capsys):
    code = main(["train", f"data.root={tmp_path / 'nowhere'}", f"run.runs_dir={tmp_path}", "logging.wandb=disabled"])
    assert code == 1
    err = capsys.readouterr().err
    assert "nowhere/train/index.json" in err and len(err.strip().splitlines()) == 1


def test_models_lists_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny_conv" in out and "bc_resnet8" in out and "params" in out


def test_inspect_shards_on_the_tiny_dataset(tiny_shards, capsys):
    assert main(["inspect-shards", f"data.root={tiny_shards}"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "stream" in out


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "wakeword_dist", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "pipeline" in proc.stdout

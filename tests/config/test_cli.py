"""The CLI: every stage has --help, errors are one line with an exit code, inspect works."""

import os
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


_EXIT_PROGRAM = """
import atexit, os, sys
from wakeword_dist.process_exit import ExitState, end_process

class Engine:  # a stand-in DeepSpeed engine: end_process must destroy it first
    def destroy(self):
        print("engine destroyed")
        if os.environ.get("BREAK_DESTROY"):
            raise RuntimeError("destroy failed")

atexit.register(lambda: print("interpreter teardown ran"))
state = ExitState()
if os.environ.get("WITH_ENGINE"):
    state.add_engine(Engine())
print("unflushed line", end="")  # hard_exit must flush it
end_process(int(sys.argv[1]), state)
print("after end_process")
"""


@pytest.mark.parametrize("env, code, hard, out_code", [
    ({}, 3, False, 3),                                   # one plain process: sys.exit, teardown runs
    ({"WITH_ENGINE": "1"}, 0, True, 0),                  # DeepSpeed ran: engine released, os._exit
    ({"WORLD_SIZE": "2"}, 4, True, 4),                   # a launched rank: os._exit
    ({"WITH_ENGINE": "1", "BREAK_DESTROY": "1"}, 0, True, 1),  # failed teardown: still hard, code 1
])
def test_end_process_is_the_one_exit(env, code, hard, out_code, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _EXIT_PROGRAM, str(code)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **env}, timeout=120)
    assert proc.returncode == out_code, proc.stderr[-2000:]
    assert "unflushed line" in proc.stdout and "after end_process" not in proc.stdout
    assert ("interpreter teardown ran" in proc.stdout) is not hard
    assert ("engine destroyed" in proc.stdout) is ("WITH_ENGINE" in env)

"""`launch/train.py` with injected faults, for tests/reliability (under `accelerate launch` or alone).

Nothing else changes: same CLI, same recipe, same checkpoint code. Faults, by environment:

WWD_HANG_IN_CHECKPOINT=<step>, WWD_HANG_MARKER=<file>: rank 0 stops for good while writing
    `train_state.json` of the checkpoint of that step, i.e. after every rank's Accelerate state is
    in `.tmp-step-N/` but before the folder is renamed: the moment a node crash or `kill -9` hits
    a checkpoint half way. It first writes its pid to the marker file, so the test knows.
WWD_NAN_AT=<rank>:<step>: that rank's student outputs NaN on that step (0-based index of the step
    being taken), so only one rank sees a non-finite loss.
WWD_SIGNAL_IN_SETUP=<signal name>: the process sends itself that signal during `Recipe.setup`
    (while building the augmenter), as a preemption notice arriving while a job starts.
"""

import os
import runpy
import signal
import time
from pathlib import Path

from wakeword_dist.train import checkpoint, data_setup
from wakeword_dist.train import recipe as recipe_module

if "WWD_HANG_IN_CHECKPOINT" in os.environ:
    HANG_STEP = int(os.environ["WWD_HANG_IN_CHECKPOINT"])
    MARKER = Path(os.environ["WWD_HANG_MARKER"])
    _write = checkpoint.write_json_atomic

    def _write_or_hang(path, obj, **kw):
        path = Path(path)
        if path.name == checkpoint.TRAIN_STATE and path.parent.name == f".tmp-{checkpoint.checkpoint_name(HANG_STEP)}":
            MARKER.write_text(str(os.getpid()))
            while True:
                time.sleep(60)
        return _write(path, obj, **kw)

    checkpoint.write_json_atomic = _write_or_hang

if "WWD_NAN_AT" in os.environ:
    NAN_RANK, NAN_STEP = (int(x) for x in os.environ["WWD_NAN_AT"].split(":"))
    _train_step = recipe_module.train_step  # the one step (train/step.py), as the recipe calls it

    def _train_step_with_nan(parts, batch, step, *rest):
        if parts.accelerator.process_index != NAN_RANK or step != NAN_STEP:
            return _train_step(parts, batch, step, *rest)
        student = parts.accelerator.unwrap_model(parts.model)
        handle = student.register_forward_hook(lambda module, args, out: out * float("nan"))
        try:
            return _train_step(parts, batch, step, *rest)
        finally:
            handle.remove()

    recipe_module.train_step = _train_step_with_nan

if "WWD_SIGNAL_IN_SETUP" in os.environ:
    SIGNAL = signal.Signals[os.environ["WWD_SIGNAL_IN_SETUP"]]
    _augmenter = data_setup.augmenter

    def _augmenter_then_signal(*args, **kw):
        os.kill(os.getpid(), SIGNAL)
        return _augmenter(*args, **kw)

    data_setup.augmenter = _augmenter_then_signal

runpy.run_path(str(Path(__file__).resolve().parents[2] / "launch" / "train.py"), run_name="__main__")

"""Safe loading and atomic writes.

- Nothing in the package unpickles: `torch.load` only with weights_only=True, no pickle / yaml.load
  / np.load(allow_pickle=True) / eval / trust_remote_code=True (AST audit).
- Checkpoint files: the model is safetensors; every pickle-format file Accelerate 1.15 writes loads
  weights_only. Accelerate unpickles `custom_checkpoint_*.pkl` (our LR scheduler) with
  weights_only=False, so `checkpoint.read_train_state` vets it first: a planted malicious pickle
  is refused before it runs (and Accelerate alone would have run it).
- A teacher that needs remote code is refused end to end unless teacher.trust_remote_code=true; its
  code is never imported.
- Every write is atomic: a write that fails (serialisation or rename) leaves the previous
  final.json / train_state / checkpoint / index.json / report.json / metrics.jsonl intact and no
  temp file behind.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from reliability_helpers import CI_TINY, REPO, run_cli, teacher_variant

from tests.conftest import tiny_overrides
from tests.standins import Unwrapped
from wakeword_dist.train import checkpoint as ckpt

# --------------------------------------------------------------------------------------- audit
_FORBIDDEN_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"), ("dill", "loads"),
    ("cloudpickle", "load"), ("cloudpickle", "loads"), ("joblib", "load"), ("yaml", "load"),
    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("marshal", "loads"), ("shelve", "open"),
}


def _call_name(node: ast.Call) -> tuple[str, str] | None:
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id, func.attr
    if isinstance(func, ast.Name):
        return "", func.id
    return None


def _kw(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def unsafe_loads(paths, root: Path = REPO) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or (name := _call_name(node)) is None:
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            if name == ("torch", "load") and _kw(node, "weights_only") is not True:
                found.append(f"{where} torch.load without weights_only=True")
            elif name in _FORBIDDEN_CALLS:
                found.append(f"{where} {'.'.join(name)}")
            elif name[1] == "load" and name[0] in ("np", "numpy") and _kw(node, "allow_pickle") is True:
                found.append(f"{where} np.load(allow_pickle=True)")
            elif name in (("", "eval"), ("", "exec")):
                found.append(f"{where} {name[1]}()")
            elif _kw(node, "trust_remote_code") is True:
                found.append(f"{where} trust_remote_code=True")
    return found


def test_the_package_never_unpickles_or_trusts_remote_code():
    sources = sorted((REPO / "wakeword_dist").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    assert len(sources) > 20
    assert unsafe_loads(sources) == []


def test_the_audit_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle, torch, numpy as np, yaml\n"
                   "torch.load('a')\ntorch.load('a', weights_only=False)\npickle.loads(b'')\n"
                   "np.load('x', allow_pickle=True)\nyaml.load('')\nf(trust_remote_code=True)\n"
                   "torch.load('a', weights_only=True)\nnp.load('x')\nyaml.safe_load('')\n")
    found = unsafe_loads([bad], root=tmp_path)
    assert [f.split(" ", 1)[1] for f in found] == [
        "torch.load without weights_only=True", "torch.load without weights_only=True", "pickle.loads",
        "np.load(allow_pickle=True)", "yaml.load", "trust_remote_code=True"]


# ------------------------------------------------------------------------------- checkpoints
def test_checkpoint_files_are_safetensors_or_weights_only_pickles(finished_run):
    from accelerate.utils import load as accelerate_load

    folder = finished_run["run_dir"] / "checkpoints" / "step-00000004"
    names = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors" in names and not any(n.startswith("pytorch_model") for n in names), names
    for name in names:
        path = folder / name
        if name.startswith("random_states_"):
            # Accelerate loads these weights_only with its numpy allowlist: it must succeed, or
            # Accelerate skips the RNG restore with only an info log line
            assert accelerate_load(path)["torch_manual_seed"] is not None
        elif name.endswith((".bin", ".pkl")):
            torch.load(path, map_location="cpu", weights_only=True)
    assert "custom_checkpoint_0.pkl" in names, "the scheduler is the file Accelerate unpickles unsafely"


class _Payload:
    """Unpickling this creates the file `marker` (stands for any code an attacker would run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_with_a_malicious_pickle_is_refused_before_it_runs(finished_run, tiny_shards, tmp_path,
                                                                        capsys):
    runs = tmp_path / "runs"
    shutil.copytree(finished_run["runs"], runs)
    folder = runs / "ci_tiny" / "baseline" / "seed0" / "checkpoints" / "step-00000004"
    marker = tmp_path / "pwned"
    torch.save(_Payload(marker), folder / "custom_checkpoint_0.pkl")

    overrides = tiny_overrides(tiny_shards, runs, **{"train.job": "baseline", "train.max_steps": 8,
                                                     "train.eval_every": 0, "logging.wandb": "disabled"})
    code, lines = run_cli(capsys, ["train", "--config", str(CI_TINY), *overrides])
    assert code == 1
    assert f"checkpoint file {folder / 'custom_checkpoint_0.pkl'} does not load with weights_only=True" in lines[-1]
    assert not marker.exists(), "the pickle ran"

    # the control: Accelerate 1.15 on its own would have executed it
    from accelerate.checkpointing import load_custom_state

    class Sink:
        def load_state_dict(self, state):
            state.close()

    load_custom_state(Sink(), str(folder), 0)
    assert marker.exists()


@pytest.mark.parametrize("job", ["distill", "teacher"])
def test_a_teacher_needing_remote_code_is_refused_and_its_code_never_imported(tiny_shards, tiny_teacher_dir,
                                                                            tmp_path, capsys, job):
    remote = teacher_variant(tiny_teacher_dir, tmp_path / "remote_teacher", remote_code=True)
    marker = tmp_path / "imported"
    (remote / "modeling_kws.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    code, lines = run_cli(capsys, ["train", "--config", str(CI_TINY), *tiny_overrides(
        tiny_shards, tmp_path / "runs", **{"train.job": job, "teacher.name_or_path": str(remote),
                                           "logging.wandb": "disabled"})])
    assert code == 1
    assert "needs remote code" in lines[-1] and "set trust_remote_code=True only if you have reviewed" in lines[-1]
    assert str(remote) in lines[-1]
    assert not marker.exists()


# ------------------------------------------------------------------------------ atomic writes
class _Boom(OSError):
    pass


def _fail_replace_into(monkeypatch, target_name: str):
    """The first os.replace onto a file called `target_name` raises (an I/O error)."""
    real = os.replace
    failed = []

    def replace(src, dst, *a, **kw):
        if Path(dst).name == target_name and not failed:
            failed.append(dst)
            raise _Boom(f"injected failure renaming onto {dst}")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)


def _fail_serialising(monkeypatch):
    """json.dumps / json.dump of a dict with "poison" raise; json.dump after half the text."""
    real_dumps = json.dumps

    def dumps(obj, *a, **kw):
        if isinstance(obj, dict) and obj.get("poison"):
            raise _Boom("injected failure while serialising")
        return real_dumps(obj, *a, **kw)

    def dump(obj, fp, *a, **kw):
        text = real_dumps(obj, *a, **kw)
        if isinstance(obj, dict) and obj.get("poison"):
            fp.write(text[: len(text) // 2])
            raise _Boom("injected failure half way through writing")
        fp.write(text)

    monkeypatch.setattr(json, "dumps", dumps)
    monkeypatch.setattr(json, "dump", dump)


def _writers():
    from wakeword_dist.atomic import write_json_atomic

    return {
        "final.json": ckpt.write_json_atomic,              # recipe: run summary
        "train_state.json": ckpt.write_json_atomic,        # checkpoint: step and data position
        "index.json": write_json_atomic,                   # shard writer / build-shards
        "report.json": write_json_atomic,                  # evaluate (the one writer everywhere)
    }


@pytest.mark.parametrize("name", ["final.json", "train_state.json", "index.json", "report.json"])
@pytest.mark.parametrize("failure", ["rename", "serialise"])
def test_a_failed_json_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, name, failure):
    write = _writers()[name]
    path = tmp_path / name
    write(path, {"version": 1})
    before = path.read_bytes()
    if failure == "rename":
        _fail_replace_into(monkeypatch, name)
    else:
        _fail_serialising(monkeypatch)
    with pytest.raises(_Boom):
        write(path, {"version": 2, "poison": True})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert json.loads(before)["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "a temp file was left behind"


def test_a_failed_config_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from wakeword_dist.config import load_config, save_config

    path = tmp_path / "config.yaml"
    save_config(load_config(CI_TINY), path)
    before = path.read_bytes()
    _fail_replace_into(monkeypatch, "config.yaml")
    with pytest.raises(_Boom):
        save_config(load_config(CI_TINY, ["train.seed=7"]), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"], "a temp file was left behind"


def test_a_failed_metrics_rewrite_on_resume_keeps_the_log(tmp_path, monkeypatch):
    from wakeword_dist.train.run_logger import RunLogger

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "train/loss": 1.0 / s}) + "\n" for s in (1, 2, 3))
                    + '{"step": 4, "train/lo')  # torn by a kill mid-write
    before = path.read_bytes()
    _fail_replace_into(monkeypatch, "metrics.jsonl")
    with pytest.raises(_Boom):
        RunLogger(tmp_path, is_main=True, wandb_mode="disabled", project="p", group="g", job_type="baseline",
                  name="n", config={}, resume_step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    RunLogger(tmp_path, is_main=True, wandb_mode="disabled", project="p", group="g", job_type="baseline",
              name="n", config={}, resume_step=2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2], "torn line dropped"


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 2)
    model, optimizer = acc.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    return acc, model


def _save(acc, root, step, **state):
    return ckpt.save_checkpoint(acc, root, step, {"step": step, **state}, keep=2)


@pytest.mark.parametrize("failure", ["rename-new-step", "rename-same-step", "serialise-state"])
def test_a_failed_checkpoint_save_keeps_the_previous_complete_checkpoint(accelerator, tmp_path, monkeypatch,
                                                                        failure):
    acc, model = accelerator
    root = tmp_path / "checkpoints"
    good = _save(acc, root, 4, tag="good")
    files = {p.name: p.read_bytes() for p in good.iterdir()}
    step = 4 if failure == "rename-same-step" else 8
    if failure.startswith("rename"):
        _fail_replace_into(monkeypatch, ckpt.checkpoint_name(step))
    else:
        _fail_serialising(monkeypatch)
    with pytest.raises(_Boom):
        _save(acc, root, step, tag="new", poison=True)
    monkeypatch.undo()
    assert ckpt.latest_checkpoint(root) == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == files, "the previous checkpoint changed"
    assert ckpt.read_train_state(good)["tag"] == "good"
    # the next successful save cleans the dead temp folder up
    _save(acc, root, 8, tag="later")
    assert sorted(p.name for p in root.iterdir()) == [ckpt.checkpoint_name(4), ckpt.checkpoint_name(8)]


def test_old_checkpoints_are_pruned_and_dead_leftovers_removed(accelerator, tmp_path):
    acc, _ = accelerator
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        _save(acc, root, step)
    (root / ".tmp-step-00000005").mkdir()        # a save killed mid-write, at or before the next save
    (root / ".old-step-00000001").mkdir()        # a prune killed mid-delete
    (root / ".tmp-step-99999999").mkdir()        # later than anything saved: left alone
    _save(acc, root, 6)
    assert sorted(p.name for p in root.iterdir()) == [
        ".tmp-step-99999999", ckpt.checkpoint_name(4), ckpt.checkpoint_name(6)]


@pytest.mark.parametrize("fail_after", ["weights", "config.json"])
def test_a_failed_best_model_write_keeps_weights_and_metadata_together(tmp_path, monkeypatch, fail_after):
    """best/ is the HF layout (models.hub): weights, then config.json, then the README.md card.
    A save that dies after the new weights (or after weights and config) leaves the old three."""
    from wakeword_dist.config import load_config
    from wakeword_dist.models import hub
    from wakeword_dist.train import best_store, model_setup

    cfg = load_config(CI_TINY)
    labels = ["negative", "hey_nova"]
    model, arch = model_setup.trainable_model(cfg, "baseline", labels)
    best = tmp_path / "best"
    best_store.save_best(Unwrapped, model, best, arch, labels, {"step": 1, "f1_macro": 0.1}, cfg)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    first_files = {p.name: p.read_bytes() for p in best.iterdir()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    if fail_after == "weights":
        real = hub.HubStudent._save_pretrained

        def weights_then_fail(self, save_directory):
            real(self, save_directory)
            raise _Boom("injected failure after writing model.safetensors")

        monkeypatch.setattr(hub.HubStudent, "_save_pretrained", weights_then_fail)
    else:  # config.json is written, the card is not
        def fail_on_card(self, card=None, **kwargs):
            raise _Boom("injected failure writing README.md")

        monkeypatch.setattr(hub.HubStudent, "generate_model_card", fail_on_card)
    with pytest.raises(_Boom):
        best_store.save_best(Unwrapped, model, best, arch, labels, {"step": 2, "f1_macro": 0.9}, cfg)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in best.iterdir()} == first_files, "best/ changed by a failed save"
    loaded, meta = best_store.load_best_student(best)
    assert all(torch.equal(loaded.state_dict()[k], first[k]) for k in first)
    assert meta["metrics"]["f1_macro"] == 0.1 and meta["training"]["steps"] == 1
    # the next save clears the dead temp folder and replaces best/ whole
    best_store.save_best(Unwrapped, model, best, arch, labels, {"step": 3, "f1_macro": 0.9}, cfg)
    loaded, meta = best_store.load_best_student(best)
    assert meta["metrics"]["f1_macro"] == 0.9 and not any(torch.equal(loaded.state_dict()[k], first[k])
                                                          for k, _ in model.named_parameters())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]

"""Shards from anywhere, through real servers on 127.0.0.1: a threading ``http.server`` (whole
files, a server that cuts connections mid-shard, HTTP errors), ``pipe:cat`` and an S3-compatible
server (moto's standalone server, read and written with the ``aws`` CLI through ``pipe:``).

Every remote read must give exactly the batches the local folder gives (same seed), so a remote
source changes where bytes come from and nothing else.
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_build_shards import folder_src  # noqa: F401 (a fixture)
from test_reader import LABELS, keys_of, make_split, train
from wakeword_dist.data.reader import Split, make_eval_loader, read_index, split_exists
from wakeword_dist.data.shard_writer import ShardWriter
from wakeword_dist.data.sources import ShardReadError, location


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``directory``; a path in ``server.cut`` gets its full Content-Length but only half
    its bytes before the connection is closed, ``server.cut[path]`` times (-1 = always)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        left = self.server.cut.get(self.path, 0)
        if not left:
            return super().do_GET()
        self.server.cut[self.path] = left - 1 if left > 0 else -1
        data = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)  # the cut: no more bytes, ever
        self.close_connection = True


@pytest.fixture
def serve():
    """``serve(folder) -> (base URL, server)``; servers stop at the end of the test."""
    servers = []

    def start(folder: Path):
        handler = functools.partial(_Handler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.cut, server.requests, server.daemon_threads = {}, [], True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _same_batches(a, b):
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert all(torch.equal(x["audio"], y["audio"]) for x, y in zip(a, b))
    assert all(torch.equal(x["label"], y["label"]) for x, y in zip(a, b))


def test_http_pipe_and_spec_read_exactly_what_the_folder_gives(tmp_path, serve):
    split = make_split(tmp_path / "ds" / "train")
    base, server = serve(tmp_path / "ds")
    local = list(train(split, batches_per_epoch=9, num_workers=2))
    sources = {
        "http": location(base) / "train",
        "pipe": location(f"pipe:cat {tmp_path}/ds/{{path}}") / "train",
        "spec": Split.from_spec(f"{base}/train/shard-{{000000..000002}}.tar", label_names=LABELS,
                                sample_rate=16000),
    }
    for name, where in sources.items():
        _same_batches(local, list(train(where, batches_per_epoch=9, num_workers=2)))
    assert read_index(sources["http"])["num_samples"] == 24
    assert any(p == "/train/index.json" for p in server.requests)
    assert split_exists(sources["http"]) and split_exists(sources["pipe"])
    assert not split_exists(location(base) / "nowhere")

    # evaluation over HTTP: every sample exactly once across 2 ranks
    keys = [k for r in range(2) for k in keys_of(make_eval_loader(
        sources["http"], batch_size=5, rank=r, world_size=2, num_workers=2, clip_samples=1600))]
    assert sorted(keys) == [f"k{i:04d}" for i in range(24)]


def test_a_cut_connection_is_retried_and_changes_nothing(tmp_path, serve, caplog):
    split = make_split(tmp_path / "ds" / "train")
    base, server = serve(tmp_path / "ds")
    server.cut["/train/shard-000001.tar"] = 1  # the first request is cut in the middle
    caplog.set_level(logging.WARNING, logger="wakeword_dist.data")
    remote = list(train(location(base) / "train", batches_per_epoch=9, retry_delay_s=0.01))
    _same_batches(list(train(split, batches_per_epoch=9)), remote)
    assert sum(b["skipped"] for b in remote) == 0
    url = f"{base}/train/shard-000001.tar"
    assert f"{url}: curl exit 18: connection closed mid-transfer" in caplog.text
    assert "re-reading (retry 1 of 2)" in caplog.text


def test_a_shard_that_is_always_cut_is_counted_and_named(tmp_path, serve, caplog):
    make_split(tmp_path / "ds" / "train")
    base, server = serve(tmp_path / "ds")
    server.cut["/train/shard-000001.tar"] = -1
    caplog.set_level(logging.WARNING, logger="wakeword_dist.data")
    batches = list(train(location(base) / "train", batches_per_epoch=12, retries=1,
                         retry_delay_s=0.01))
    assert len(batches) == 12 and all(len(b["key"]) == 4 for b in batches)  # the run goes on
    keys = {k for b in batches for k in b["key"]}
    assert not {f"k{i:04d}" for i in range(12, 16)} & keys  # shard 1's second half never came
    assert {f"k{i:04d}" for i in range(8, 12)} & keys  # its first half did
    assert sum(b["skipped"] for b in batches) >= 1
    url = f"{base}/train/shard-000001.tar"
    named = [r.getMessage() for r in caplog.records if "skipping bad sample" in r.getMessage()]
    assert any(f"shard={url}" in m and "connection closed mid-transfer" in m for m in named), named


def test_http_errors_and_unreachable_hosts_name_the_url(tmp_path, serve):
    split = make_split(tmp_path / "ds" / "train")
    base, _ = serve(tmp_path / "ds")
    with pytest.raises(ShardReadError, match=rf"^{base}/nope/index.json: curl exit 22: HTTP error"):
        read_index(location(base) / "nope")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ShardReadError, match=rf"^{dead}/train/index.json: curl exit 7: cannot connect"):
        read_index(location(dead) / "train")
    with pytest.raises(ShardReadError, match=r"pipe:cat .*/nope/index.json: command exit 1"):
        read_index(location(f"pipe:cat {tmp_path}/{{path}}") / "nope")
    with pytest.raises(ValueError, match=r"needs a \{path\} placeholder"):
        location("pipe:cat /x")

    # a shard that 404s in a split: counted as bad, the epoch is still full
    (split / "shard-000002.tar").rename(tmp_path / "gone.tar")
    batches = list(train(location(base) / "train", batches_per_epoch=6, retries=0))
    assert len(batches) == 6 and sum(b["skipped"] for b in batches) >= 1
    assert not {k for b in batches for k in b["key"]} & {f"k{i:04d}" for i in range(16, 24)}


def test_writer_to_a_pipe_writes_the_bytes_the_local_writer_writes(tmp_path):
    make_split(tmp_path / "local")
    out = tmp_path / "piped"
    out.mkdir()
    make_split(f"pipe:cat > {out}/{{path}}")
    for name in ["index.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]:
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    with pytest.raises(OSError, match=r"pipe:exit 3 .*shard-000000.tar.*command exit 3"):
        with ShardWriter("pipe:exit 3 {path}", 2, "wav", label_names=LABELS, source="t") as w:
            for i in range(3):
                w.write(f"k{i}", np.zeros(160), {"label": 0, "label_name": LABELS[0]})


# ------------------------------------------------------------------------------ S3 (moto server)
@pytest.fixture
def s3_server(tmp_path):
    """moto's standalone S3 server on 127.0.0.1 and the env the ``aws`` CLI needs for it."""
    pytest.importorskip("moto.server", reason="moto[server] not installed (pip install -e .[dev])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the pipe: commands inherit it
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="shards")
        aws = shutil.which("aws")
        if aws is not None:  # what users run
            yield f"{aws} --endpoint-url {endpoint} s3 cp"
        else:  # the same `cp SRC DST` with boto3 (installed with moto), so the test never skips
            helper = tmp_path / "s3cp.py"
            helper.write_text(S3CP)
            yield f"{sys.executable} {helper} {endpoint}"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)


S3CP = """import sys, boto3
endpoint, src, dst = [a for a in sys.argv[1:] if a != "--quiet"]
s3 = boto3.client("s3", endpoint_url=endpoint)
if src == "-":
    bucket, key = dst[5:].split("/", 1)
    s3.upload_fileobj(sys.stdin.buffer, bucket, key)
else:
    bucket, key = src[5:].split("/", 1)
    try:
        s3.download_fileobj(bucket, key, sys.stdout.buffer)
    except Exception as e:
        sys.exit(f"{src}: {e}")
"""


@pytest.mark.slow  # ~30 s: one aws CLI start (~1-2 s) per shard read
def test_s3_write_and_read_through_pipe(tmp_path, s3_server):
    local = make_split(tmp_path / "local", n_shards=2)
    # write the same split straight into the bucket, then train and evaluate from it
    make_split(f"pipe:{s3_server} --quiet - s3://shards/ds/train/{{path}}", n_shards=2)
    root = location(f"pipe:{s3_server} --quiet s3://shards/ds/{{path}} -")
    assert read_index(root / "train") == json.loads((local / "index.json").read_text())
    _same_batches(list(train(local, batches_per_epoch=5)), list(train(root / "train", batches_per_epoch=5)))
    keys = keys_of(make_eval_loader(root / "train", batch_size=4, rank=0, world_size=1,
                                    clip_samples=1600, num_workers=0))
    assert sorted(keys) == [f"k{i:04d}" for i in range(16)]
    with pytest.raises(ShardReadError, match=r"s3://shards/ds/missing/index.json.*command exit"):
        read_index(root / "missing")


def test_build_shards_to_a_pipe_matches_the_local_build(folder_src, tmp_path):
    from wakeword_dist.data.build_shards import build_shards

    args = dict(wake_words=["hey_nova"], val_fraction=0.2, test_fraction=0.3, samples_per_shard=10)
    local = build_shards(folder_src, tmp_path / "local", **args)
    out = tmp_path / "piped"
    piped = build_shards(folder_src, f"pipe:mkdir -p $(dirname {out}/{{path}}) && cat > {out}/{{path}}",
                         **args)
    assert piped["splits"] == local["splits"]
    for split in local["splits"]:
        for f in sorted((tmp_path / "local" / split).iterdir()):
            assert (out / split / f.name).read_bytes() == f.read_bytes(), f


# ------------------------------------------------------------------- a real 2-rank run over HTTP
@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_rank_training_and_evaluation_read_over_http(tiny_shards, tmp_path, serve):
    """`accelerate launch` with 2 gloo ranks trains from an http:// data.root whose server always
    cuts one train shard mid-transfer, then evaluates from it: the run completes, the loss is
    counted and logged with the URL, and checkpoints / metrics are all there."""
    from tests.conftest import REPO, tiny_overrides
    from wakeword_dist.train.run_logger import read_metrics

    base, server = serve(tiny_shards)
    server.cut["/train/shard-000001.tar"] = -1
    args = ["--config", str(REPO / "configs" / "ci_tiny.yaml"),
            *tiny_overrides(base, tmp_path, **{"train.job": "baseline", "data.shard_retries": 1,
                                               "data.shard_retry_delay_s": 0.1})]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(REPO / "launch" / "accelerate" / "cpu_ddp.yaml"), "--num_processes", "2"]
    proc = subprocess.run([*launch, str(REPO / "launch" / "train.py"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "world_size=2" in log
    url = f"{base}/train/shard-000001.tar"
    assert f"{url}: curl exit 18: connection closed mid-transfer" in log, log[-3000:]

    run_dir = tmp_path / "ci_tiny" / "baseline" / "seed0"
    final = json.loads((run_dir / "final.json").read_text())
    assert final["completed"] and final["world_size"] == 2
    assert list((run_dir / "checkpoints").iterdir()), "checkpoints written"
    rows = [m for m in read_metrics(run_dir) if "data/skipped" in m]
    assert rows and rows[-1]["data/skipped"] > 0, "the cut shard's loss is counted"
    assert any(p.startswith("/val/") for p in server.requests)  # validation read it too

    proc = subprocess.run([*launch, "-m", "wakeword_dist.cli", "evaluate", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "val_report.json").read_text())
    assert report["n_unique_keys"] == read_index(tiny_shards / "val")["num_samples"]
    assert any(p.startswith("/test/") for p in server.requests)


def test_config_trains_from_a_brace_spec_without_index(tiny_shards, tmp_path, serve):
    """data.train_shards / val_shards / label_names from command-line overrides, as the README
    shows them, through open_data and the recipe's loader builders."""
    from types import SimpleNamespace

    from tests.conftest import REPO
    from wakeword_dist.config import load_config
    from wakeword_dist.train import data_setup

    base, _ = serve(tiny_shards)
    index = read_index(tiny_shards / "train")
    last = len(index["shards"]) - 1
    labels = ", ".join(index["label_names"])
    cfg = load_config(REPO / "configs" / "ci_tiny.yaml", [
        f"data.root={base}", f"data.train_shards={base}/train/shard-{{000000..{last:06d}}}.tar",
        f"data.val_shards={base}/val/shard-000000.tar::{base}/val/shard-000001.tar",
        f"data.label_names=[{labels}]", "data.exclude_sources=[nothing-has-this-source]"])
    data = data_setup.open_data(cfg, job="baseline")
    assert isinstance(data.train_dir, Split) and len(data.train_dir.urls) == last + 1
    acc = SimpleNamespace(process_index=1, num_processes=2)
    batches = list(data_setup.train_loader(cfg, data, acc, epoch=0, skip_batches=0,
                                           with_teacher_logits=False))
    assert len(batches) == cfg.train.batches_per_epoch
    val = data_setup.eval_loader(cfg, data, data.val_dir, batch_size=8, rank=0, world_size=1,
                                 sources=data.sources)
    assert sum(len(b["key"]) for b in val) > 0
    bad = load_config(REPO / "configs" / "ci_tiny.yaml", [
        f"data.root={base}", f"data.train_shards={base}/train/shard-000000.tar",
        "data.label_names=[a, b]"])
    with pytest.raises(ValueError, match=r"label maps differ"):
        data_setup.open_data(bad, job="baseline")


def test_a_pipe_is_not_waited_for_after_its_shard_or_when_left(tmp_path):
    from wakeword_dist.data.sources import _read_tar

    split = make_split(tmp_path / "d", n_shards=1)
    endless = f"pipe:cat {split}/shard-000000.tar /dev/zero"  # the shard, then bytes forever
    t0 = time.perf_counter()
    assert [k for k, _ in _read_tar(endless)] == [f"k{i:04d}" for i in range(8)]
    left = _read_tar(endless)
    next(left)
    left.close()  # the end of an epoch mid-shard
    assert time.perf_counter() - t0 < 10

"""Stores in object storage, against a real S3-compatible server (moto's, on a free port of this
machine, started by this module): precompute to s3:// through the real CLI, kill -9 and resume
to the bytes of a local run, the lock object refusing a second writer, training from s3:// equal
to training from a local copy, evaluate + analyze on s3:// equal to local, the same bytes read
per view as from local disk, and one-line errors for a missing bucket, missing credentials, an
unreachable endpoint and a store that is not ours."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import fsspec
import numpy as np
import pytest
import torch
from moto.server import ThreadedMotoServer

from conftest import DIGITS, free_port, pct, run_pct
from pct_pipeline import store
from pct_pipeline.errors import PctError
from pct_pipeline.models import build_model, save_atomic
from pct_pipeline.precompute.prepare import acquire_lock
from test_cli_precompute import assert_one_line_error
from test_precompute import assert_same_store

BUCKET = "pct-test"
LAYOUT = ["--rows-per-chunk", "16", "--chunks-per-shard", "2"]  # 4 shards of the 120 images
RES = 24


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The environment of a running S3 server with bucket BUCKET, set in this process too (so
    its in-process CLI runs and checks reach it); subprocesses get it from os.environ."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           # no instance metadata, no ~/.aws files, one retry: errors come at once
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": nowhere,
           "AWS_CONFIG_FILE": nowhere, "AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard",
           "OMP_NUM_THREADS": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    fsspec.filesystem("s3").mkdir(BUCKET)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def precompute_args(data, out, teacher, views=2, resolution=RES):
    return ["precompute-teachers", "--data", data, "--teacher", teacher, "--views", views,
            "--view-seed", 5, "--resolution", resolution, "--batch-size", 8, "-j", 1, "--out", out,
            *LAYOUT]


def bucket():
    """The S3 file system of this process, its listings cache dropped (other processes write)."""
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return fs


def done_so_far(location):
    """Units done of a store being written; None while it is being created."""
    try:
        return int(store.done_markers(location).sum())
    except (PctError, KeyError, FileNotFoundError, ValueError):
        return None


def test_precompute_killed_resumes_to_the_bytes_of_a_local_run(capsys, s3, train_beton,
                                                                 wide_ckpt, tmp_path):
    url, local = f"s3://{BUCKET}/kill/c.zarr", tmp_path / "c.zarr"
    lock = f"s3://{BUCKET}/kill/.c.zarr.lock"
    # cnn_wide at 48 px over 4 views x 4 shards: slow enough to be caught mid-run.
    args = precompute_args(train_beton, url, f"cnn_wide={wide_ckpt}", views=4, resolution=48)
    with open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pct_pipeline", *map(str, args)],
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while not done_so_far(url):
        assert proc.poll() is None, (tmp_path / "err").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    owner = json.loads(bucket().cat_file(lock.removeprefix("s3://")))
    assert owner["pid"] == proc.pid
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = done_so_far(url)
    assert 0 < done < 16, "the writer finished before it could be interrupted"
    with pytest.raises(PctError, match=f"incomplete store {url}: {16 - done} of 16 units"):
        store.open_store(url)
    code, out, err = pct(capsys, *args)  # takes over the lock of the killed writer
    assert code == 0, err
    assert not store.Location(lock).exists()
    assert pct(capsys, *precompute_args(train_beton, local, f"cnn_wide={wide_ckpt}", views=4,
                                        resolution=48))[0] == 0
    assert_same_store(url, local)


def test_a_held_lock_object_refuses_a_second_writer(capsys, s3, train_beton, teacher_ckpt):
    url = f"s3://{BUCKET}/locked/c.zarr"
    args = precompute_args(train_beton, url, f"cnn_small={teacher_ckpt}")
    held = acquire_lock(url)  # what a running precompute's rank 0 holds
    try:
        with pytest.raises(PctError, match="being written by another process"):
            acquire_lock(url)
        assert_one_line_error(*pct(capsys, *args)[::2], f"{url} is being written by another process",
                       f"lock s3://{BUCKET}/locked/.c.zarr.lock is held by pid {os.getpid()}")
    finally:
        held.release()
    assert pct(capsys, *args)[0] == 0
    assert store.open_store(url).views == 2
    assert not store.Location(f"s3://{BUCKET}/locked/.c.zarr.lock").exists()


@pytest.fixture(scope="module")
def s3_cache(s3, train_beton, teacher_ckpt, tmp_path_factory):
    """(URL of a teacher cache in the bucket, a local copy of it)."""
    url = f"s3://{BUCKET}/caches/train.zarr"
    assert pct(None, *precompute_args(train_beton, url, f"cnn_small={teacher_ckpt}"))[0] == 0
    copy = tmp_path_factory.mktemp("copy") / "train.zarr"
    bucket().get(url.removeprefix("s3://"), str(copy), recursive=True)
    return url, copy


def test_training_from_s3_equals_training_from_a_local_copy(capsys, s3_cache, train_beton,
                                                            val_beton, tmp_path):
    runs = {}
    for name, cache in zip(("s3", "local"), s3_cache):
        out = tmp_path / name
        code, _, err = pct(capsys, "train", "--data", train_beton, "--val", val_beton, "--out", out,
                           "--arch", "cnn_small", "--batch-size", 16, "-j", 1, "--resolution", RES,
                           "--seed", 3, "--print-freq", 0, "--epochs", 2,
                           "--max-steps-per-epoch", 3, "--teacher-cache", cache,
                           "--kd-loss-mode", "kl", "--kd-alpha", 0.5)
        assert code == 0, err
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
        runs[name] = metrics, state["model"]
    (m_s3, p_s3), (m_local, p_local) = runs["s3"], runs["local"]
    timing = ("images_per_s", "train_time_s", "step_time_s")
    for a, b in zip(m_s3, m_local, strict=True):
        assert a["fd"] > 0
        assert {k: v for k, v in a.items() if k not in timing} == \
            {k: v for k, v in b.items() if k not in timing}
    for key, value in p_s3.items():
        assert torch.equal(value, p_local[key]), key


def test_a_view_from_s3_reads_the_bytes_of_local_disk(s3_cache):
    read = {}
    for name, location in zip(("s3", "local"), s3_cache):
        cache = store.open_store(location, kind="teacher-cache")
        before = store.BYTES_READ.total
        rows = [cache.read_rows("logits", 1, lo, min(lo + cache.shard_rows, cache.num_samples))
                for lo in range(0, cache.num_samples, cache.shard_rows)]
        read[name] = store.BYTES_READ.total - before, np.concatenate(rows)
    assert read["s3"][0] == read["local"][0] > 0
    assert np.array_equal(read["s3"][1], read["local"][1])


def test_evaluate_and_analyze_on_s3_equal_local(capsys, s3, val_beton, teacher_ckpt, tmp_path):
    torch.manual_seed(1)
    new_ckpt = tmp_path / "new.pt"
    save_atomic({"model": build_model("cnn_small", 10).state_dict(), "arch": "cnn_small",
                 "classes": DIGITS}, new_ckpt)
    places = {"s3": f"s3://{BUCKET}/preds", "local": str(tmp_path)}
    reports = {}
    for name, root in places.items():
        for model, ckpt in (("old", teacher_ckpt), ("new", new_ckpt)):
            code, _, err = pct(capsys, "evaluate", "--checkpoint", ckpt, "--data", val_beton,
                               "--out", f"{root}/{model}.zarr", "--resolution", RES, "-j", 1)
            assert code == 0, err
        code, table, err = pct(capsys, "analyze", f"{root}/old.zarr", f"{root}/new.zarr",
                               "--json", tmp_path / f"{name}.json", "--bootstrap", 200)
        assert code == 0, err
        text = (tmp_path / f"{name}.json").read_text()
        # the table's columns are as wide as the paths: compare its words, not its rules
        words = [line.split() for line in table.replace(root, "ROOT").splitlines()
                 if line.strip(" -")]
        reports[name] = (words, json.loads(text.replace(root, "ROOT")))
    assert reports["s3"] == reports["local"]
    again = ["evaluate", "--checkpoint", teacher_ckpt, "--data", val_beton, "--out",
             f"{places['s3']}/old.zarr", "--resolution", RES, "-j", 1]
    assert_one_line_error(*pct(capsys, *again)[::2], f"{places['s3']}/old.zarr exists", "--overwrite")
    assert pct(capsys, *again, "--overwrite")[0] == 0


def analyze(env, *inputs):
    """`pct analyze` in a subprocess with `env` (its own credentials and endpoint)."""
    start = time.monotonic()
    result = run_pct("analyze", *inputs, env=env, timeout=120)
    return result.returncode, result.stderr, time.monotonic() - start


def test_one_line_errors(capsys, s3, s3_cache, train_beton, teacher_ckpt):
    url = s3_cache[0]
    nobucket = "s3://no-such-bucket/c.zarr"
    assert_one_line_error(*pct(capsys, *precompute_args(train_beton, nobucket,
                                                 f"cnn_small={teacher_ckpt}"))[::2],
                   "bucket not found: no-such-bucket", nobucket)
    assert_one_line_error(*pct(capsys, "analyze", nobucket, url)[::2], f"store not found: {nobucket}")
    env = dict(os.environ)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    code, err, _ = analyze(env, url, url)
    assert_one_line_error(code, err, f"cannot reach {url}", "Unable to locate credentials")
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")  # nothing there
    code, err, seconds = analyze(env, url, url)
    assert_one_line_error(code, err, f"cannot reach {url}", "Could not connect to the endpoint URL")
    assert seconds < 30
    fs = bucket()
    fs.pipe_file(f"{BUCKET}/foreign.zarr/zarr.json",
                 b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    fs.pipe_file(f"{BUCKET}/notes.zarr/notes.txt", b"keep me")
    for other in (f"s3://{BUCKET}/foreign.zarr", f"s3://{BUCKET}/notes.zarr"):
        assert_one_line_error(*pct(capsys, "analyze", other, url)[::2], other, "not a")
        assert_one_line_error(*pct(capsys, *precompute_args(train_beton, other,
                                                     f"cnn_small={teacher_ckpt}"))[::2],
                       f"{other} exists and is not a pct store")
    assert fs.cat_file(f"{BUCKET}/notes.zarr/notes.txt") == b"keep me"

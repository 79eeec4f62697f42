"""`pct precompute-teachers` through the real CLI: one-line errors (exit 2), refusal of a store
made by another command or locked by another writer, kill -9 and resume, and 2 torchrun/gloo
processes writing the same bytes as one."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DIGITS, free_port, pct, run_pct
from pct_pipeline import models, store
from pct_pipeline.errors import PctError
from pct_pipeline.precompute.prepare import acquire_lock
from test_precompute import assert_same_store

LAYOUT = ["--rows-per-chunk", "16", "--chunks-per-shard", "2"]  # 4 shards of the 120 images


def command(data, out, *teachers, views=2, extra=()):
    return ["precompute-teachers", "--data", data, *[a for t in teachers for a in ("--teacher", t)],
            "--views", views, "--resolution", 24, "--batch-size", 16, "-j", 1, "--out", out,
            *LAYOUT, *extra]


def save_model(path, arch, num_classes=10, seed=0, edit=None):
    torch.manual_seed(seed)
    model = models.build_model(arch, num_classes)
    state = model.state_dict()
    if edit:
        edit(state)
    models.save_atomic({"model": state, "classes": DIGITS}, path)
    return path


@pytest.fixture(scope="module")
def wide_ckpt(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("wide") / "wide.pt", "cnn_wide")


def assert_one_line_error(code, err, *parts):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pct: error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])


def test_user_errors_are_one_line(capsys, train_beton, teacher_ckpt, wide_ckpt, tmp_path):
    out = tmp_path / "c.zarr"
    good = f"cnn_small={teacher_ckpt}"
    seven = save_model(tmp_path / "seven.pt", "cnn_small", num_classes=7)
    cases = [
        (command(tmp_path / "nope.beton", out, good), ["dataset file not found", "nope.beton"]),
        (command(train_beton, out, f"cnn_small={tmp_path / 'gone.pt'}"),
         ["checkpoint not found", "gone.pt"]),
        (command(train_beton, out, f"nope_net={teacher_ckpt}"), ["unknown architecture 'nope_net'"]),
        (command(train_beton, out, "cnn_small"), ["--teacher expects ARCH=CHECKPOINT", "'cnn_small'"]),
        (command(train_beton, out, f"cnn_small={wide_ckpt}"),
         ["does not fit cnn_small", "'features.0.weight' has shape (32, 3, 3, 3)", "(8, 3, 3, 3)"]),
        (command(train_beton, out, f"cnn_small={seven}"), ["has 7 classes, the data has 10"]),
        (["precompute-teachers", "--data", train_beton, "--teacher", good, "--out", out],
         ["missing --views"]),
        (command(train_beton, out, good, extra=["--eval-view"]), ["--eval-view makes one view"]),
        (command(train_beton, tmp_path / "no_dir" / "c.zarr", good), ["output folder does not exist"]),
    ]
    for args, parts in cases:
        assert_one_line_error(*pct(capsys, *args)[::2], *parts)
    assert not out.exists()


def test_nan_and_overflow_in_teacher_output(capsys, train_beton, teacher_ckpt, tmp_path):
    nan = save_model(tmp_path / "nan.pt", "cnn_small", edit=lambda s: s["fc.bias"].fill_(float("nan")))
    huge = save_model(tmp_path / "huge.pt", "cnn_small", edit=lambda s: s["fc.bias"].fill_(1e6))
    args = command(train_beton, tmp_path / "c.zarr", f"cnn_small={teacher_ckpt}", f"cnn_small={nan}")
    assert_one_line_error(*pct(capsys, *args)[::2], f"teacher cnn_small={nan} produced NaN/inf",
                          "for sample 0 in view 0")
    args = command(train_beton, tmp_path / "h.zarr", f"cnn_small={huge}")
    assert_one_line_error(*pct(capsys, *args)[::2], "sample 0 in view 0 does not fit float16",
                          "--dtype float32")
    code, _, err = pct(capsys, *args, "--dtype", "float32", "--overwrite")
    assert code == 0, err
    assert np.allclose(store.open_store(tmp_path / "h.zarr").logits(0), 1e6, rtol=1e-3)


def test_existing_store_of_another_command_is_refused(capsys, train_beton, teacher_ckpt,
                                                      wide_ckpt, tmp_path):
    out = tmp_path / "c.zarr"
    base = command(train_beton, out, f"cnn_small={teacher_ckpt}")
    code, stdout, err = pct(capsys, *base)
    assert code == 0, err
    assert "120 samples x 2 views, 240 images computed" in stdout
    before = (out / "logits").stat().st_mtime_ns
    code, stdout, _ = pct(capsys, *base, "--batch-size", 5, "-j", 2)  # same output: nothing to do
    assert code == 0 and f"{out} was already complete (120 samples x 2 views): nothing to " \
                         "compute" in stdout
    other = save_model(tmp_path / "other.pt", "cnn_small", seed=3)
    sha_old, sha_new = models.sha256_file(teacher_ckpt), models.sha256_file(other)
    cases = [
        (["--view-seed", 4], "view_seed is 0 there, 4 here"),
        (["--views", 3], "views is 2 there, 3 here"),
        (["--resolution", 32], "resolution is 24 there, 32 here"),
        (["--scale", 0.5, 1], "scale is [0.08, 1.0] there, [0.5, 1.0] here"),
        (["--dtype", "float32"], "dtype is 'float16' there, 'float32' here"),
        (["--store-features"], "store_features is False there, True here"),
        (["--keep-members"], "keep_members is False there, True here"),
        (["--teacher", f"cnn_small={other}"], f"['cnn_small:{sha_old}'] there, "
                                              f"['cnn_small:{sha_old}', 'cnn_small:{sha_new}'] here"),
    ]
    for extra, message in cases:
        assert_one_line_error(*pct(capsys, *base, *extra)[::2], f"{out} was made by a different "
                              f"command", message, "--overwrite")
    args = command(train_beton, out, f"cnn_small={other}")
    assert_one_line_error(*pct(capsys, *args)[::2], f"teachers is ['cnn_small:{sha_old}'] there, "
                          f"['cnn_small:{sha_new}'] here")
    assert (out / "logits").stat().st_mtime_ns == before
    code, stdout, err = pct(capsys, *args, "--view-seed", 4, "--overwrite")
    assert code == 0 and "240 images computed" in stdout, err
    assert store.open_store(out).attrs["view_seed"] == 4


def test_path_that_is_not_a_store_is_refused(capsys, train_beton, teacher_ckpt, tmp_path):
    out = tmp_path / "mine.zarr"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = command(train_beton, out, f"cnn_small={teacher_ckpt}", views=1)
    assert_one_line_error(*pct(capsys, *args)[::2], f"{out} exists and is not a pct store")
    assert (out / "notes.txt").read_text() == "keep me"
    code, _, err = pct(capsys, *args, "--overwrite")
    assert code == 0, err
    assert not (out / "notes.txt").exists() and store.open_store(out).views == 1


def test_held_lock_refuses_a_second_writer(capsys, train_beton, teacher_ckpt, tmp_path):
    out = tmp_path / "c.zarr"
    lock = acquire_lock(out)  # what a running precompute's rank 0 holds
    try:
        with pytest.raises(PctError, match="being written by another process"):
            acquire_lock(out)
        args = command(train_beton, out, f"cnn_small={teacher_ckpt}")
        assert_one_line_error(*pct(capsys, *args)[::2], f"{out} is being written by another "
                              f"process", ".c.zarr.lock", f"by pid {os.getpid()} on host")
    finally:
        lock.release()
    assert pct(capsys, *args)[0] == 0


def done_so_far(out):
    """(units done, units) of a store being written, or None while it is being created."""
    try:
        done = store.done_markers(out)
    except (PctError, KeyError, FileNotFoundError, ValueError, OSError):
        return None
    return int(done.sum()), done.size


def test_concurrent_writer_refused_and_kill_9_resumes(capsys, train_beton, wide_ckpt, tmp_path):
    out, reference = tmp_path / "c.zarr", tmp_path / "ref.zarr"
    # cnn_wide at 64 px over 8 views x 4 shards: slow enough (seconds) to be caught mid-run.
    args = [str(a) for a in command(train_beton, out, f"cnn_wide={wide_ckpt}", views=8,
                                     extra=["--resolution", 64, "--batch-size", 8])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "pct_pipeline", *args], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    deadline = time.monotonic() + 300
    while all(p.poll() is None for p in procs):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    assert_one_line_error(loser.returncode, loser.stderr.read(), "is being written by another process")
    progress = done_so_far(out)
    while progress is None or progress[0] == 0:
        assert winner.poll() is None, "the writer finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
        progress = done_so_far(out)
    os.kill(winner.pid, signal.SIGKILL)
    winner.wait()
    done, units = done_so_far(out)
    assert 0 < done < units == 32
    with pytest.raises(PctError, match=rf"incomplete store {out}: {units - done} of 32 units not "
                                       rf"written \(view \d+ shard \d+"):
        store.open_store(out)
    missing_rows = int((~store.done_markers(out) * np.array([32, 32, 32, 24])).sum())
    rerun = run_pct(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{missing_rows} images computed" in rerun.stdout  # only the units not done
    ref_args = [a if a != str(out) else str(reference) for a in args]
    assert pct(capsys, *ref_args)[0] == 0
    assert_same_store(out, reference)


def torchrun(*args):
    torchrun_bin = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun_bin), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "pct_pipeline", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PCT_PROGRESS_SECONDS="0"))


def test_two_torchrun_processes_write_the_same_bytes_as_one(capsys, train_beton, teacher_ckpt,
                                                            tmp_path):
    second = save_model(tmp_path / "second.pt", "cnn_small", seed=1)
    teachers = [f"cnn_small={teacher_ckpt}", f"cnn_small={second}"]
    extra = ["--store-features", "--keep-members"]
    two, one = tmp_path / "two.zarr", tmp_path / "one.zarr"
    lock = acquire_lock(two)
    try:  # every rank must give up when rank 0 cannot get the lock (none may hang)
        locked = torchrun(*command(train_beton, two, *teachers, extra=extra))
    finally:
        lock.release()
    assert locked.returncode != 0 and "is being written by another process" in locked.stderr
    result = torchrun(*command(train_beton, two, *teachers, extra=extra))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("wrote ") == 1 and "240 images computed" in result.stdout
    # progress: rank 0 alone prints, counting toward both ranks' 240 images (its own are 128)
    done = [re.match(r"precompute-teachers: (\d+)/240 images \(", line) for line in
            result.stderr.splitlines() if line.startswith("precompute-teachers: ")]
    assert done and all(done), result.stderr
    counts = [int(m.group(1)) for m in done]
    assert counts == sorted(counts) and 128 <= counts[-1] <= 240, result.stderr
    code, _, err = pct(capsys, *command(train_beton, one, *teachers,
                                        extra=extra + ["--batch-size", 7]))
    assert code == 0, err
    assert_same_store(two, one, ignore=("out", "batch_size"))

"""Interrupted and concurrent runs, through the real CLI in separate processes.

- precompute-teachers stopped by SIGINT (Ctrl-C) in the middle: exit 130 with one line, the
  store refused as incomplete, and the rerun finishes it byte-identical to an uninterrupted one;
- train stopped by SIGKILL and by SIGINT after its first checkpoint: the checkpoint is whole,
  and resuming from it ends with exactly the parameters of an uninterrupted run (CPU);
- write-dataset stopped by SIGKILL and by SIGINT while writing: nothing under the final name;
- SIGTERM (a scheduler's stop) ends train and write-dataset like SIGINT, with `pct: terminated`
  and exit 143;

Other files already cover: precompute SIGKILL + resume and a second writer refused by the lock
(test_cli_precompute.py), 2-rank precompute, train resume exactness (test_train.py), 4 ranks on
two nodes (test_multinode.py).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import run_pct
from pct_pipeline import store
from pct_pipeline.errors import PctError
from test_precompute import assert_same_store

ENV = dict(os.environ, OMP_NUM_THREADS="1")
RES = 24


def start(tmp_path, name, *args):
    """Popen of `pct ARGS` in its own process group (as a shell job is), output to files."""
    out, err = open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")
    # SIGINT's default action even when the tests run as a background job (which ignores it)
    return subprocess.Popen([sys.executable, "-m", "pct_pipeline", *map(str, args)], stdout=out,
                            stderr=err, env=ENV, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until(proc, condition, timeout=300):
    """Poll `condition()` every 10 ms until true; fails if `proc` ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)


def interrupt(proc, sig):
    """Send `sig` to the whole process group, as Ctrl-C in a terminal does."""
    os.killpg(proc.pid, sig)
    return proc.wait(timeout=120)


def one_line(tmp_path, name):
    err = (tmp_path / f"{name}.err").read_text()
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    return lines[0]


def precompute_args(data, teacher, out, *extra):
    return ["precompute-teachers", "--data", data, "--teacher", f"cnn_wide={teacher}", "--views", 8,
            "--out", out, "--resolution", 64, "--batch-size", 8, "-j", 1,
            "--rows-per-chunk", 16, "--chunks-per-shard", 2, *extra]


def units_done(out):
    try:
        return int(store.done_markers(out).sum())
    except (PctError, KeyError, FileNotFoundError, ValueError, OSError):
        return 0  # still being created


def test_precompute_sigint_then_resume_is_identical(train_beton, wide_ckpt, tmp_path):
    out, reference = tmp_path / "c.zarr", tmp_path / "ref.zarr"
    # cnn_wide at 64 px over 8 views x 4 shards: seconds of work, to be interrupted mid-run.
    proc = start(tmp_path, "run", *precompute_args(train_beton, wide_ckpt, out))
    wait_until(proc, lambda: units_done(out) > 0)
    assert interrupt(proc, signal.SIGINT) == 130
    assert one_line(tmp_path, "run") == "pct: interrupted"
    done = units_done(out)
    assert 0 < done < 32
    with pytest.raises(PctError, match=f"incomplete store {out}: {32 - done} of 32 units"):
        store.open_store(out)
    assert not list(tmp_path.rglob("*.partial"))  # zarr's temporary chunk files
    rerun = run_pct(*precompute_args(train_beton, wide_ckpt, out), env=ENV)
    assert rerun.returncode == 0, rerun.stderr
    assert run_pct(*precompute_args(train_beton, wide_ckpt, reference), env=ENV).returncode == 0
    assert_same_store(out, reference)


def train_args(train_beton, val_beton, out, *extra):
    return ["train", "--data", train_beton, "--val", val_beton, "--out", out, "--arch", "cnn_small",
            "--batch-size", 8, "-j", 1, "--resolution", RES, "--epochs", 4, "--lr", 0.05,
            "--print-freq", 0, "--seed", 3, *extra]


def checkpoint_epoch(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


@pytest.fixture(scope="module")
def straight(train_beton, val_beton, tmp_path_factory):
    """The uninterrupted run both signals are compared with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = run_pct(*train_args(train_beton, val_beton, out), env=ENV)
    assert result.returncode == 0, result.stderr
    return out


SIGNALS = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM]
# what each signal ends `pct` with: the exit status and the one line on stderr
ENDINGS = {signal.SIGKILL: (-9, None), signal.SIGINT: (130, "pct: interrupted"),
           signal.SIGTERM: (143, "pct: terminated")}


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGKILL", "SIGINT", "SIGTERM"])
def test_train_interrupted_resumes_to_identical_parameters(sig, train_beton, val_beton, straight,
                                                           tmp_path):
    run = tmp_path / "run"
    proc = start(tmp_path, "run", *train_args(train_beton, val_beton, run))
    wait_until(proc, lambda: checkpoint_epoch(run / "checkpoint.pt") is not None)
    code, line = ENDINGS[sig]
    assert interrupt(proc, sig) == code
    if line is not None:
        assert one_line(tmp_path, "run") == line
        assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
    epoch = checkpoint_epoch(run / "checkpoint.pt")  # whole, whenever the signal came
    assert 1 <= epoch < 4
    resumed = run_pct(*train_args(train_beton, val_beton, run, "--resume", run / "checkpoint.pt"),
                      env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(run / "checkpoint.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def partial_bytes(folder):
    """Size of the .beton being written under its temporary name (0 before and after)."""
    for path in folder.glob(".train.beton.partial*"):
        try:
            return path.stat().st_size
        except FileNotFoundError:  # renamed just now
            return 0
    return 0


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGKILL", "SIGINT", "SIGTERM"])
def test_write_dataset_interrupted_leaves_no_file_under_the_final_name(sig, digits_tree,
                                                                       tmp_path):
    out = tmp_path / "train.beton"
    proc = start(tmp_path, "run", "write-dataset", digits_tree / "train", out, "-j", 1,
                 "--max-resolution", 32)
    # Past the first page the worker wrote (signals that arrive while the main process forks
    # its workers are lost in Python's fork hooks), and before the last.
    wait_until(proc, lambda: partial_bytes(tmp_path) > 2**20)
    code, line = ENDINGS[sig]
    assert interrupt(proc, sig) == code
    assert not out.exists() and not Path(f"{out}.json").exists()
    if line is not None:
        assert one_line(tmp_path, "run") == line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.err", "run.out"]


def test_interrupt_prints_one_line_when_a_half_built_object_fails_in_del(tmp_path):
    """Ctrl-C can stop an object inside its __init__ (ffcv's EpochIterator, then missing the
    memory_context its __del__ closes); collecting it later must not add a traceback to the one
    line. Here a command raises KeyboardInterrupt while such an object is alive."""
    script = (
        "from pct_pipeline import cli\n"
        "class HalfBuilt:\n"
        "    def __del__(self):\n"
        "        self.memory_context.close()\n"
        "def command(**kwargs):\n"
        "    held = HalfBuilt()\n"
        "    raise KeyboardInterrupt\n"
        "cli.cli.main = command\n"
        "cli.main([])\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (130, "pct: interrupted\n"), proc.stderr

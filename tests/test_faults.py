"""Bad input to every `pct` command, as a user would produce it: one line on stderr naming the
problem and the bad value, a non-zero exit, no traceback, and every file that existed before
the run byte-identical after it (no file added, removed or changed).

Each case runs the real entry point (`pct_pipeline.cli.main`, what `python -m pct_pipeline` and
the `pct` script call) in its own process, with its own stdout/stderr file descriptors and exit
status. To keep the suite fast, the processes are forked from one server process that has
imported torch, ffcv and zarr once (`CliForks`; importing them costs seconds per process); one
case per command also runs as a plain `python -m pct_pipeline` subprocess and must print the
same line, so nothing printed at import time is missed.

Run this file as a script (`python tests/test_faults.py --serve`) to start that server.
"""
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_pct

HERE = Path(__file__).resolve().parent
NOBODY = 65534


# --- the fork server: one process that imports everything, then forks one child per case ---

def _serve():
    """Read one JSON case per line on stdin: {argv, out, err, unprivileged, timeout}; fork a
    child that runs the CLI with stdout/stderr in those files; answer {code} on stdout."""
    import signal

    import ffcv.loader  # noqa: F401  (the expensive imports, done once)
    import ffcv.writer  # noqa: F401
    import torch  # noqa: F401
    import zarr  # noqa: F401

    from pct_pipeline import cli, dataset_command, models_command  # noqa: F401
    from pct_pipeline.analyze import command as _a, run as _ar  # noqa: F401
    from pct_pipeline.precompute import command as _p, run as _pr  # noqa: F401
    from pct_pipeline.train import command as _t, run as _tr  # noqa: F401
    from pct_pipeline.train import evaluate_command as _te  # noqa: F401

    channel = sys.stdout
    print(json.dumps({"ready": True}), file=channel, flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(case)
        code = _wait(pid, case["timeout"], signal)
        print(json.dumps({"code": code}), file=channel, flush=True)


def _wait(pid, timeout, signal):
    import time

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.01)


def _child(case):
    """Become `pct ARGV`: exit status as the interpreter would give it, traceback included."""
    import traceback

    for fd, name in ((1, case["out"]), (2, case["err"])):
        os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    os.close(0)
    if case["unprivileged"] and os.geteuid() == 0:  # root reads and writes everything
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    code = 1
    try:
        from pct_pipeline.cli import main

        main(case["argv"])
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)



# --- pytest side ---

RES = 24
LAYOUT = ["--rows-per-chunk", "16", "--chunks-per-shard", "2"]  # 4 shards of the 120 images
RECORD = []  # (case, result) of every run, for the table in docs/errors.md


class CliForks:
    """The fork server (see the module docstring) and a way to run one case through it."""

    def __init__(self, scratch):
        self.scratch = Path(scratch)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
            [str(HERE), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}

    def run(self, argv, unprivileged=False, timeout=300):
        """(exit status, stdout, stderr) of `pct ARGV` in a fresh child process."""
        out, err = self.scratch / "stdout", self.scratch / "stderr"
        case = {"argv": [str(a) for a in argv], "out": str(out), "err": str(err),
                "unprivileged": unprivileged, "timeout": timeout}
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        code = json.loads(self.proc.stdout.readline())["code"]
        return code, out.read_text(), err.read_text()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def snapshot(root, skip=()):
    """{relative path: sha256} of every file under `root`, except under the `skip` folders."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in filenames:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_unchanged(before, after):
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not (added or removed or changed), f"added {added}, removed {removed}, changed {changed}"


def assert_one_line(code, err, expected_code=2):
    """A user error: the status, one `pct: error:` (or `pct: interrupted`) line, no traceback."""
    assert code == expected_code, (code, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pct: "), err[-3000:]
    return lines[0]


# --- the world every case runs against: real data, checkpoints and stores ---

class World:
    """Paths of the inputs the cases use (see `build_world`)."""

    def __init__(self, root):
        self.root = Path(root)


def save_model(path, arch, num_classes=10, seed=0, edit=None, **extra):
    from pct_pipeline.models import build_model, save_atomic

    torch.manual_seed(seed)
    state = build_model(arch, num_classes).state_dict()
    if edit:
        edit(state)
    save_atomic({"model": state, "arch": arch, "num_classes": num_classes, **extra}, path)
    return path


def precompute_in_process(data, out, teacher, **options):
    from pct_pipeline.precompute.config import PrecomputeConfig
    from pct_pipeline.precompute.run import run

    settings = dict(resolution=RES, batch_size=32, workers=1, rows_per_chunk=16,
                    chunks_per_shard=2, views=2)
    settings.update(options)
    run(PrecomputeConfig(data=str(data), teachers=(("cnn_small", str(teacher)),), out=str(out),
                         **settings))
    return out


def make_store_like(path, source, num_classes=None, logits=None):
    """A complete teacher cache with `source`'s attributes and layout but other logits (and,
    with `num_classes`, another class count)."""
    from pct_pipeline import store

    src = store.open_store(source)
    attrs = {k: v for k, v in src.attrs.items() if k not in ("chunk_rows", "shard_rows",
                                                             "num_shards")}
    c = num_classes or src.num_classes
    layout = store.create_store(path, kind=src.kind, labels=src.labels, num_classes=c,
                                views=src.views, attributes=attrs, rows_per_chunk=16,
                                chunks_per_shard=2)
    for view in range(src.views):
        for shard in range(layout["num_shards"]):
            lo, hi = store.shard_bounds(layout, shard)
            block = np.zeros((hi - lo, c), np.float16) if logits is None else logits[lo:hi]
            store.write_unit(path, view, shard, logits=block, crops=src.crops(view)[lo:hi])
    return path


def corrupt_one_chunk(path):
    """Flip bytes in the middle of view 0's first logits shard (its checksum then fails)."""
    chunk = next(p for p in sorted((path / "logits").rglob("*")) if p.is_file()
                 and p.relative_to(path / "logits").parts[:2] == ("c", "0"))
    data = bytearray(chunk.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))
    return chunk


def build_world(root, small_tree, train_beton, val_beton, teacher_ckpt):
    """Copies of the session's data and teacher, and every broken variant the cases use."""
    import zarr

    w = World(root)
    d = root
    for name, src in (("train", train_beton), ("val", val_beton)):
        shutil.copy(src, d / f"{name}.beton")
        shutil.copy(f"{src}.json", d / f"{name}.beton.json")
    w.train, w.val = d / "train.beton", d / "val.beton"
    w.tree = shutil.copytree(small_tree, d / "tree")  # an ImageFolder: 10 classes x 12 images
    w.teacher = shutil.copy(teacher_ckpt, d / "teacher.pt")
    # data files that are not what they claim
    w.missing = d / "missing.beton"
    w.folder = d / "folder.beton"
    w.folder.mkdir()
    w.trunc_beton = d / "truncated.beton"
    w.trunc_beton.write_bytes(w.train.read_bytes()[:w.train.stat().st_size // 2])
    w.empty_beton = d / "empty.beton"
    w.empty_beton.touch()
    w.text_beton = d / "notes.beton"
    w.text_beton.write_text("this is not a dataset\n")
    # checkpoints
    w.missing_pt = d / "missing.pt"
    w.folder_pt = d / "folder.pt"
    w.folder_pt.mkdir()
    w.empty_pt = d / "empty.pt"
    w.empty_pt.touch()
    w.trunc_pt = d / "truncated.pt"
    w.trunc_pt.write_bytes(Path(w.teacher).read_bytes()[:Path(w.teacher).stat().st_size // 2])
    w.wide_pt = save_model(d / "wide.pt", "cnn_wide")
    w.lying_pt = save_model(d / "lying.pt", "cnn_wide")  # says cnn_small, holds cnn_wide
    state = torch.load(w.lying_pt, weights_only=False)
    state["arch"] = "cnn_small"
    torch.save(state, w.lying_pt)
    w.seven_pt = save_model(d / "seven.pt", "cnn_small", num_classes=7)
    w.bare_pt = d / "bare.pt"  # a state dict alone: no architecture recorded
    torch.save(torch.load(w.teacher, weights_only=False)["model"], w.bare_pt)
    w.nan_pt = save_model(d / "nan.pt", "cnn_small",
                          edit=lambda s: s["features.0.weight"].fill_(float("nan")))
    # stores
    w.cache = precompute_in_process(w.train, d / "cache.zarr", w.teacher)
    w.val_cache = precompute_in_process(w.val, d / "val_cache.zarr", w.teacher)
    w.pred = precompute_in_process(w.val, d / "pred.zarr", w.teacher, views=None,
                                   eval_view=True)
    w.pred_train = precompute_in_process(w.train, d / "pred_train.zarr", w.teacher, views=None,
                                         eval_view=True)
    w.cache7 = make_store_like(d / "cache7.zarr", w.cache, num_classes=7)
    w.pred7 = make_store_like(d / "pred7.zarr", w.pred, num_classes=7)
    nan = np.zeros((120, 10), np.float16)
    nan[37, 4] = np.nan
    w.nan_cache = make_store_like(d / "nan_cache.zarr", w.cache, logits=nan)
    w.foreign = d / "foreign.zarr"  # some other project's Zarr group
    zarr.create_group(store=str(w.foreign), attributes={"project": "other"}).create_array(
        "x", data=np.arange(10))
    w.plain_dir = d / "plain.zarr"
    w.plain_dir.mkdir()
    (w.plain_dir / "notes.txt").write_text("keep me\n")
    w.incomplete = d / "incomplete.zarr"
    shutil.copytree(w.cache, w.incomplete)
    zarr.open_group(str(w.incomplete), mode="r+")["done"][1, 2] = False
    w.corrupt = d / "corrupt.zarr"
    shutil.copytree(w.cache, w.corrupt)
    w.corrupt_chunk = corrupt_one_chunk(w.corrupt)
    w.corrupt_pred = d / "corrupt_pred.zarr"
    shutil.copytree(w.pred, w.corrupt_pred)
    chunk = next(p for p in sorted((w.corrupt_pred / "logits").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:-9] + b"corrupted")
    w.stub = d / "stub.zarr"  # creation interrupted: the group exists, its arrays do not
    zarr.create_group(store=str(w.stub), attributes=dict(
        zarr.open_group(str(w.cache), mode="r").attrs.asdict()))
    # files some other way unreadable
    w.secret_beton = shutil.copy(w.train, d / "secret.beton")
    w.secret_pt = shutil.copy(w.teacher, d / "secret.pt")
    w.secret_store = d / "secret.zarr"
    shutil.copytree(w.pred, w.secret_store)
    w.secret_tree = shutil.copytree(small_tree, d / "secret_tree")
    for path in (w.secret_beton, w.secret_pt, w.secret_store, w.secret_tree):
        os.chmod(path, 0)
    w.existing_file = d / "existing.txt"
    w.existing_file.write_text("an output of something else\n")
    w.started = d / "run_started"  # the run folder of cases that fail once training started
    w.run_dir = d / "run"  # a previous run with its checkpoint
    w.run_dir.mkdir()
    w.run_ckpt = shutil.copy(w.teacher, w.run_dir / "checkpoint.pt")
    return w


# --- the cases ---

@dataclass(frozen=True)
class Case:
    """One bad invocation. `args(w)` builds the argv, `expect(w)` the substrings that the one
    line on stderr must contain (the problem and the bad value). `where`: None, or `readonly`
    / `full` for a case whose output goes to the folder `w.place`, a read-only or a full file
    system mounted for the case. `unprivileged`: run as an ordinary user (root reads anything).
    `code`: the exit status (2 for PctError and click's usage errors). `started`: the run
    folder (relative to the world) a case that fails mid-run may create; nothing else may
    appear. `after(w, forks)`: more checks, e.g. that what a full disk cut short resumes."""
    command: str
    what: str
    args: object
    expect: object
    where: str | None = None
    unprivileged: bool = False
    code: int = 2
    timeout: int = 300
    after: object = None
    started: str | None = None

    @property
    def id(self):
        return f"{self.command}: {self.what}"


def write_dataset(src, out, *extra):
    return ["write-dataset", src, out, "-j", 1, "--max-resolution", 32, *extra]


def precompute(w, *extra, data=None, teacher=None, out=None, views=2):
    return ["precompute-teachers", "--data", data or w.train, "--teacher",
            teacher or f"cnn_small={w.teacher}", "--views", views, "--out",
            out or w.root / "new.zarr", "--resolution", RES, "--batch-size", 32, "-j", 1,
            *LAYOUT, *extra]


def train(w, *extra, data=None, val=None, out=None):
    return ["train", "--data", data or w.train, "--val", val or w.val, "--out",
            out or w.root / "new_run", "--arch", "cnn_small", "--batch-size", 16, "-j", 1,
            "--resolution", RES, "--epochs", 1, "--max-steps-per-epoch", 2, "--print-freq", 0,
            *extra]


def evaluate(w, *extra, checkpoint=None, data=None, out=None):
    return ["evaluate", "--checkpoint", checkpoint or w.teacher, "--data", data or w.val,
            "--out", out or w.root / "new_pred.zarr", "--resolution", RES, "-b", 16, "-j", 1,
            *extra]


def analyze(w, new, *extra, old=None):
    return ["analyze", old or w.pred, new, "--bootstrap", 10, *extra]


NOSPACE = "No space left on device"
READONLY = ("Read-only file system", "Permission denied")  # as root / as a user
C = Case
CASES = [
    # write-dataset
    C("write-dataset", "source folder missing",
      lambda w: write_dataset(w.root / "no_such_folder", w.root / "o.beton"),
      lambda w: ["dataset folder not found", f"{w.root / 'no_such_folder'}"]),
    C("write-dataset", "source is a file",
      lambda w: write_dataset(w.train, w.root / "o.beton"),
      lambda w: ["dataset source is not a folder", f"{w.train}"]),
    C("write-dataset", "source folder unreadable",
      lambda w: write_dataset(w.secret_tree, w.root / "o.beton"),
      lambda w: [f"{w.secret_tree}", "is not readable"], unprivileged=True),
    C("write-dataset", "output folder missing",
      lambda w: write_dataset(w.tree, w.root / "nowhere" / "o.beton"),
      lambda w: ["output folder does not exist", f"{w.root / 'nowhere'}"]),
    C("write-dataset", "output is a folder",
      lambda w: write_dataset(w.tree, w.folder),
      lambda w: ["output is a folder", f"{w.folder}"]),
    C("write-dataset", "output exists",
      lambda w: write_dataset(w.tree, w.train),
      lambda w: [f"{w.train} exists (use --overwrite to replace it)"]),
    C("write-dataset", "output folder not writable",
      lambda w: write_dataset(w.tree, w.place / "o.beton"),
      lambda w: ["cannot write", f"{w.place / 'o.beton'}"], where="readonly"),
    C("write-dataset", "disk full during the write",
      lambda w: write_dataset(w.tree, w.place / "o.beton"),
      lambda w: ["cannot write", f"{w.place / 'o.beton'}", NOSPACE], where="full",
      after=lambda w, forks: assert_nothing_left(w.place)),
    C("write-dataset", "--max-resolution 0",
      lambda w: write_dataset(w.tree, w.root / "o.beton", "--max-resolution", 0),
      lambda w: ["--max-resolution", "0 is not in the range x>=8"]),
    C("write-dataset", "--jpeg-quality 101",
      lambda w: write_dataset(w.tree, w.root / "o.beton", "--jpeg-quality", 101),
      lambda w: ["--jpeg-quality", "101 is not in the range 1<=x<=100"]),
    C("write-dataset", "unknown option",
      lambda w: write_dataset(w.tree, w.root / "o.beton", "--quality", 3),
      lambda w: ["No such option '--quality'"]),

    # precompute-teachers
    C("precompute-teachers", "--data missing", lambda w: precompute(w, data=w.missing),
      lambda w: ["dataset file not found", f"{w.missing}"]),
    C("precompute-teachers", "--data is a folder", lambda w: precompute(w, data=w.folder),
      lambda w: ["dataset is a folder", f"{w.folder}"]),
    C("precompute-teachers", "--data truncated .beton", lambda w: precompute(w, data=w.trunc_beton),
      lambda w: [f"truncated .beton file: {w.trunc_beton}"]),
    C("precompute-teachers", "--data empty file", lambda w: precompute(w, data=w.empty_beton),
      lambda w: ["not a readable .beton file", f"{w.empty_beton}"]),
    C("precompute-teachers", "--data a text file", lambda w: precompute(w, data=w.text_beton),
      lambda w: ["not a readable .beton file", f"{w.text_beton}"]),
    C("precompute-teachers", "--data unreadable", lambda w: precompute(w, data=w.secret_beton),
      lambda w: [f"{w.secret_beton}", "is not readable"], unprivileged=True),
    C("precompute-teachers", "teacher checkpoint missing",
      lambda w: precompute(w, teacher=f"cnn_small={w.missing_pt}"),
      lambda w: ["checkpoint not found", f"{w.missing_pt}"]),
    C("precompute-teachers", "teacher checkpoint is a folder",
      lambda w: precompute(w, teacher=f"cnn_small={w.folder_pt}"),
      lambda w: ["checkpoint is a folder", f"{w.folder_pt}"]),
    C("precompute-teachers", "teacher checkpoint empty",
      lambda w: precompute(w, teacher=f"cnn_small={w.empty_pt}"),
      lambda w: ["unreadable checkpoint", f"{w.empty_pt}"]),
    C("precompute-teachers", "teacher checkpoint truncated",
      lambda w: precompute(w, teacher=f"cnn_small={w.trunc_pt}"),
      lambda w: ["unreadable checkpoint", f"{w.trunc_pt}"]),
    C("precompute-teachers", "teacher checkpoint unreadable",
      lambda w: precompute(w, teacher=f"cnn_small={w.secret_pt}"),
      lambda w: ["unreadable checkpoint", f"{w.secret_pt}", "Permission denied"],
      unprivileged=True),
    C("precompute-teachers", "teacher checkpoint of another architecture",
      lambda w: precompute(w, teacher=f"cnn_small={w.wide_pt}"),
      lambda w: [f"checkpoint {w.wide_pt} does not fit cnn_small", "(32, 3, 3, 3)"]),
    C("precompute-teachers", "teacher checkpoint with 7 classes",
      lambda w: precompute(w, teacher=f"cnn_small={w.seven_pt}"),
      lambda w: [f"checkpoint {w.seven_pt} has 7 classes, the data has 10"]),
    C("precompute-teachers", "unknown architecture",
      lambda w: precompute(w, teacher=f"cnn_tiny={w.teacher}"),
      lambda w: ["unknown architecture 'cnn_tiny'"]),
    C("precompute-teachers", "--views 0", lambda w: precompute(w, views=0),
      lambda w: ["--views must be at least 1, got 0"]),
    C("precompute-teachers", "--views -3", lambda w: precompute(w, views=-3),
      lambda w: ["--views must be at least 1, got -3"]),
    C("precompute-teachers", "--batch-size 0", lambda w: precompute(w, "--batch-size", 0),
      lambda w: ["--batch-size", "0 is not in the range x>=1"]),
    C("precompute-teachers", "--resolution 4", lambda w: precompute(w, "--resolution", 4),
      lambda w: ["--resolution", "4 is not in the range x>=8"]),
    C("precompute-teachers", "--dtype float64", lambda w: precompute(w, "--dtype", "float64"),
      lambda w: ["--dtype", "'float64' is not one of 'float16', 'float32'"]),
    C("precompute-teachers", "--scale 0.9 0.1", lambda w: precompute(w, "--scale", 0.9, 0.1),
      lambda w: ["--scale must be 0 < LO <= HI, got 0.9 0.1"]),
    C("precompute-teachers", "--device of an unknown name",
      lambda w: precompute(w, "--device", "gpu0"), lambda w: ["unknown --device 'gpu0'"]),
    C("precompute-teachers", "--device cuda:99", lambda w: precompute(w, "--device", "cuda:99"),
      lambda w: ["--device 'cuda:99': this machine has"]),
    C("precompute-teachers", "--out is another project's Zarr",
      lambda w: precompute(w, out=w.foreign),
      lambda w: [f"{w.foreign} exists and is not a pct store", "--overwrite"]),
    C("precompute-teachers", "--out is an existing file",
      lambda w: precompute(w, out=w.existing_file),
      lambda w: [f"{w.existing_file} exists and is not a pct store"]),
    C("precompute-teachers", "--out is a store of another data set",
      lambda w: precompute(w, out=w.val_cache),
      lambda w: [f"{w.val_cache} was made by a different command", "dataset size"]),
    C("precompute-teachers", "--out is a store whose creation was cut short",
      lambda w: precompute(w, out=w.stub),
      lambda w: [f"store {w.stub} lacks array 'done'", "--overwrite"]),
    C("precompute-teachers", "--out folder not writable",
      lambda w: precompute(w, out=w.place / "c.zarr"),
      lambda w: ["cannot write", f"{w.place}"], where="readonly"),
    C("precompute-teachers", "disk full during the write",
      lambda w: precompute(w, out=w.place / "c.zarr"),
      lambda w: ["cannot write", f"{w.place / 'c.zarr'}", NOSPACE], where="full",
      after=lambda w, forks: assert_store_resumes(w, forks)),
    C("precompute-teachers", "--teacher without ARCH=",
      lambda w: precompute(w, teacher="cnn_small"),
      lambda w: ["--teacher expects ARCH=CHECKPOINT, got 'cnn_small'"]),
    C("precompute-teachers", "--teacher with nothing after ARCH=",
      lambda w: precompute(w, teacher="cnn_small= "),
      lambda w: ["--teacher expects ARCH=CHECKPOINT, got 'cnn_small= '",
                 "no checkpoint after '='"]),
    C("precompute-teachers", "--teacher a path holding '=', without ARCH=",
      lambda w: precompute(w, teacher=f"{w.root}/lr=0.1/c.pt"),
      lambda w: [f"--teacher expects ARCH=CHECKPOINT, got '{w.root}/lr=0.1/c.pt'"]),

    # train
    C("train", "--data missing", lambda w: train(w, data=w.missing),
      lambda w: ["dataset file not found", f"{w.missing}"]),
    C("train", "--val is a folder", lambda w: train(w, val=w.folder),
      lambda w: ["dataset is a folder", f"{w.folder}"]),
    C("train", "--data truncated .beton", lambda w: train(w, data=w.trunc_beton),
      lambda w: [f"truncated .beton file: {w.trunc_beton}"]),
    C("train", "--val empty file", lambda w: train(w, val=w.empty_beton),
      lambda w: ["not a readable .beton file", f"{w.empty_beton}"]),
    C("train", "--data unreadable", lambda w: train(w, data=w.secret_beton),
      lambda w: [f"{w.secret_beton}", "is not readable"], unprivileged=True),
    C("train", "--teacher-cache missing",
      lambda w: train(w, "--teacher-cache", w.root / "none.zarr", "--kd-loss-mode", "kl"),
      lambda w: ["store not found", f"{w.root / 'none.zarr'}"]),
    C("train", "--teacher-cache is another project's Zarr",
      lambda w: train(w, "--teacher-cache", w.foreign, "--kd-loss-mode", "kl"),
      lambda w: ["not a pct store", f"{w.foreign}"]),
    C("train", "--teacher-cache is a plain folder",
      lambda w: train(w, "--teacher-cache", w.plain_dir, "--kd-loss-mode", "kl"),
      lambda w: ["not a Zarr store", f"{w.plain_dir}"]),
    C("train", "--teacher-cache incomplete",
      lambda w: train(w, "--teacher-cache", w.incomplete, "--kd-loss-mode", "kl"),
      lambda w: [f"incomplete store {w.incomplete}", "view 1 shard 2"]),
    C("train", "--teacher-cache whose creation was cut short",
      lambda w: train(w, "--teacher-cache", w.stub, "--kd-loss-mode", "kl"),
      lambda w: [f"store {w.stub} lacks array"]),
    C("train", "--teacher-cache of another data set",
      lambda w: train(w, "--teacher-cache", w.val_cache, "--kd-loss-mode", "kl"),
      lambda w: [f"teacher cache {w.val_cache} was made from other data",
                 "num_samples 80 in the cache, 120"]),
    C("train", "--teacher-cache with 7 classes",
      lambda w: train(w, "--teacher-cache", w.cache7, "--kd-loss-mode", "kl"),
      lambda w: [f"teacher cache {w.cache7} has 7 classes, the model has 10"]),
    C("train", "--teacher-cache is a predictions store",
      lambda w: train(w, "--teacher-cache", w.pred_train, "--kd-loss-mode", "kl"),
      lambda w: [f"store {w.pred_train} is a predictions store, expected teacher-cache"]),
    C("train", "--teacher-cache with a corrupted chunk",
      lambda w: train(w, "--teacher-cache", w.corrupt, "--kd-loss-mode", "kl", out=w.started),
      lambda w: [f"store {w.corrupt}: array 'logits' is unreadable or corrupted"],
      started="run_started"),
    C("train", "--teacher-cache holding NaN",
      lambda w: train(w, "--teacher-cache", w.nan_cache, "--kd-loss-mode", "kl", out=w.started),
      lambda w: [f"teacher cache {w.nan_cache} has NaN/inf logits at sample 37, view 0"],
      started="run_started"),
    C("train", "--teacher-cache unreadable",
      lambda w: train(w, "--teacher-cache", w.secret_store, "--kd-loss-mode", "kl"),
      lambda w: [f"{w.secret_store}", "is not readable"], unprivileged=True),
    C("train", "--resume missing", lambda w: train(w, "--resume", w.missing_pt),
      lambda w: ["checkpoint not found", f"{w.missing_pt}"]),
    C("train", "--resume is a folder", lambda w: train(w, "--resume", w.folder_pt),
      lambda w: ["checkpoint is a folder", f"{w.folder_pt}"]),
    C("train", "--resume empty", lambda w: train(w, "--resume", w.empty_pt),
      lambda w: ["unreadable checkpoint", f"{w.empty_pt}"]),
    C("train", "--resume truncated", lambda w: train(w, "--resume", w.trunc_pt),
      lambda w: ["unreadable checkpoint", f"{w.trunc_pt}"]),
    C("train", "--resume of another architecture", lambda w: train(w, "--resume", w.wide_pt),
      lambda w: [f"--resume {w.wide_pt} is a cnn_wide checkpoint, --arch is cnn_small"]),
    C("train", "--resume with 7 classes", lambda w: train(w, "--resume", w.seven_pt),
      lambda w: [f"checkpoint {w.seven_pt} does not fit cnn_small", "(7, 32)", "(10, 32)"]),
    C("train", "--resume with NaN weights",
      lambda w: train(w, "--resume", w.nan_pt, out=w.started),
      lambda w: ["training loss is nan at epoch 0, step 0"], started="run_started"),
    C("train", "--lr 1e30 (diverges)", lambda w: train(w, "--lr", 1e30, out=w.started),
      lambda w: ["training loss is", "at epoch 0, step 1", "lower --lr"], started="run_started"),
    C("train", "--epochs 0", lambda w: train(w, "--epochs", 0),
      lambda w: ["--epochs", "0 is not in the range x>=1"]),
    C("train", "--epochs -1", lambda w: train(w, "--epochs", -1),
      lambda w: ["--epochs", "-1 is not in the range x>=1"]),
    C("train", "--kd-temperature 0", lambda w: train(w, "--kd-temperature", 0),
      lambda w: ["--kd-temperature", "0.0 is not in the range x>0"]),
    C("train", "--kd-alpha 1.5", lambda w: train(w, "--kd-alpha", 1.5),
      lambda w: ["--kd-alpha", "1.5 is not in the range 0<=x<=1"]),
    C("train", "--batch-size 0", lambda w: train(w, "--batch-size", 0),
      lambda w: ["--batch-size", "0 is not in the range x>=1"]),
    C("train", "--batch-size larger than the data", lambda w: train(w, "--batch-size", 1000),
      lambda w: ["--batch-size 1000 exceeds the 120 training samples"]),
    C("train", "unknown --arch", lambda w: train(w, "--arch", "resnet_9000"),
      lambda w: ["unknown architecture 'resnet_9000'"]),
    C("train", "unknown --kd-loss-mode", lambda w: train(w, "--kd-loss-mode", "kk"),
      lambda w: ["--kd-loss-mode", "'kk' is not one of"]),
    C("train", "--kd-loss-mode without a teacher", lambda w: train(w, "--kd-loss-mode", "kl"),
      lambda w: ["--kd-loss-mode kl needs --teacher-cache or --online-teacher"]),
    C("train", "cna with a cache without features",
      lambda w: train(w, "--teacher-cache", w.cache, "--kd-loss-mode", "cna"),
      lambda w: ["--kd-loss-mode cna needs teacher features", f"{w.cache}"]),
    C("train", "--resolution other than the cache's",
      lambda w: train(w, "--teacher-cache", w.cache, "--kd-loss-mode", "kl", "--resolution", 32),
      lambda w: ["--resolution 32 contradicts the teacher cache", "made with resolution 24"]),
    C("train", "--online-teacher without ARCH=", lambda w: train(w, "--online-teacher", "x.pt"),
      lambda w: ["--online-teacher expects ARCH=CHECKPOINT, got 'x.pt'"]),
    C("train", "--online-teacher with nothing after ARCH=",
      lambda w: train(w, "--online-teacher", "cnn_small="),
      lambda w: ["--online-teacher expects ARCH=CHECKPOINT, got 'cnn_small='"]),
    C("train", "--bct-old-model with nothing before '='",
      lambda w: train(w, "--bct-old-model", "=c.pt"),
      lambda w: ["--bct-old-model expects [ARCH=]CHECKPOINT, got '=c.pt'"]),
    C("train", "--model-kwargs of an unknown name", lambda w: train(w, "--model-kwargs", "depht=2"),
      lambda w: ["bad model options for cnn_small", "depht"]),
    C("train", "--device of an unknown name", lambda w: train(w, "--device", "gpu0"),
      lambda w: ["unknown --device 'gpu0'"]),
    C("train", "--out is an existing file", lambda w: train(w, out=w.existing_file),
      lambda w: [f"--out {w.existing_file} is not a folder"]),
    C("train", "--out folder not writable", lambda w: train(w, out=w.place / "run"),
      lambda w: ["cannot write", f"{w.place / 'run'}"], where="readonly"),
    C("train", "disk full during the run", lambda w: train(w, out=w.place / "run"),
      lambda w: ["cannot write", f"{w.place / 'run'}", NOSPACE], where="full",
      after=lambda w, forks: assert_no_partial_checkpoint(w.place / "run")),

    # evaluate
    C("evaluate", "--checkpoint missing", lambda w: evaluate(w, checkpoint=w.missing_pt),
      lambda w: ["checkpoint not found", f"{w.missing_pt}"]),
    C("evaluate", "--checkpoint is a folder", lambda w: evaluate(w, checkpoint=w.folder_pt),
      lambda w: ["checkpoint is a folder", f"{w.folder_pt}"]),
    C("evaluate", "--checkpoint empty", lambda w: evaluate(w, checkpoint=w.empty_pt),
      lambda w: ["unreadable checkpoint", f"{w.empty_pt}"]),
    C("evaluate", "--checkpoint truncated", lambda w: evaluate(w, checkpoint=w.trunc_pt),
      lambda w: ["unreadable checkpoint", f"{w.trunc_pt}"]),
    C("evaluate", "--checkpoint unreadable", lambda w: evaluate(w, checkpoint=w.secret_pt),
      lambda w: [f"{w.secret_pt}", "is not readable"], unprivileged=True),
    C("evaluate", "--checkpoint without its architecture",
      lambda w: evaluate(w, checkpoint=w.bare_pt),
      lambda w: [f"{w.bare_pt} does not name its architecture"]),
    C("evaluate", "--checkpoint whose weights are of another architecture",
      lambda w: evaluate(w, checkpoint=w.lying_pt),
      lambda w: [f"checkpoint {w.lying_pt} does not fit cnn_small"]),
    C("evaluate", "--checkpoint with 7 classes, data with 10",
      lambda w: evaluate(w, checkpoint=w.seven_pt),
      lambda w: [f"checkpoint {w.seven_pt} has 7 classes, the data {w.val} has 10"]),
    C("evaluate", "--checkpoint with NaN weights", lambda w: evaluate(w, checkpoint=w.nan_pt),
      lambda w: [f"checkpoint {w.nan_pt} gives NaN/inf logits for sample 0 of {w.val}"]),
    C("evaluate", "--data truncated .beton", lambda w: evaluate(w, data=w.trunc_beton),
      lambda w: [f"truncated .beton file: {w.trunc_beton}"]),
    C("evaluate", "--data missing", lambda w: evaluate(w, data=w.missing),
      lambda w: ["dataset file not found", f"{w.missing}"]),
    C("evaluate", "--out is an existing store", lambda w: evaluate(w, out=w.pred),
      lambda w: [f"{w.pred} exists (use --overwrite to replace it)"]),
    C("evaluate", "--out is another project's Zarr", lambda w: evaluate(w, out=w.foreign),
      lambda w: [f"{w.foreign} exists (use --overwrite to replace it)"]),
    C("evaluate", "--out folder not writable", lambda w: evaluate(w, out=w.place / "p.zarr"),
      lambda w: ["cannot write", f"{w.place / 'p.zarr'}"], where="readonly"),
    C("evaluate", "disk full", lambda w: evaluate(w, out=w.place / "p.zarr"),
      lambda w: ["cannot write", f"{w.place / 'p.zarr'}", NOSPACE], where="filled",
      after=lambda w, forks: assert_nothing_left(w.place, but=["filler"])),
    C("evaluate", "--batch-size 0", lambda w: evaluate(w, "-b", 0),
      lambda w: ["--batch-size", "0 is not in the range x>=1"]),

    # analyze
    C("analyze", "OLD missing", lambda w: analyze(w, w.pred, old=w.root / "old.zarr"),
      lambda w: ["not found", f"{w.root / 'old.zarr'}"]),
    C("analyze", "NEW is another project's Zarr", lambda w: analyze(w, w.foreign),
      lambda w: ["not a pct store", f"{w.foreign}"]),
    C("analyze", "NEW incomplete", lambda w: analyze(w, w.incomplete),
      lambda w: [f"incomplete store {w.incomplete}"]),
    C("analyze", "NEW whose creation was cut short", lambda w: analyze(w, w.stub),
      lambda w: [f"store {w.stub} lacks array"]),
    C("analyze", "NEW is a 2-view teacher cache", lambda w: analyze(w, w.val_cache),
      lambda w: [f"{w.val_cache} is a teacher-cache store with 2 views"]),
    C("analyze", "NEW with a corrupted chunk", lambda w: analyze(w, w.corrupt_pred),
      lambda w: [f"store {w.corrupt_pred}: array 'logits' is unreadable or corrupted"]),
    C("analyze", "NEW of another data set", lambda w: analyze(w, w.pred_train),
      lambda w: ["sample counts differ", f"{w.pred} has 80", f"{w.pred_train} has 120"]),
    C("analyze", "NEW with 7 classes", lambda w: analyze(w, w.pred7),
      lambda w: ["class counts differ", f"{w.pred7} has 7"]),
    C("analyze", "NEW unreadable", lambda w: analyze(w, w.secret_store),
      lambda w: [f"{w.secret_store}", "is not readable"], unprivileged=True),
    C("analyze", "NEW is an empty file", lambda w: analyze(w, w.empty_pt),
      lambda w: ["neither a pct store", f"{w.empty_pt}"]),
    C("analyze", "NEW is a truncated .result", lambda w: analyze(w, w.trunc_pt),
      lambda w: ["unreadable .result file", f"{w.trunc_pt}"]),
    C("analyze", "NEW is a checkpoint, not a .result", lambda w: analyze(w, w.teacher),
      lambda w: [f"{w.teacher} is not a .result file"]),
    C("analyze", "--json in a missing folder",
      lambda w: analyze(w, w.pred, "--json", w.root / "nowhere" / "r.json"),
      lambda w: ["output folder does not exist", f"{w.root / 'nowhere'}"]),
    C("analyze", "--json is a folder", lambda w: analyze(w, w.pred, "--json", w.folder),
      lambda w: ["--json", f"{w.folder}", "is a directory"]),
    C("analyze", "--json folder not writable",
      lambda w: analyze(w, w.pred, "--json", w.place / "r.json"),
      lambda w: ["cannot write", f"{w.place / 'r.json'}"], where="readonly"),
    C("analyze", "disk full when writing --json",
      lambda w: analyze(w, w.pred, "--json", w.place / "r.json"),
      lambda w: ["cannot write", f"{w.place / 'r.json'}", NOSPACE], where="filled",
      after=lambda w, forks: assert_nothing_left(w.place, but=["filler"])),
    C("analyze", "--bootstrap -1", lambda w: analyze(w, w.pred, "--bootstrap", -1),
      lambda w: ["--bootstrap", "-1 is not in the range x>=0"]),

    # the group itself and `pct models`
    C("models", "unknown architecture", lambda w: ["models", "cnn_tiny"],
      lambda w: ["unknown architecture 'cnn_tiny'"]),
    C("pct", "misspelt command", lambda w: ["trian"], lambda w: ["No such command 'trian'"]),
]


# --- what a failed write may leave ---

def assert_nothing_left(folder, but=()):
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name not in but)
    assert not left, left


def assert_no_partial_checkpoint(run):
    """Nothing under a temporary name; a checkpoint.pt, if any, is whole."""
    left = sorted(p.name for p in run.rglob("*"))
    assert not [name for name in left if ".tmp-" in name or ".partial" in name], left
    if (run / "checkpoint.pt").exists():
        torch.load(run / "checkpoint.pt", weights_only=False)


def assert_store_resumes(w, forks):
    """The store the full disk cut short is refused as incomplete; with room again, the same
    command finishes it, equal to a store written in one go."""
    from pct_pipeline import store
    from pct_pipeline.errors import PctError
    from test_precompute import assert_same_store

    out = w.place / "c.zarr"
    with pytest.raises(PctError, match="incomplete store|lacks array"):
        store.open_store(out)
    subprocess.run(["mount", "-o", "remount,size=8m", str(w.place)], check=True)
    code, stdout, err = forks.run(precompute(w, out=out))
    assert code == 0, err
    assert_same_store(out, w.cache)


# --- file systems that refuse writes ---

def _mount_tmpfs(path, options):
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, text=True)
    return result.returncode == 0, result.stderr.strip()


@contextmanager
def place(w, where):
    """Set `w.place` to a folder that refuses writes: `readonly` (a read-only tmpfs as root, a
    mode 555 folder otherwise), `full` (a 64 KiB tmpfs) or `filled` (one already full)."""
    w.place = w.root / f"place_{where}"
    if where is None:
        yield w
        return
    mounted, why = False, ""
    if where == "readonly" and os.geteuid() != 0:
        w.place.mkdir()
        os.chmod(w.place, 0o555)
    else:
        mounted, why = _mount_tmpfs(w.place, "ro,size=64k" if where == "readonly" else "size=64k")
        if not mounted:
            w.place.rmdir()
            pytest.skip(f"cannot mount a tmpfs to make a {where} file system here ({why}); "
                        f"this case needs root and mount permission")
    try:
        if where == "filled":
            _fill(w.place)
        yield w
    finally:
        if mounted:
            subprocess.run(["umount", str(w.place)], check=True)
        else:
            os.chmod(w.place, 0o755)
        shutil.rmtree(w.place)


def _fill(folder):
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC


# --- fixtures and the tests ---

@pytest.fixture(scope="module")
def world(small_tree, train_beton, val_beton, teacher_ckpt):
    # Outside pytest's own (mode 700) temporary folder, so an ordinary user can reach it.
    root = Path(tempfile.mkdtemp(prefix="pct-faults-"))
    os.chmod(root, 0o755)
    try:
        yield build_world(root, small_tree, train_beton, val_beton, teacher_ckpt)
    finally:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.chmod(Path(dirpath, name), 0o755, follow_symlinks=False) \
                    if not Path(dirpath, name).is_symlink() else None
        shutil.rmtree(root)


@pytest.fixture(scope="module")
def forks():
    scratch = tempfile.mkdtemp(prefix="pct-faults-io-")
    server = CliForks(scratch)
    yield server
    server.close()
    shutil.rmtree(scratch)
    if os.environ.get("PCT_FAULTS_TABLE"):  # the table of docs/errors.md, from this run
        Path(os.environ["PCT_FAULTS_TABLE"]).write_text(markdown_table(RECORD))


def preserved(case):
    """What the case checks is kept, in words, for the table."""
    if case.started:
        return "existing files byte-identical; the new run folder holds config.json only"
    if case.where == "full" and case.command == "precompute-teachers":
        return ("existing files byte-identical; the store is refused as incomplete, and with "
                "room again the same command finishes it, equal to an uninterrupted run")
    if case.where == "full" and case.command == "train":
        return ("existing files byte-identical; no temporary file left, and a checkpoint.pt, "
                "if any, loads")
    if case.where in ("full", "filled"):
        return "existing files byte-identical; nothing left on the full file system"
    return "every existing file byte-identical, nothing added"


def markdown_table(record):
    rows = ["| command | what the user did | what they see on stderr | exit | preserved |",
            "|---|---|---|---|---|"]
    for case, code, err in record:
        line = err.replace(str(Path(tempfile.gettempdir())) + "/", "/tmp/")
        line = re.sub(r"/tmp/pct-faults-[^/]+/", "", line).replace("|", "\\|")
        rows.append(f"| `{case.command}` | {case.what} | `{line}` | {code} | {preserved(case)} |")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_and_damages_nothing(case, world, forks):
    with place(world, case.where) as w:
        before = snapshot(w.root, skip={w.place})
        code, _, err = forks.run(case.args(w), case.unprivileged, case.timeout)
        RECORD.append((case, code, err.strip()))
        line = assert_one_line(code, err, case.code)
        for part in case.expect(w):
            assert part in line, (part, line)
        skip = {w.place} | ({w.root / case.started} if case.started else set())
        assert_unchanged(before, snapshot(w.root, skip=skip))
        if case.after is not None:
            case.after(w, forks)
    if case.started:
        started = w.root / case.started
        assert sorted(p.name for p in started.iterdir()) == ["config.json"]
        shutil.rmtree(started)


SAME_IN_A_PLAIN_PROCESS = ["write-dataset: output is a folder", "precompute-teachers: --views 0",
                           "train: --batch-size larger than the data",
                           "evaluate: --checkpoint without its architecture",
                           "analyze: NEW of another data set"]


@pytest.mark.parametrize("name", SAME_IN_A_PLAIN_PROCESS)
def test_plain_process_prints_the_same_line(name, world, forks):
    """`python -m pct_pipeline` imports everything afresh: nothing it prints (a warning at
    import time, say) may add to the one line the forked child printed."""
    case = next(c for c in CASES if c.id == name)
    with place(world, case.where) as w:
        args = case.args(w)
        _, _, forked = forks.run(args)
        plain = run_pct(*args, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert plain.returncode == case.code
    assert plain.stderr == forked and assert_one_line(plain.returncode, plain.stderr, case.code)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()

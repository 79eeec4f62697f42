"""The fault suite's machinery (tests/test_faults_*.py hold the cases, one file per command).

Bad input to every `pct` command, as a user would produce it: one line on stderr naming the
problem and the bad value, a non-zero exit, no traceback, and every file that existed before
the run byte-identical after it (no file added, removed or changed).

Each case runs the real entry point (`pct_pipeline.cli.main`, what `python -m pct_pipeline` and
the `pct` script call) in its own process, with its own stdout/stderr file descriptors and exit
status. To keep the suite fast, the processes are forked from one server process that has
imported torch, ffcv and zarr once (`CliForks`; importing them costs seconds per process); one
case per command also runs as a plain `python -m pct_pipeline` subprocess and must print the
same line, so nothing printed at import time is missed.

Run this file as a script (`python tests/faults.py --serve`) to start that server.
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

from conftest import DIGITS, precompute_config, run_pct

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
    import torchvision  # noqa: F401
    import zarr  # noqa: F401

    from pct_pipeline import cli  # noqa: F401
    from pct_pipeline.dataset import command as _d  # noqa: F401
    from pct_pipeline.models import architectures, checkpoints, command as _m  # noqa: F401
    from pct_pipeline.analyze import command as _a, run as _ar  # noqa: F401
    from pct_pipeline.precompute import command as _p, run as _pr  # noqa: F401
    from pct_pipeline.train import command as _t, run as _tr  # noqa: F401
    from pct_pipeline.evaluate import command as _e, run as _er  # noqa: F401

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
    """{relative path: sha256} of every file under `root`, except the `skip` files and
    folders (and what is under them)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in filenames:
            path = Path(dirpath, name)
            if path in skip:
                continue
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
    extra.setdefault("classes", DIGITS[:num_classes] + [f"c{k}" for k in range(10, num_classes)])
    if extra["classes"] is None:
        del extra["classes"]
    save_atomic({"model": state, "arch": arch, "num_classes": num_classes, **extra}, path)
    return path


def precompute_in_process(data, out, teacher, **options):
    from pct_pipeline.precompute.run import run

    settings = dict(resolution=RES, batch_size=32, workers=1, rows_per_chunk=16,
                    chunks_per_shard=2, views=2)
    settings.update(options)
    run(precompute_config(data, out, [("cnn_small", str(teacher))], **settings))
    return out


def make_store_like(path, source, num_classes=None, logits=None):
    """A complete teacher cache with `source`'s attributes and layout but other logits (and,
    with `num_classes`, another class count)."""
    from pct_pipeline import store

    src = store.open_store(source)
    attrs = {k: v for k, v in src.attrs.items() if k not in ("chunk_rows", "shard_rows",
                                                             "num_shards", "unit_arrays",
                                                             "labels_record")}
    c = num_classes or src.num_classes
    contents = store.Contents(views=src.views, num_classes=c, rows_per_chunk=16,
                              chunks_per_shard=2)
    layout = store.create_store(path, src.kind, src.labels, contents, attrs)
    for view in range(src.views):
        for shard in range(layout["num_shards"]):
            lo, hi = store.shard_bounds(layout, shard)
            block = np.zeros((hi - lo, c), np.float16) if logits is None else logits[lo:hi]
            store.write_unit(path, view, shard, {"logits": block,
                                                 "crops": src.crops(view)[lo:hi]})
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


def copy_beton(src, dst, classes=None):
    """A copy of .beton `src` and its sidecar at `dst`, with other class names if given."""
    shutil.copy(src, dst)
    sidecar = json.loads(Path(f"{src}.json").read_text())
    if classes is not None:
        sidecar["classes"] = classes
    Path(f"{dst}.json").write_text(json.dumps(sidecar))
    return dst


def zero_images(src, dst):
    """A copy of .beton `src` (and its sidecar) whose stored JPEG bytes are all zero: the same
    sizes, labels and metadata, images that do not decode."""
    from ffcv.reader import Reader

    from pct_pipeline.dataset.reader import _image_table

    copy_beton(src, dst)
    _, _, ptrs, sizes = _image_table(Reader(str(src)))
    data = np.memmap(str(dst), dtype=np.uint8, mode="r+")
    for ptr, size in zip(ptrs, sizes):
        data[ptr:ptr + size] = 0
    data.flush()
    return dst


def one_class_beton(tree, out):
    """A .beton (written with ffcv's own writer, as another tool would) of the first class
    folder of `tree` alone: every label 0, one class name."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from pct_pipeline.dataset import load_rgb

    folder = sorted(p for p in Path(tree).iterdir() if p.is_dir())[0]
    rows = [(load_rgb(p), 0, i) for i, p in enumerate(sorted(folder.iterdir()))]
    fields = {"image": RGBImageField(write_mode="jpg", max_resolution=32), "label": IntField(),
              "index": IntField()}
    DatasetWriter(str(out), fields, num_workers=1).from_indexed_dataset(rows)
    Path(f"{out}.json").write_text(json.dumps({"classes": [folder.name], "num_classes": 1}))
    return out


def tree_with(tree, path, image, name):
    """A copy of ImageFolder `tree` at `path` with one more image (a PIL Image) in its first
    class folder."""
    shutil.copytree(tree, path)
    folder = sorted(p for p in Path(path).iterdir() if p.is_dir())[0]
    image.save(folder / name)
    return path


def store_without(source, path, *objects):
    """A copy of store `source` at `path` with the objects (keys such as 'logits/c/1/2/0')
    deleted, as a lost file or object leaves it."""
    shutil.copytree(source, path)
    for key in objects:
        (path / key).unlink()
    return path


def build_world(root, small_tree, train_beton, val_beton, teacher_ckpt):
    """Copies of the session's data and teacher, and every broken variant the cases use."""
    import zarr

    from pct_pipeline.dataset import write_beton

    w = World(root)
    d = root
    for name, src in (("train", train_beton), ("val", val_beton)):
        shutil.copy(src, d / f"{name}.beton")
        shutil.copy(f"{src}.json", d / f"{name}.beton.json")
    w.train, w.val = d / "train.beton", d / "val.beton"
    # the validation images, their class folders named otherwise from label 3 on
    w.val_shifted = shutil.copy(w.val, d / "val_shifted.beton")
    sidecar = json.loads(Path(f"{w.val}.json").read_text())
    sidecar["classes"] = sidecar["classes"][:3] + [f"other{c}" for c in sidecar["classes"][3:]]
    Path(f"{w.val_shifted}.json").write_text(json.dumps(sidecar))
    w.tree = shutil.copytree(small_tree, d / "tree")  # an ImageFolder: 10 classes x 12 images
    # the training images and labels, class 0 named otherwise; images that do not decode
    w.train_renamed = copy_beton(w.train, d / "train_renamed.beton",
                                 ["zero", *json.loads(Path(f"{w.train}.json").read_text())["classes"][1:]])
    w.train_zeroed = zero_images(w.train, d / "train_zeroed.beton")
    w.val_zeroed = zero_images(w.val, d / "val_zeroed.beton")
    w.one_class = one_class_beton(small_tree, d / "one_class.beton")
    from PIL import Image

    w.thin_tree = tree_with(small_tree, d / "thin_tree", Image.new("RGB", (3000, 2)), "thin.png")
    w.bomb_tree = tree_with(small_tree, d / "bomb_tree", Image.new("L", (15000, 12000)), "big.png")
    w.hot_tree = tree_with(small_tree, d / "hot_tree",
                           Image.fromarray(np.full((8, 8), 3.5, np.float32)), "hot.tiff")
    w.one_tree = d / "one_tree"
    shutil.copytree(sorted(p for p in Path(small_tree).iterdir())[0], w.one_tree / "0")
    # the training labels with the images re-encoded: other images of the same sizes
    w.train_other = d / "train_other.beton"
    write_beton(small_tree, w.train_other, max_resolution=32, jpeg_quality=50, workers=1)
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
    w.script_beton = d / "script.beton"  # text long enough to be read as a header
    w.script_beton.write_text("import numpy as np\n" * 100)
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
    w.renamed_pt = save_model(d / "renamed.pt", "cnn_small", classes=["zero", *DIGITS[1:]])
    w.unnamed_pt = save_model(d / "unnamed.pt", "cnn_small", classes=None)
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
    # stores whose data is not what their writers recorded
    w.deleted = store_without(w.cache, d / "deleted.zarr", "logits/c/1/2/0")
    w.deleted_pred = store_without(w.pred, d / "deleted_pred.zarr", "logits/c/0/1/0")
    w.no_labels = store_without(w.pred, d / "no_labels.zarr", "labels/c/0")
    w.no_record = store_without(w.cache, d / "no_record.zarr", "unit_records/c/0/1/0/0")
    w.swapped = d / "swapped.zarr"  # view 0's first unit holds view 1's bytes
    shutil.copytree(w.cache, w.swapped)
    shutil.copy(w.swapped / "logits/c/1/0/0", w.swapped / "logits/c/0/0/0")
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


def preserved(case):
    """What the case checks is kept, in words, for the table."""
    if case.started and case.started.endswith(".zarr"):
        return ("existing files byte-identical; the new store is incomplete (refused by readers, "
                "resumed by the same command) beside its lock file")
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


def run_case(case, world, forks):
    """Run one Case through the fork server and check its promises (see the module docstring)."""
    with place(world, case.where) as w:
        before = snapshot(w.root, skip={w.place})
        code, _, err = forks.run(case.args(w), case.unprivileged, case.timeout)
        RECORD.append((case, code, err.strip()))
        line = assert_one_line(code, err, case.code)
        for part in case.expect(w):
            assert part in line, (part, line)
        skip = {w.place} | ({w.root / case.started, w.root / f".{case.started}.lock"}
                            if case.started else set())
        assert_unchanged(before, snapshot(w.root, skip=skip))
        if case.after is not None:
            case.after(w, forks)
    if case.started and case.started.endswith(".zarr"):
        from pct_pipeline import store
        from pct_pipeline.errors import PctError

        with pytest.raises(PctError, match="incomplete store"):
            store.open_store(w.root / case.started)
        shutil.rmtree(w.root / case.started)
        (w.root / f".{case.started}.lock").unlink()
    elif case.started:
        started = w.root / case.started
        assert sorted(p.name for p in started.iterdir()) == ["config.json"]
        shutil.rmtree(started)


def same_in_a_plain_process(case, world, forks):
    """`python -m pct_pipeline` imports everything afresh: nothing it prints (a warning at
    import time, say) may add to the one line the forked child printed."""
    with place(world, case.where) as w:
        args = case.args(w)
        _, _, forked = forks.run(args)
        plain = run_pct(*args, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert plain.returncode == case.code
    assert plain.stderr == forked and assert_one_line(plain.returncode, plain.stderr, case.code)


def case_tests(cases, plain=None):
    """The two tests of one command's fault file: every case of `cases` through `run_case`, and
    the case named `plain` (if any) also in a plain `python -m pct_pipeline` process."""
    @pytest.mark.parametrize("case", cases, ids=lambda c: c.id)
    def test_bad_input_is_one_line_and_damages_nothing(case, world, forks):
        run_case(case, world, forks)

    def test_a_plain_process_prints_the_same_line(world, forks):
        same_in_a_plain_process(next(c for c in cases if c.id == plain), world, forks)

    return (test_bad_input_is_one_line_and_damages_nothing,
            test_a_plain_process_prints_the_same_line if plain else None)


def make_world(small_tree, train_beton, val_beton, teacher_ckpt):
    """The world of every case (conftest's `world` fixture), outside pytest's own (mode 700)
    temporary folder so that an ordinary user can reach it; yields it, then removes it."""
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


def make_forks():
    """The fork server of every case (conftest's `forks` fixture); at its end, the table of
    docs/errors.md from this run when PCT_FAULTS_TABLE names a file."""
    scratch = tempfile.mkdtemp(prefix="pct-faults-io-")
    server = CliForks(scratch)
    yield server
    server.close()
    shutil.rmtree(scratch)
    if os.environ.get("PCT_FAULTS_TABLE"):
        Path(os.environ["PCT_FAULTS_TABLE"]).write_text(markdown_table(RECORD))



if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()

"""Shared test data: a small real digits ImageFolder, .beton files written by our writer, and
a teacher checkpoint. Built once per test session; tests must not modify them."""
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DIGITS = [str(d) for d in range(10)]  # the class names of the digits data sets
sys.path.insert(0, str(ROOT / "data"))


def subset_tree(src, dst, per_class):
    """Copy the first `per_class` images of every class folder of `src` into `dst`."""
    import shutil

    for class_dir in sorted(Path(src).iterdir()):
        (dst / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(image, dst / class_dir.name / image.name)
    return dst


@pytest.fixture(scope="session")
def digits_tree(tmp_path_factory):
    """The full digits ImageFolder (train/ 1257, val/ 540) at 32 px."""
    import build_digits

    out = tmp_path_factory.mktemp("digits")
    build_digits.build(out, size=32)
    return out


@pytest.fixture(scope="session")
def small_tree(digits_tree, tmp_path_factory):
    """12 training images per class (120 in all): small enough for fast loaders."""
    return subset_tree(digits_tree / "train", tmp_path_factory.mktemp("small") / "train", 12)


@pytest.fixture(scope="session")
def train_beton(small_tree, tmp_path_factory):
    from pct_pipeline.dataset import write_beton

    out = tmp_path_factory.mktemp("beton") / "train.beton"
    write_beton(small_tree, out, max_resolution=32, workers=1)
    return out


@pytest.fixture(scope="session")
def val_beton(digits_tree, tmp_path_factory):
    from pct_pipeline.dataset import write_beton

    val = subset_tree(digits_tree / "val", tmp_path_factory.mktemp("valsub") / "val", 8)
    out = tmp_path_factory.mktemp("beton") / "val.beton"
    write_beton(val, out, max_resolution=32, workers=1)
    return out


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory):
    """A randomly initialised cnn_small (10 classes) saved as `pct train` saves models."""
    from pct_pipeline.models import build_model, save_atomic

    torch.manual_seed(0)
    model = build_model("cnn_small", 10)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_atomic({"model": model.state_dict(), "arch": "cnn_small", "num_classes": 10,
                 "classes": DIGITS}, path)
    return path


@pytest.fixture(scope="session")
def wide_ckpt(tmp_path_factory):
    """A randomly initialised cnn_wide (10 classes), saved as `pct train` saves models."""
    from pct_pipeline.models import build_model, save_atomic

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wide") / "wide.pt"
    save_atomic({"model": build_model("cnn_wide", 10).state_dict(), "arch": "cnn_wide",
                 "classes": DIGITS}, path)
    return path


@pytest.fixture(scope="session")
def world(small_tree, train_beton, val_beton, teacher_ckpt):
    """The files every fault case runs against (tests/faults.py)."""
    from faults import make_world

    yield from make_world(small_tree, train_beton, val_beton, teacher_ckpt)


@pytest.fixture(scope="session")
def forks():
    """The fork server that runs the fault cases (tests/faults.py)."""
    from faults import make_forks

    yield from make_forks()


def pct(capsys, *args):
    """(exit status, stdout, stderr) of the `pct` entry point run in this process; stdout and
    stderr are None without `capsys` (pytest's fixture)."""
    from pct_pipeline.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    if capsys is None:
        return code, None, None
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def forked(forks, *args):
    """`pct ARGS` as a child of the fork server (the `forks` fixture, tests/faults.py): what
    run_pct gives, without the seconds each new process spends importing torch and ffcv."""
    code, out, err = forks.run([str(a) for a in args])
    return subprocess.CompletedProcess(["pct", *map(str, args)], code, out, err)


def run_pct(*args, env=None, timeout=600):
    """Run the real `pct` console script; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "pct_pipeline", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def view_loader(path, batch_size=32, workers=1, order="sequential", seed=0, distributed=False,
                indices=None, device="cpu", **view):
    """A dataset.ViewLoader from flat options: the view's (ViewSpec fields: resolution,
    view_seed, scale, ratio, flip, eval_view, crop_ratio) and the order's (sequential, or
    random with `seed` and `distributed`; the last partial batch kept)."""
    from pct_pipeline.dataset import Shuffle, ViewLoader
    from pct_pipeline.views import ViewSpec

    shuffle = Shuffle(seed, distributed, drop_last=False) if order == "random" else None
    return ViewLoader(path, ViewSpec(**view), batch_size, workers, shuffle, indices, device)


def crop_boxes(view_seed, view, heights, widths, indices=None, **spec):
    """views.ViewSpec(view_seed=..., **spec).boxes(view, heights, widths, indices)."""
    from pct_pipeline.views import ViewSpec

    return ViewSpec(view_seed=view_seed, **spec).boxes(view, heights, widths, indices)


def precompute_config(data, out, teachers, **options):
    """A PrecomputeConfig from flat options, as the command line gives them: the view options
    (resolution, view_seed, scale, ratio, flip, eval_view, crop_ratio) make its ViewSpec, a
    codec name its codec, `views=None` one view."""
    from pct_pipeline.precompute.config import PrecomputeConfig
    from pct_pipeline.store.codecs import parse
    from pct_pipeline.views import ViewSpec

    names = ("resolution", "view_seed", "scale", "ratio", "flip", "eval_view", "crop_ratio")
    spec = ViewSpec(**{k: options.pop(k) for k in names if k in options})
    if isinstance(options.get("codec"), str):
        options["codec"] = parse(options["codec"])
    options["views"] = options.get("views") or 1
    return PrecomputeConfig(data=str(data), teachers=tuple(teachers), out=str(out), spec=spec,
                            **options)


def free_port():
    """A TCP port free on the loopback interface now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

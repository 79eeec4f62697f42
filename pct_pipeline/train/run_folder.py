"""Run folders of `pct train`: nothing of a run is lost to a re-run.

A run folder holds checkpoint.pt (after every epoch), metrics.jsonl (a line per epoch, written
after that epoch's checkpoint), config.json, TensorBoard event files (events.out.tfevents.*)
and, at the end, predictions.zarr. The same
command run again into the same folder (a cluster re-queue) resumes from checkpoint.pt
(`--resume auto`, the default); a finished run is left as it is. `--overwrite` starts afresh,
removing only the run's own files. Resuming checks that the checkpoint was trained on the
same data, teacher cache, loss and model (`identity`; refused otherwise, naming the setting and
both values) and notes a changed seed, process count, batch size or validation set. While a
command trains, process 0 holds the folder's `RunLock`.
"""
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from .. import models
from ..errors import PctError, writing
from ..files import write_text_atomic
from ..store import Location

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "config.json", "predictions.zarr", "init.pt")
REFUSED = ("arch", "num_classes", "model_kwargs", "data", "teacher_cache", "loss")
NOTED = ("seed", "world", "batch_size", "validation")


def plain(obj):
    """`obj` as JSON values (tuples become lists, other objects strings)."""
    return json.loads(json.dumps(obj, default=str))


def identity(cfg, num_classes, train_info, cache, world, val_info):
    """What a checkpoint must share with the command that resumes it (and what it may not)."""
    data = {k: train_info.fingerprint[k] for k in ("size", "num_samples", "labels_sha256")}
    data["classes"] = train_info.classes
    fp = val_info.fingerprint
    validation = f"{fp['path']} ({fp['num_samples']} samples, labels {fp['labels_sha256'][:12]})"
    teacher_cache = None
    if cache is not None:
        keep = ("teachers", "views", "view_seed", "resolution", "scale", "ratio", "flip", "dtype",
                "codec")
        teacher_cache = {k: cache.attrs.get(k) for k in keep}
        teacher_cache["teachers"] = [t.get("sha256") for t in cache.attrs.get("teachers", [])]
    loss = asdict(cfg.loss) if (cache is not None or cfg.online_teachers) else \
        {"mode": None, "label_smoothing": cfg.loss.label_smoothing,
         "bct_loss_weight": cfg.loss.bct_loss_weight}
    return plain({"arch": cfg.arch, "num_classes": num_classes,
                  "model_kwargs": dict(cfg.model_kwargs), "data": data,
                  "teacher_cache": teacher_cache, "loss": loss, "seed": cfg.seed, "world": world,
                  "batch_size": cfg.batch_size, "validation": validation})


EVENT_FILES = "events.out.tfevents.*"  # TensorBoard's (watch.Board)


def run_files(out):
    """The files of a run in folder `out` that exist (epoch checkpoints and TensorBoard event
    files included)."""
    out = Path(out)
    more = [p.name for pattern in ("checkpoint_epoch_*.pt", EVENT_FILES) for p in out.glob(pattern)]
    names = [*RUN_FILES, *more] if out.is_dir() else []
    return [out / n for n in names if (out / n).exists() or (out / n).is_symlink()]


def resume_source(cfg):
    """The checkpoint this run continues from, or None (a fresh start). Refuses, in one line,
    a folder whose results would be lost: another run's checkpoint, or results without one."""
    out = Path(cfg.out)
    own = out / "checkpoint.pt"
    if cfg.evaluate:
        return evaluated_checkpoint(cfg, own)
    if cfg.overwrite:
        return None if cfg.resume in (None, "auto") else Path(cfg.resume)
    if cfg.resume not in (None, "auto"):
        given = Path(cfg.resume)
        if own.is_file() and given.is_file() and not own.samefile(given):
            raise PctError(f"{out} holds the checkpoint of another run; resuming {given} there "
                           f"would replace it (use another --out, or --overwrite)")
        return given
    if own.is_file():
        return own
    # a run stopped in its first epoch left its config (and maybe init.pt): started afresh
    kept = [p.name for p in run_files(out) if p.name not in ("config.json", "init.pt")
            and not p.match(EVENT_FILES)]
    if kept:
        raise PctError(f"{out} holds results of a run ({', '.join(kept)}) but no checkpoint.pt "
                       f"to resume from (use another --out, or --overwrite to replace them)")
    return None


def evaluated_checkpoint(cfg, own):
    """--evaluate: the checkpoint whose predictions to write (--resume PATH, else the run
    folder's); an existing predictions.zarr is replaced only with --overwrite."""
    path = own if cfg.resume in (None, "auto") else Path(cfg.resume)
    if not path.is_file():
        raise PctError(f"--evaluate needs a checkpoint: {path} not found (give --resume CKPT)")
    predictions = Path(cfg.out) / "predictions.zarr"
    if (predictions.exists() or predictions.is_symlink()) and not cfg.overwrite:
        raise PctError(f"{predictions} exists (use --overwrite to replace it)")
    return path


def trained_config(path, trust=False):
    """The `config` dict of the `pct train` run that wrote checkpoint `path` ({} when it has
    none)."""
    saved = models.load_file(path, trust)
    config = saved.get("config") if isinstance(saved, dict) else None
    return config if isinstance(config, dict) else {}


class RunLock:
    """The one-writer lock of a run folder: an flock on RUN_DIR/.checkpoint.pt.lock, taken by
    process 0 before it writes anything there and held until the command ends (the kernel
    drops it however the process dies). A second `pct train` into the folder is refused,
    naming the holder. The lock file is removed on release."""

    def __init__(self, out):
        with writing(out):
            Path(out).mkdir(parents=True, exist_ok=True)
        self.inner = Location(Path(out) / "checkpoint.pt").lock()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        Path(self.inner.name).unlink(missing_ok=True)
        self.inner.release()


def clear_run(out):
    """Remove the files of a run (not the folder, nor anything else in it): --overwrite."""
    for path in run_files(out):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def check_identity(path, saved, current):
    """Refuse a checkpoint trained on other data, teacher cache, loss or model; note a
    changed seed, process count or batch size (one line each). Checkpoints written before
    identities were recorded are taken as they are."""
    if saved is None:
        return
    for key in REFUSED:
        if saved.get(key) != current[key]:
            what = _difference(key, saved.get(key), current[key])
            raise PctError(f"--resume {path} was trained with {what}: resuming would mix two "
                           f"runs (use another --out, or --overwrite to start again)")
    if int(os.environ.get("RANK", 0)) == 0:
        for key in NOTED:  # (a key the checkpoint predates is not noted)
            if key in saved and saved[key] != current[key]:
                print(f"pct: note: resuming {path} with {key} {current[key]} (it was trained "
                      f"with {saved.get(key)})", flush=True)


def _difference(key, there, here):
    """The first differing setting of `key` (a loss's mode before its other settings), or
    that one side has none (a teacher cache given to only one of the two)."""
    if isinstance(there, dict) and isinstance(here, dict):
        for name in sorted(set(there) | set(here), key=lambda n: (n != "mode", n)):
            if there.get(name) != here.get(name):
                return f"{key} {name} {there.get(name)!r}, this command {here.get(name)!r}"
    if here is None or there is None:
        return (f"a {key.replace('_', ' ')}, this command none" if here is None else
                f"no {key.replace('_', ' ')}, this command one")
    return f"{key} {there!r}, this command {here!r}"


def trim_metrics(out, epoch):
    """Keep the metrics lines of epochs <= `epoch` (those of its checkpoint): a run killed
    between a checkpoint and the next one's metrics resumes without duplicate lines."""
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) <= epoch]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def log_epoch(out, stats):
    """Append the epoch's metrics line to RUN_DIR/metrics.jsonl."""
    with writing(out / "metrics.jsonl"), open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(stats) + "\n")

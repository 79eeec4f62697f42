"""Writing an ImageFolder tree to a .beton: scanning and checking the images, the ffcv writer's
worker processes under supervision, and the sidecar OUT.beton.json.

A .beton written here has three fields, ``image`` (JPEG), ``label`` and ``index`` (the row
number, so a batch can be joined to per-sample data). ``OUT.beton.json`` beside it holds the
class names and the dataset fingerprint (reader.fingerprint) that teacher caches and
prediction stores reference.
"""
import json
import multiprocessing
import multiprocessing.queues
import os
import queue
import signal
import sys
import time
from contextlib import contextmanager
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from ..errors import WRITE_ERRORS, PctError, writing
from ..files import write_text_atomic
from ..progress import Progress

from .storable import check_image, load_rgb
from .reader import fingerprint, image_digests

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def scan_image_folder(src):
    """Class names (sorted folder names) and [(path, label)] in sorted order."""
    src = Path(src)
    if src.exists() and not src.is_dir():
        raise PctError(f"dataset source is not a folder: {src} (expected an ImageFolder tree)")
    if not src.is_dir():
        raise PctError(f"dataset folder not found: {src}")
    classes = sorted(p.name for p in _list(src) if p.is_dir())
    if not classes:
        raise PctError(f"no class folders in {src}: expected one sub-folder per class")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in _list(src / name)
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PctError(f"class folder has no images: {src / name}")
        samples.extend((str(p), label) for p in files)
    return classes, samples


def _list(folder):
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise PctError(f"cannot read dataset folder {folder}: {exc.strerror}") from None


class _ImageFolderSamples:
    """Indexable (image, label, index) rows for ffcv's DatasetWriter."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        global CURRENT
        path, label = self.samples[i]
        CURRENT = f"sample {i} ({path})"  # what a writer worker that fails was writing
        return load_rgb(path), label, i


CURRENT = "no sample yet"


def _ignore_sigint():
    """In worker processes: Ctrl-C reaches the whole process group, and the main process
    alone handles it (stopping the workers), so workers print no traceback of their own; a
    SIGTERM (how the main process stops them) ends them at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _writer_worker(errors, work_fn, *args):
    """An ffcv writer worker that reports how it failed on `errors` (a queue) and exits 1,
    instead of printing a traceback: ('write', errno) for a write error, ('sample', message)
    naming the sample it was writing for anything else."""
    _ignore_sigint()
    try:
        work_fn(*args)
    except OSError as exc:
        if exc.errno in WRITE_ERRORS:
            errors.put(("write", exc.errno))
        else:
            errors.put(("sample", f"{CURRENT}: {type(exc).__name__}: {exc}"))
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001  (reported in one line by the main process)
        errors.put(("sample", f"{CURRENT}: {type(exc).__name__}: {exc}"))
        sys.exit(1)


class _Workers:
    """Stands in for ffcv.writer's `Process`, `Queue` and `sleep`. ffcv's main process waits
    for its workers' progress and then for their allocation lists, and waits forever if a
    worker died (its last page is written after its progress is counted, so a full disk
    often kills it there). Here workers run `_writer_worker`, and both waits stop with the
    dead worker's error."""

    def __init__(self):
        self.started = []
        self.errors = multiprocessing.SimpleQueue()

    def process(self, target, args):
        proc = multiprocessing.Process(target=_writer_worker, args=(self.errors, target, *args))
        self.started.append(proc)
        return proc

    def stop(self):
        for proc in self.started:
            if proc.is_alive():
                proc.kill()
            proc.join()

    def queue(self):
        return _WatchedQueue(self)

    def sleep(self, seconds):
        self.check()
        time.sleep(seconds)

    def check(self):
        """Raise the error of the first worker that failed, after stopping the others."""
        failed = [p for p in self.started if p.exitcode not in (None, 0)]
        if not failed:
            return
        self.stop()
        if self.errors.empty():  # killed by a signal, say: nothing reported
            raise RuntimeError(f"an ffcv writer worker ended with exit status "
                               f"{failed[0].exitcode}")
        kind, detail = self.errors.get()
        if kind == "write":
            raise OSError(detail, os.strerror(detail))
        raise PctError(f"cannot write the image of {detail}")


class _WatchedQueue(multiprocessing.queues.Queue):
    """A multiprocessing queue whose blocking `get` gives up when a writer worker has died."""

    def __init__(self, workers):
        super().__init__(ctx=multiprocessing.get_context())
        self.workers, self.owner = workers, os.getpid()

    def get(self, block=True, timeout=None):
        while block and timeout is None and os.getpid() == self.owner:  # workers just wait
            try:
                return super().get(timeout=0.1)
            except queue.Empty:
                self.workers.check()
        return super().get(block, timeout)


@contextmanager
def _ffcv_writer_hooks():
    """Yield the `_Workers` of one write, with ffcv.writer's `Process`, `Queue`, `sleep` and
    progress bar pointed at it until the write ends (then restored: another writer in the same
    process, e.g. ffcv's own, finds ffcv as it was)."""
    import functools

    import ffcv.writer

    names = ("tqdm", "Process", "sleep", "Queue")
    saved = {name: getattr(ffcv.writer, name) for name in names}
    workers = _Workers()
    # ffcv's writer reports progress to a tqdm bar: a Progress is that bar on a terminal and
    # a line now and then in a log.
    ffcv.writer.tqdm = functools.partial(Progress, desc="write-dataset: writing")
    ffcv.writer.Process, ffcv.writer.sleep = workers.process, workers.sleep
    ffcv.writer.Queue = workers.queue
    try:
        yield workers
    finally:
        workers.stop()  # after an error or Ctrl-C; they have all ended otherwise
        for name, value in saved.items():
            setattr(ffcv.writer, name, value)


def write_beton(src, out, max_resolution=256, image_format="jpg", jpeg_quality=90, workers=None,
                skip_bad=False, overwrite=False):
    """Write ImageFolder `src` to `out` (.beton) and `out`.json; returns the summary dict.
    Images are stored as `image_format` ("jpg" at `jpeg_quality`, or "raw" pixels), scaled
    down to `max_resolution` if larger. `workers`: processes (None: the cores this process may
    use). An existing `out` is refused unless `overwrite`, and then replaced only once the new
    file is complete."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from ..distributed import usable_cores

    out, workers = Path(out), max(1, workers or usable_cores())
    _check_output(out, overwrite)
    classes, kept, skipped = _storable_samples(src, max_resolution, workers, skip_bad)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    fields = {"image": RGBImageField(write_mode=image_format, max_resolution=max_resolution,
                                     jpeg_quality=jpeg_quality),
              "label": IntField(), "index": IntField()}
    with _ffcv_writer_hooks():
        writer = DatasetWriter(str(partial), fields, num_workers=workers)
        try:
            with writing(out):
                writer.from_indexed_dataset(_ImageFolderSamples(kept), chunksize=32)
                labels = np.array([label for _, label in kept], np.int64)
                info = {"classes": classes, "num_classes": len(classes),
                        "num_samples": len(kept), "skipped": skipped,
                        "source": str(Path(src).resolve()), "image_format": image_format,
                        "fingerprint": fingerprint(labels, partial.stat().st_size, out,
                                                   *image_digests(partial))}
                write_text_atomic(Path(str(out) + ".json"), json.dumps(info, indent=1))
                os.replace(partial, out)
        finally:
            _release_metadata(writer)
            if partial.exists():
                partial.unlink()
    return info


def _storable_samples(src, max_resolution, workers, skip_bad):
    """(class names, [(path, label)] of the images that can be stored, how many were left
    out): every image is decoded once; the first that cannot be stored stops the command
    unless `skip_bad`."""
    classes, samples = scan_image_folder(src)
    if len(classes) < 2:
        raise PctError(f"{src} holds one class folder ({classes[0]}): a classifier needs at "
                       f"least two (give the folder that holds the class folders)")
    problems = _check_images([(p, max_resolution) for p, _ in samples], workers)
    bad = [msg for msg in problems if msg is not None]
    if bad and not skip_bad:
        raise PctError(f"cannot store image {bad[0]} (use --skip-bad to leave such files out)")
    if bad:
        print(f"write-dataset: left out {len(bad)} image(s) that cannot be stored, the first "
              f"{bad[0]}", file=sys.stderr, flush=True)
    kept = [s for s, msg in zip(samples, problems) if msg is None]
    present = {label for _, label in kept}
    missing = [classes[c] for c in range(len(classes)) if c not in present]
    if missing:
        raise PctError(f"class folder has no readable images: {Path(src) / missing[0]}")
    return classes, kept, len(bad)


def _check_output(out, overwrite):
    if not out.parent.is_dir():
        raise PctError(f"output folder does not exist: {out.parent}")
    if out.is_dir():
        raise PctError(f"output is a folder: {out} (expected a .beton file name)")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise PctError(f"{out} exists (use --overwrite to replace it)")


def _check_images(jobs, workers):
    """An error message or None for each (image path, max resolution): every image is
    decoded once, by `workers` processes."""
    problems = []
    with Progress(len(jobs), "write-dataset: checking") as progress, \
            Pool(workers, initializer=_ignore_sigint) as pool:
        for problem in pool.imap(check_image, jobs, chunksize=64):
            problems.append(problem)
            progress.update()
    return problems


def _release_metadata(writer):
    """Free the shared memory ffcv's writer leaves behind when a write fails half-way."""
    from multiprocessing.shared_memory import SharedMemory

    memory = getattr(writer, "metadata_sm", None)
    if isinstance(memory, SharedMemory):
        try:
            memory.close()
            memory.unlink()
        except FileNotFoundError:  # already released by a write that finished
            pass

"""FFCV datasets: write an ImageFolder tree to a .beton, describe it, and load views of it.

A .beton written here has three fields, ``image`` (JPEG), ``label`` and ``index`` (the row
number, so a batch can be joined to per-sample data). ``OUT.beton.json`` beside it holds the
class names and the dataset fingerprint that teacher caches and prediction stores reference.
"""
import hashlib
import json
import multiprocessing
import multiprocessing.queues
import os
import queue
import signal
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from .errors import WRITE_ERRORS, PctError, writing
from .progress import Progress

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


def load_rgb(path):
    """uint8 [H, W, 3] RGB of any PIL-readable image; transparency is composited on white."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _check_image(path):
    try:
        load_rgb(path)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for bad files
        return f"{path}: {exc}"
    return None


class _ImageFolderSamples:
    """Indexable (image, label, index) rows for ffcv's DatasetWriter."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return load_rgb(path), label, i


def _ignore_sigint():
    """In worker processes: Ctrl-C reaches the whole process group, and the main process
    alone handles it (stopping the workers), so workers print no traceback of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _writer_worker(work_fn, *args):
    """An ffcv writer worker whose OSError ends it with that errno as exit status (so the main
    process can name it) instead of a traceback."""
    _ignore_sigint()
    try:
        work_fn(*args)
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        sys.exit(exc.errno)


class _Workers:
    """Stands in for ffcv.writer's `Process`, `Queue` and `sleep`. ffcv's main process waits
    for its workers' progress and then for their allocation lists, and waits forever if a
    worker died (its last page is written after its progress is counted, so a full disk
    often kills it there). Here workers run `_writer_worker`, and both waits stop with the
    dead worker's error."""

    def __init__(self):
        self.started = []

    def process(self, target, args):
        proc = multiprocessing.Process(target=_writer_worker, args=(target, *args))
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
        code = failed[0].exitcode
        if code in WRITE_ERRORS:
            raise OSError(code, os.strerror(code))
        raise RuntimeError(f"an ffcv writer worker failed with exit status {code}")


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


def _configure_ffcv_writer():
    """Returns the `_Workers` of the next write."""
    import functools

    import ffcv.writer

    # ffcv's writer reports progress to a tqdm bar: a Progress is that bar on a terminal and
    # a line now and then in a log.
    ffcv.writer.tqdm = functools.partial(Progress, desc="write-dataset: writing")
    workers = _Workers()
    ffcv.writer.Process, ffcv.writer.sleep = workers.process, workers.sleep
    ffcv.writer.Queue = workers.queue
    return workers


def write_beton(src, out, max_resolution=256, jpeg_quality=90, workers=None, skip_bad=False,
                overwrite=False):
    """Write ImageFolder `src` to `out` (.beton) and `out`.json; returns the summary dict.
    `workers`: processes (None: the cores this process may use). An existing `out` is
    refused unless `overwrite`, and then replaced only once the new file is complete."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from .distributed import usable_cores

    out, workers = Path(out), max(1, workers or usable_cores())
    _check_output(out, overwrite)
    classes, samples = scan_image_folder(src)
    problems = _check_images([p for p, _ in samples], workers)
    bad = [msg for msg in problems if msg is not None]
    if bad and not skip_bad:
        raise PctError(f"unreadable image {bad[0]} (use --skip-bad to leave such files out)")
    kept = [s for s, msg in zip(samples, problems) if msg is None]
    present = {label for _, label in kept}
    missing = [classes[c] for c in range(len(classes)) if c not in present]
    if missing:
        raise PctError(f"class folder has no readable images: {Path(src) / missing[0]}")
    writer_processes = _configure_ffcv_writer()
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    fields = {"image": RGBImageField(write_mode="jpg", max_resolution=max_resolution,
                                     jpeg_quality=jpeg_quality),
              "label": IntField(), "index": IntField()}
    writer = DatasetWriter(str(partial), fields, num_workers=workers)
    try:
        with writing(out):
            writer.from_indexed_dataset(_ImageFolderSamples(kept), chunksize=32)
            labels = np.array([label for _, label in kept], np.int64)
            info = {"classes": classes, "num_classes": len(classes), "num_samples": len(kept),
                    "skipped": len(bad), "source": str(Path(src).resolve()),
                    "fingerprint": fingerprint(labels, partial.stat().st_size, out)}
            _write_json_atomic(Path(str(out) + ".json"), info)
            os.replace(partial, out)
    finally:
        writer_processes.stop()  # after an error or Ctrl-C; they have all ended otherwise
        _release_metadata(writer)
        if partial.exists():
            partial.unlink()
    return info


def _check_output(out, overwrite):
    if not out.parent.is_dir():
        raise PctError(f"output folder does not exist: {out.parent}")
    if out.is_dir():
        raise PctError(f"output is a folder: {out} (expected a .beton file name)")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise PctError(f"{out} exists (use --overwrite to replace it)")


def _check_images(paths, workers):
    """An error message or None for each image path: every image is decoded once, by
    `workers` processes."""
    problems = []
    with Progress(len(paths), "write-dataset: checking") as progress, \
            Pool(workers, initializer=_ignore_sigint) as pool:
        for problem in pool.imap(_check_image, paths, chunksize=64):
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


def fingerprint(labels, size, path):
    """Dataset identity: resolved path, file size, sample count, sha256 of the int64 labels."""
    return {"path": str(Path(path).resolve()), "size": int(size), "num_samples": int(len(labels)),
            "labels_sha256": hashlib.sha256(np.ascontiguousarray(labels, np.int64).tobytes()).hexdigest()}


def _write_json_atomic(path, obj):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_not_truncated(path):
    """PctError unless the file reaches the end of the allocation table its header promises
    (ffcv writes that table last, so a cut-off copy lacks some of it)."""
    from ffcv.types import ALLOC_TABLE_TYPE, HeaderType

    size = path.stat().st_size
    if size < HeaderType.itemsize:
        return  # too short to be a .beton at all: the reader says so
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    table = int(header["alloc_table_ptr"])
    # every sample has at least its image allocated
    needed = table + int(header["num_samples"]) * ALLOC_TABLE_TYPE.itemsize
    if table == 0 or size < needed:
        raise PctError(f"truncated .beton file: {path} has {size} bytes, its header needs at "
                       f"least {needed} (an interrupted copy or write?)")


class BetonInfo:
    """What a .beton holds: labels int64 [N], image heights/widths [N], class names, fingerprint."""

    def __init__(self, path):
        from ffcv.reader import Reader

        self.path = Path(path)
        if self.path.is_dir():
            raise PctError(f"dataset is a folder: {self.path} (expected a .beton file)")
        if not self.path.is_file():
            raise PctError(f"dataset file not found: {self.path}")
        try:
            _check_not_truncated(self.path)
            reader = Reader(str(self.path))
            meta = reader.metadata
            fields = list(reader.field_names)
        except (ValueError, OSError, IndexError, KeyError, TypeError) as exc:
            raise PctError(f"not a readable .beton file: {self.path} ({exc})") from None
        if not {"image", "label", "index"} <= set(fields):
            raise PctError(f"{self.path} lacks the image/label/index fields written by "
                           f"`pct write-dataset` (it has {sorted(fields)})")
        self.num_samples = int(reader.num_samples)
        column = {name: f"f{i}" for i, name in enumerate(fields)}  # ffcv names columns f0, f1, ...
        self.labels = np.asarray(meta[column["label"]], np.int64).reshape(-1)
        self.heights = np.asarray(meta[column["image"]]["height"], np.int64)
        self.widths = np.asarray(meta[column["image"]]["width"], np.int64)
        side = Path(str(self.path) + ".json")
        extra = json.loads(side.read_text()) if side.is_file() else {}
        self.classes = extra.get("classes")
        self.num_classes = int(extra.get("num_classes", int(self.labels.max()) + 1))
        self.fingerprint = fingerprint(self.labels, self.path.stat().st_size, self.path)


class ViewLoader:
    """Batches (images float32 [B, 3, R, R] normalised, labels int64 [B], indices int64 [B]).

    Every image of an epoch is the view set by `set_view` (or the eval view) with the crop
    `scale` / `ratio` ranges and flip probability `flip` (None: the views module's defaults,
    torchvision's RandomResizedCrop and flip 0.5). Order is
    `sequential` or `random` (seeded by `seed` and the epoch; with `distributed`, ffcv emulates
    torch's DistributedSampler). `indices` restricts the loader to those rows, in that order.
    `workers` threads decode and normalise (None: this process's share of the cores; see
    `distributed.workers_for`). Images and labels are on `device`; indices stay on the CPU
    (they drive the join and never enter the model).

    Images are channels_last float32 (x - mean) / std with `views.IMAGENET_MEAN` / `IMAGENET_STD`
    (0-255 units), equal bit for bit to `x.float().sub_(mean).div_(std)` on the uint8 pixels.
    The loader's threads compute them (on CUDA: uint8 crosses to the GPU, then the loader's
    stream converts it), so the main thread only receives batches. Every returned tensor is
    new (none is one of ffcv's reused buffers): a caller may keep batches across iterations.
    """

    def __init__(self, path, batch_size, resolution, workers=None, view_seed=0, scale=None,
                 ratio=None, flip=None, eval_view=False, crop_ratio=None, order="sequential",
                 seed=0, distributed=False, indices=None, drop_last=False, device="cpu"):
        from ffcv.fields.basics import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import ToDevice, ToTensor, ToTorchImage

        from . import views
        from .distributed import workers_for  # the argument `distributed` is a flag

        workers = workers_for(workers)
        self.device = torch.device(device)
        self.decoder = views.ViewDecoder(
            (resolution, resolution), view_seed=view_seed, scale=scale or views.DEFAULT_SCALE,
            ratio=ratio or views.DEFAULT_RATIO, eval_view=eval_view,
            crop_ratio=crop_ratio or views.DEFAULT_CROP_RATIO,
            flip=views.DEFAULT_FLIP if flip is None else flip)
        cuda = self.device.type == "cuda"
        to_device = [ToDevice(self.device, non_blocking=True)] if cuda else []
        int_pipe = [IntDecoder(), ToTensor(), *to_device]
        if cuda:  # ffcv-imagenet's order: uint8 crosses to the GPU, which converts it
            image_pipe = [self.decoder, ToTensor(), *to_device, ToTorchImage(),
                          _normalize_on_device(self.device)]
        else:
            image_pipe = [self.decoder, _normalize_on_cpu(), ToTensor(), ToTorchImage()]
        self.loader = Loader(
            str(path), batch_size=batch_size, num_workers=workers,
            order=OrderOption.RANDOM if order == "random" else OrderOption.SEQUENTIAL,
            distributed=distributed, seed=seed, drop_last=drop_last,
            indices=None if indices is None else np.asarray(indices, np.int64),
            pipelines={"image": image_pipe, "label": int_pipe,
                       "index": [IntDecoder(), ToTensor()]})
        self.epoch = 0

    def set_view(self, view):
        self.decoder.set_view(view)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def order(self, epoch=None):
        """int64 [len(self) * batch_size or fewer]: the rows this process visits in `epoch`."""
        epoch = self.epoch if epoch is None else epoch
        rows = np.asarray(self.loader.traversal_order.sample_order(epoch), np.int64)
        if self.loader.drop_last:
            rows = rows[:len(self) * self.loader.batch_size]
        return rows

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.loader.next_epoch = self.epoch
        for images, labels, indices in self.loader:
            if images.is_cuda:  # allocated on the loader's stream, used on the caller's
                images.record_stream(torch.cuda.current_stream(images.device))
            yield images, labels.reshape(-1).clone(), indices.reshape(-1).clone()


def _normalize_table():
    """float32 [256, 3]: (x - mean) / std of every uint8 level x in each channel, computed
    in float32 one correctly rounded operation at a time, hence equal bit for bit to torch's
    `x.float().sub_(mean).div_(std)`. (ffcv's NormalizeImage computes its table in float64
    and rounds once: 367 of these 768 values differ from torch's by up to 2.4e-7.)"""
    from . import views

    levels = np.arange(256, dtype=np.float32)[:, None]
    return ((levels - np.asarray(views.IMAGENET_MEAN, np.float32))
            / np.asarray(views.IMAGENET_STD, np.float32))


def _normalize_on_cpu():
    """ffcv operation in the loader's compiled, parallel stage: uint8 [B, R, R, 3] -> float32
    [B, R, R, 3] looked up in `_normalize_table`, as ffcv's NormalizeImage does, but written
    to a new array per batch rather than into ffcv's ring of reused buffers, so a caller may
    keep a batch. Measured no slower than the ring (the allocator hands back the block the
    previous batch freed), and no second pass as a copy would be."""
    from dataclasses import replace

    from ffcv.pipeline.compiler import Compiler
    from ffcv.pipeline.operation import Operation

    table = _normalize_table()

    class NormalizeToNewArray(Operation):
        def generate_code(self):
            my_range = Compiler.get_iterator()  # prange when the loader has several threads

            def normalize(images, _, indices):
                n, height, width, channels = images.shape
                out = np.empty((n, height, width, channels), np.float32)
                src = images.reshape(n, height * width, channels)
                dst = out.reshape(n, height * width, channels)
                for i in my_range(n):
                    for px in range(height * width):
                        dst[i, px, 0] = table[src[i, px, 0], 0]
                        dst[i, px, 1] = table[src[i, px, 1], 1]
                        dst[i, px, 2] = table[src[i, px, 2], 2]
                return out

            normalize.is_parallel = True
            normalize.with_indices = True  # ffcv passes the batch's indices; unused
            return normalize

        def declare_state_and_memory(self, previous_state):
            return replace(previous_state, dtype=np.dtype(np.float32)), None

    return NormalizeToNewArray()


def _normalize_on_device(device):
    """ffcv operation: uint8 [B, 3, R, R] channels_last on a CUDA `device` -> a new float32
    tensor (x - mean) / std, computed on the loader's stream by the same two elementwise
    kernels as `x.float().sub_(mean).div_(std)` (ffcv's NormalizeImage would need cupy)."""
    from dataclasses import replace

    from ffcv.pipeline.operation import Operation

    from . import views

    mean = torch.tensor(views.IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(views.IMAGENET_STD, device=device).view(1, 3, 1, 1)

    class NormalizeOnDevice(Operation):
        def generate_code(self):
            def normalize(images, _):
                return images.float().sub_(mean).div_(std)
            return normalize

        def declare_state_and_memory(self, previous_state):
            return replace(previous_state, dtype=torch.float32), None

    return NormalizeOnDevice()


def raw_images(path, rows):
    """uint8 JPEG bytes of each row (for the reference decoder in tests)."""
    from ffcv.reader import Reader

    reader = Reader(str(path))
    column = f"f{list(reader.field_names).index('image')}"
    data = np.memmap(str(path), dtype=np.uint8, mode="r")
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    ptrs = reader.metadata[column]["data_ptr"]
    return [np.array(data[int(ptrs[r]):int(ptrs[r]) + sizes[int(ptrs[r])]]) for r in rows]

"""Reading a .beton: what it holds (BetonInfo: labels, image sizes, class names, fingerprint)
and loaders of its views (ViewLoader: FFCV's Loader with the §Views decoder, normalisation
compiled into the loader's threads).
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PctError


def fingerprint(labels, size, path, images=None, shapes=None):
    """Dataset identity: resolved path, file size, sample count, sha256 of the int64 labels,
    `images` (the sha256 of every image's stored bytes, `image_digests`) and `shapes` (the
    sha256 of their heights, widths and byte counts). Two data sets of equal labels and sizes
    but other pixels differ in `images`; the same images written again (any worker count,
    any order on disk) do not."""
    out = {"path": str(Path(path).resolve()), "size": int(size), "num_samples": int(len(labels)),
           "labels_sha256": hashlib.sha256(np.ascontiguousarray(labels, np.int64).tobytes()).hexdigest()}
    if images is not None:
        out["images_sha256"] = images
    if shapes is not None:
        out["shapes_sha256"] = shapes
    return out


def _image_table(reader):
    """(heights, widths, data pointers, byte counts) of every sample's image, int64 [N] each,
    from a .beton's metadata and allocation table."""
    column = f"f{list(reader.field_names).index('image')}"
    meta = reader.metadata[column]
    table = np.sort(np.asarray(reader.alloc_table[["ptr", "size"]]), order="ptr")
    ptrs = np.asarray(meta["data_ptr"], np.int64)
    sizes = np.asarray(table["size"], np.int64)[np.searchsorted(table["ptr"], ptrs)]
    return (np.asarray(meta["height"], np.int64), np.asarray(meta["width"], np.int64), ptrs,
            sizes)


def shapes_digest(heights, widths, sizes):
    """sha256 of the images' heights, widths and stored byte counts, in sample order: read
    from the metadata alone, it ties a .beton.json to its .beton."""
    digest = hashlib.sha256()
    for part in (heights, widths, sizes):
        digest.update(np.ascontiguousarray(part, np.int64).tobytes())
    return digest.hexdigest()


def image_digests(path):
    """(sha256 of every image's stored bytes in sample order, `shapes_digest`) of a .beton:
    one pass over its image data (write-dataset records both in OUT.beton.json)."""
    from ffcv.reader import Reader

    heights, widths, ptrs, sizes = _image_table(Reader(str(path)))
    data = np.memmap(str(path), dtype=np.uint8, mode="r")
    digest = hashlib.sha256()
    for ptr, size in zip(ptrs.tolist(), sizes.tolist()):
        digest.update(data[ptr:ptr + size])
    return digest.hexdigest(), shapes_digest(heights, widths, sizes)


def _check_not_truncated(path):
    """PctError unless the file reaches the end of the allocation table its header promises
    (ffcv writes that table last, so a cut-off copy lacks some of it)."""
    from ffcv.types import ALLOC_TABLE_TYPE, CURRENT_VERSION, HeaderType

    size = path.stat().st_size
    if size < HeaderType.itemsize:
        return  # too short to be a .beton at all: the reader says so
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if int(header["version"]) != CURRENT_VERSION:
        raise PctError(f"not a readable .beton file: {path} (its first bytes are not an FFCV "
                       f"version {CURRENT_VERSION} header)")
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
        self.heights, self.widths, _, sizes = _image_table(reader)
        side = Path(str(self.path) + ".json")
        extra = json.loads(side.read_text()) if side.is_file() else {}
        recorded = extra.get("fingerprint") or {}
        shapes = shapes_digest(self.heights, self.widths, sizes)
        if recorded.get("shapes_sha256") not in (None, shapes):
            raise PctError(f"{side} does not describe {self.path} (its images have other sizes): "
                           f"write the data set again, or remove the .json")
        images = recorded.get("images_sha256") if recorded.get("shapes_sha256") else None
        if images is None:  # no record of this file's images: read them once
            images = image_digests(self.path)[0]
        self.classes = extra.get("classes")
        self.num_classes = int(extra.get("num_classes", int(self.labels.max()) + 1))
        self.fingerprint = fingerprint(self.labels, self.path.stat().st_size, self.path,
                                       images, shapes)

    def identity(self):
        """The `dataset` attribute of a store made from this data: its fingerprint and class
        names."""
        return dict(self.fingerprint, classes=self.classes)


@dataclass(frozen=True)
class Shuffle:
    """A random visiting order for training: seeded by `seed` and the epoch; `distributed`
    makes ffcv emulate torch's DistributedSampler (each process its share); `drop_last`
    leaves out the last partial batch."""

    seed: int = 0
    distributed: bool = False
    drop_last: bool = True


class ViewLoader:
    """Batches (images float32 [B, 3, R, R] normalised, labels int64 [B], indices int64 [B]).

    Every image of an epoch is the view set by `set_view` of `spec` (a views.ViewSpec: the
    crops, flips or eval view and the resolution R). Order: sequential, or `shuffle` (a
    Shuffle). `indices` restricts the loader to those rows, in that order. `workers` threads
    decode and normalise (None: this process's share of the cores; see
    `distributed.workers_for`). Images and labels are on `device`; indices stay on the CPU
    (they drive the join and never enter the model).

    Images are channels_last float32 (x - mean) / std with `views.IMAGENET_MEAN` / `IMAGENET_STD`
    (0-255 units), equal bit for bit to `x.float().sub_(mean).div_(std)` on the uint8 pixels.
    The loader's threads compute them (on CUDA: uint8 crosses to the GPU, then the loader's
    stream converts it), so the main thread only receives batches. Every returned tensor is
    new (none is one of ffcv's reused buffers): a caller may keep batches across iterations.
    """

    def __init__(self, path, spec, batch_size, workers=None, shuffle=None, indices=None,
                 device="cpu"):
        from ffcv.fields.basics import IntDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import ToDevice, ToTensor, ToTorchImage

        from ..distributed import workers_for
        from .decoder import ViewDecoder

        workers = workers_for(workers)
        self.path, self.device = path, torch.device(device)
        self.decoder = ViewDecoder(spec)
        cuda = self.device.type == "cuda"
        to_device = [ToDevice(self.device, non_blocking=True)] if cuda else []
        int_pipe = [IntDecoder(), ToTensor(), *to_device]
        if cuda:  # ffcv-imagenet's order: uint8 crosses to the GPU, which converts it
            image_pipe = [self.decoder, ToTensor(), *to_device, ToTorchImage(),
                          _normalize_on_device(self.device)]
        else:
            image_pipe = [self.decoder, _normalize_on_cpu(), ToTensor(), ToTorchImage()]
        order = shuffle or Shuffle(drop_last=False)
        self.loader = Loader(
            str(path), batch_size=batch_size, num_workers=workers,
            order=OrderOption.RANDOM if shuffle else OrderOption.SEQUENTIAL,
            distributed=order.distributed, seed=order.seed, drop_last=order.drop_last,
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
        self.decoder.failed[0] = -1
        for images, labels, indices in self.loader:
            self._check_decoded()
            if images.is_cuda:  # allocated on the loader's stream, used on the caller's
                images.record_stream(torch.cuda.current_stream(images.device))
            yield images, labels.reshape(-1).clone(), indices.reshape(-1).clone()
        self._check_decoded()

    def _check_decoded(self):
        """PctError naming a sample whose image bytes did not decode (the loader's threads
        may be a few batches ahead: this is checked at every batch and at the end)."""
        sample = int(self.decoder.failed[0])
        if sample >= 0:
            raise PctError(f"the image of sample {sample} in {self.path} does not decode "
                           f"(its stored bytes are not a valid JPEG): the .beton is damaged; "
                           f"write it again")


def _normalize_table():
    """float32 [256, 3]: (x - mean) / std of every uint8 level x in each channel, computed
    in float32 one correctly rounded operation at a time, hence equal bit for bit to torch's
    `x.float().sub_(mean).div_(std)`. (ffcv's NormalizeImage computes its table in float64
    and rounds once: 367 of these 768 values differ from torch's by up to 2.4e-7.)"""
    from .. import views

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

    from .. import views

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
    """uint8 stored bytes of each row's image (JPEG, or raw pixels)."""
    from ffcv.reader import Reader

    _, _, ptrs, sizes = _image_table(Reader(str(path)))
    data = np.memmap(str(path), dtype=np.uint8, mode="r")
    return [np.array(data[ptrs[r]:ptrs[r] + sizes[r]]) for r in rows]

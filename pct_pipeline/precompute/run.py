"""Run the teacher(s) over V fixed views of a .beton and fill a §Store.

Work is split by whole shards: shard s belongs to rank s % world, so no two processes ever
write the same Zarr shard, and the bytes written do not depend on the number of processes.
Each rank builds one sequential ViewLoader over the rows of its shards and switches the view
with `set_view`. A (view, shard) unit is buffered in memory until all its rows are computed,
then written and marked done; a rerun of the same command computes only the units not done.
Rank 0 holds an exclusive lock beside the store for the whole run, and reports the progress
of every rank (see `all_ranks_progress`).
"""
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import allocator, codec_fidelity, distributed, store
from ..dataset import BetonInfo, ViewLoader
from ..errors import PctError
from ..progress import Progress
from .prepare import acquire_lock, check_existing, prepare_store, store_attributes
from .report import fit_to_data, report_start, teacher_top1
from .teachers import Top1, check_finite, forward, load_teachers


@dataclass(frozen=True)
class Job:
    """What the compute loop needs: config, store path and attributes, teachers, image sizes."""
    cfg: object
    out: store.Location
    attrs: dict
    teachers: tuple
    heights: np.ndarray
    widths: np.ndarray
    device: torch.device
    labels: np.ndarray | None = None  # int64 [N]: with `top1`, count the stored targets' hits
    top1: Top1 | None = None          # this process's hits per view, counted as units are written


def run(cfg):
    """Precompute; returns the summary dict on rank 0 and None on the other ranks."""
    start = time.perf_counter()
    dist = distributed.setup(cfg.device)
    try:
        return _run(cfg, dist, start)
    finally:
        distributed.cleanup()


def _run(cfg, dist, start):
    info = BetonInfo(cfg.data)
    cfg = fit_to_data(cfg, info, dist)
    teachers = load_teachers(cfg, info, dist.device)
    out = store.Location(cfg.out)
    lock, problem = (None, None)
    if dist.is_main:
        lock, problem = _lock_and_prepare(cfg, info, teachers, out)
    problem = distributed.broadcast_object(problem)
    if problem is not None:
        raise PctError(problem)
    try:
        job = Job(cfg, out, store.existing_attrs(out), tuple(teachers), info.heights,
                  info.widths, dist.device, info.labels, Top1(cfg.views))
        done_before = report_start(job, dist)
        computed, done = compute_rank(job, dist.rank, dist.world)
        total = distributed.all_sum([computed], dist.device)[0]  # every unit is written now
        top1 = teacher_top1(job, done, dist) if total else None
        distributed.barrier()
        if not dist.is_main:
            return None
        result = summary(job, total, time.perf_counter() - start)
        result.update(done_before=done_before, teacher_top1=top1)
        result["fidelity"] = record_fidelity(job)
        return result
    finally:
        if lock is not None:
            lock.release()


def _lock_and_prepare(cfg, info, teachers, out):
    """(lock or None, error message or None): the lock is held until the run ends."""
    lock = None
    try:
        if not cfg.overwrite:
            precheck(cfg, info, teachers, out)
        lock = acquire_lock(out)
        prepare_store(cfg, info, teachers, out)
        return lock, None
    except PctError as exc:
        if lock is not None:
            lock.release()
        return None, str(exc)


def precheck(cfg, info, teachers, out):
    """Refuse what is at `out` before taking the lock beside it (someone else's data, another
    store). Every writer holds the lock while it touches the store, so when nobody holds it the
    refusal stands (and the lock file, if any, is left as it was); otherwise the check under
    the lock decides (it names the running writer)."""
    try:
        check_existing(out, store_attributes(cfg, info, teachers))
    except PctError:
        if not store.Location(out).lock_held():
            raise


def pending_units(job, rank, world, done):
    """{view: [shard, ...]} of this rank's shards whose unit is not done yet (`done`: the
    store's done markers, bool [V, S])."""
    mine = range(rank, int(job.attrs["num_shards"]), world)
    return {v: [s for s in mine if not done[v, s]] for v in range(int(job.attrs["views"]))}


def shard_rows(job, shards):
    """int64 rows of `shards`, in order."""
    ranges = [np.arange(*store.shard_bounds(job.attrs, s), dtype=np.int64) for s in shards]
    return np.concatenate(ranges) if ranges else np.zeros(0, np.int64)


def compute_rank(job, rank, world):
    """Compute and write this rank's pending units; returns (the number of images computed,
    the done markers bool [V, S] at the start)."""
    done = store.done_markers(job.out)
    pending = pending_units(job, rank, world, done)
    shards = sorted({s for todo in pending.values() for s in todo})
    rows = shard_rows(job, shards)
    if len(rows) == 0:
        return 0, done
    total = sum(len(shard_rows(job, todo)) for todo in pending.values())
    loader = make_loader(job, rows)
    allocator.freeze_built_objects()
    with all_ranks_progress(job, rank, world, done, total) as bar:
        for view, todo in pending.items():
            if todo:
                compute_view(job, loader, view, todo, bar)
    return total, done


def make_loader(job, rows):
    cfg = job.cfg
    return ViewLoader(cfg.data, cfg.spec, cfg.batch_size, cfg.workers, indices=rows,
                      device=job.device)


def all_ranks_progress(job, rank, world, done, own_total):
    """The Progress of this run's images on every rank, printed by rank 0.

    Total: the images of every rank's units not done at the start (`done`, the markers read
    then). Count: rank 0's own images, exact, plus the images of the other ranks' units
    marked done in the store since the start, read from the markers before each line. So
    the count never overstates the work done: it lags by at most each other rank's unit in
    progress (one shard of one view)."""
    if world == 1 or rank != 0:
        return Progress(own_total, "precompute-teachers", enabled=rank == 0)
    num_shards = int(job.attrs["num_shards"])
    bounds = [store.shard_bounds(job.attrs, s) for s in range(num_shards)]
    sizes = np.array([hi - lo for lo, hi in bounds], np.int64)  # rows of each shard
    others = np.arange(num_shards) % world != rank

    def count(own):
        finished = store.done_markers(job.out) & ~done & others
        return own + int((finished * sizes).sum())

    return Progress(int((~done * sizes).sum()), "precompute-teachers", counter=count)


def compute_view(job, loader, view, shards, bar=None):
    """Run the teachers over the loader's rows in `view`; write each unit of `shards` once all
    its rows are in. Batches whose rows all lie in other (done) shards are skipped."""
    loader.set_view(view)
    wanted = np.asarray(shards, np.int64)
    step = int(job.attrs["shard_rows"])
    buffers = {}
    for images, _, indices in loader:
        keep = np.isin(indices.numpy() // step, wanted)
        if not keep.any():
            continue
        if not keep.all():
            images, indices = images[torch.from_numpy(keep)], indices[torch.from_numpy(keep)]
        outputs = forward(job.teachers, images, job.cfg.store_features, job.device,
                          exact=job.cfg.spec.eval_view)
        check_finite(job, outputs, indices.numpy(), view)
        fill(job, buffers, view, indices.numpy(), outputs)
        if bar is not None:
            bar.update(len(indices))
    if buffers:  # a bug, not a user mistake
        raise RuntimeError(f"view {view}: shards {sorted(buffers)} were not fully visited")


def fill(job, buffers, view, indices, outputs):
    """Scatter a batch into its shards' buffers; write every shard whose rows are all in."""
    step = int(job.attrs["shard_rows"])
    for shard in np.unique(indices // step):
        buf = buffers.get(shard)
        if buf is None:
            buf = buffers[shard] = ShardBuffer(job, int(shard))
        mask = indices // step == shard
        buf.put(indices[mask], {k: v[:, torch.from_numpy(mask)] for k, v in outputs.items()})
        if buf.complete:
            buf.write(job, view)
            del buffers[shard]


class ShardBuffer:
    """float32 rows of one shard until all are computed: members [M, rows, C], features
    [M, rows, D] (each ensemble member's, averaged when written)."""

    def __init__(self, job, shard):
        self.shard = shard
        self.lo, self.hi = store.shard_bounds(job.attrs, shard)
        n, m, c = self.hi - self.lo, len(job.teachers), int(job.attrs["num_classes"])
        self.members = np.zeros((m, n, c), np.float32)
        self.features = None
        self.filled = np.zeros(n, bool)

    def put(self, indices, outputs):
        rows = indices - self.lo
        self.members[:, rows] = outputs["members"].numpy()
        if "features" in outputs:
            if self.features is None:
                m, _, d = outputs["features"].shape
                self.features = np.zeros((m, len(self.filled), d), np.float32)
            self.features[:, rows] = outputs["features"].numpy()
        self.filled[rows] = True

    @property
    def complete(self):
        return bool(self.filled.all())

    def write(self, job, view):
        """Mean over members in float32, cast to the store dtype or encoded by the codec
        (with view 0's reference rows kept exact), write the unit, mark it done."""
        cfg = job.cfg
        mean = self.members.mean(0)
        values = {"logits": cast(mean, cfg.logits_dtype, self.lo, view)}
        if cfg.codec.name != "float16":
            values = cfg.codec.encode(mean, np.arange(self.lo, self.hi), view)
            if view == 0:
                kept = len(store.reference_rows(job.attrs, self.shard))
                values["reference_logits"] = mean[:kept]
        if cfg.keep_members:
            values["member_logits"] = cast(self.members, cfg.logits_dtype, self.lo, view)
        if cfg.store_features:
            values["features"] = cast(self.features.mean(0), "float16", self.lo, view, "feature")
        values["crops"] = cfg.spec.boxes(view, job.heights, job.widths,
                                         np.arange(self.lo, self.hi))
        if job.top1 is not None:
            job.top1.count(view, cfg.codec, values, job.labels[self.lo:self.hi],
                           int(job.attrs["num_classes"]))
        store.write_unit(job.out, view, self.shard, values)


def cast(values, dtype, lo, view, what="output"):
    """`values` as `dtype`; PctError when a finite value overflows it (float16: |x| > 65504).
    what: "output" (logits, whose --dtype can be float32) or "feature" (always float16)."""
    with np.errstate(over="ignore"):
        out = values.astype(dtype)
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.argwhere(bad)[0][-2]) + lo
        hint = "; use --dtype float32" if what == "output" else ""
        raise PctError(f"a teacher {what} of sample {row} in view {view} does not fit {dtype} "
                       f"(|x| > {np.finfo(dtype).max:.0f}){hint}")
    return out


def record_fidelity(job):
    """A compact cache's `fidelity` attribute (fidelity.record on its reference rows, against
    their exact logits), computed and stored once the store is complete; None for float16."""
    codec = job.cfg.codec
    if codec.name == "float16":
        return None
    cache = store.open_store(job.out)
    if "fidelity" in cache.attrs:  # a resumed run: recorded when the store was completed
        return cache.attrs["fidelity"]
    rows, exact, encoded = cache.reference()
    recorded = codec_fidelity.record(codec, exact, cache.labels[rows], encoded=encoded)
    store.set_attributes(job.out, fidelity=recorded)
    return recorded


def summary(job, images, seconds):
    """Counts, bytes on disk and rate of this run (images computed now, not resumed ones)."""
    views_n, n = int(job.attrs["views"]), int(job.attrs["num_samples"])
    size = store.Location(job.out).size()
    return {"out": str(job.out), "samples": n, "views": views_n, "computed_images": int(images),
            "bytes": size, "bytes_per_sample_view": size / max(1, n * views_n),
            "seconds": seconds, "images_per_s": images / seconds if seconds > 0 else 0.0}

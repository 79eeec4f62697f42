"""Join cached teacher outputs to training batches by sample index, without reads in the step.

The rows a process visits in an epoch are known before the epoch starts (the sampler order).
`EpochTargets` fills, in a background thread, a buffer laid out in this process's batch order;
batch k is then the contiguous slice [k·B, (k+1)·B). The next epoch's buffer is filled while
the current epoch trains.

Each node reads a view once. With one process on the node, it reads the view's chunks
sequentially and keeps the rows it needs. With L processes on a node, local rank l reads the
l-th of L contiguous, chunk-aligned parts of the view into a node-shared array
(`SharedView`, a file in /dev/shm named by run and node); once all parts are in (the node's
processes meet at `distributed.node_agree`), every process copies its own rows out of it, and
the shared array is freed.

A compact cache (codecs.py) is gathered the same way, array by array of its encoded form (C·s
below becomes the codec's bytes per row), then decoded in the same background thread: to dense
float32 logits [n, C] for int8 and topk (so the buffer held is N·C·4 / W per process), or kept
sparse for `sample`, whose rows the loss reads as `losses.SampledTargets`.

Per epoch, with N samples, C classes, itemsize s (2 for float16), W processes in all and L per
node (features add the same with D for C):
    read from the store:  N·C·s per node (N·C·s / L per process), whatever W is;
    held:                 N·C·s / W per process for the epoch being trained and as much for
                          the next one (its buffer), plus N·C·s per node while the next view
                          is in flight (the shared array, freed when copied out):
                          at most 2·(L/W)·N·C·s + N·C·s per node.
ImageNet-1k (N = 1,281,167, C = 1,000, float16): one view is 2.56 GB; a node of 8 processes
out of 32 reads 2.56 GB per epoch and holds at most 2 × 0.64 + 2.56 = 3.84 GB for the join.
"""
import threading
import time

import numpy as np
import torch

from .. import distributed
from ..errors import PctError, first_nonfinite_row
from ..losses import SampledTargets
from ..store import codecs, value_arrays
from .shared_view import SharedView, unlink


class EpochTargets:
    """Cached logits (and features) of one view, in one process's visiting order.

    order: int64 [n] sample indices in the order the loader yields them; node: the
    `distributed.Dist` of this process (node-local sharing), epoch: names the shared array.
    The store's codec (its `codec` attributes) says which arrays hold the logits.
    """

    def __init__(self, store, view, order, batch_size, node, epoch, with_features=False,
                 pin_memory=False):
        self.store, self.view, self.order = store, int(view), np.asarray(order, np.int64)
        self.batch_size, self.pin_memory = int(batch_size), pin_memory
        self.node, self.epoch = node, int(epoch)
        self.codec = codecs.from_attrs(store.attrs)
        self.encoded = value_arrays(store.attrs)  # ["logits"] for a plain cache
        self.features = ["features"] if with_features else []
        self.buffers = {}
        self.error = None
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _fill(self):
        start = time.perf_counter()
        try:
            for name in self.encoded + self.features:
                self.buffers[name] = self._gather(name)
            if self.encoded != ["logits"] and self.codec.dense:
                self._decode()
        except (PctError, ValueError, OSError, TimeoutError) as exc:
            self.error = exc
        self.seconds = time.perf_counter() - start  # the read's own time, in its thread

    def _decode(self):
        """Replace the encoded buffers by dense float32 logits [n, C] (pinned if asked)."""
        encoded = {name: self.buffers.pop(name).numpy() for name in self.encoded}
        logits = torch.from_numpy(self.codec.decode(encoded, self.store.num_classes))
        self.buffers["logits"] = logits.pin_memory() if self.pin_memory else logits

    def _empty(self, name):
        array = self.store.group[name]
        dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
        # Page-locked on GPU machines, so the per-step copy to the device is asynchronous.
        return torch.empty((len(self.order), array.shape[-1]), dtype=dtype,
                           pin_memory=self.pin_memory)

    def _gather(self, name):
        out = self._empty(name)
        if self.node.local_world == 1:
            self._scatter_alone(name, out.numpy())
            return out
        key = f"{self.node.run_id}-node{self.node.node}-{name}-epoch{self.epoch}"
        shared, problem = None, None
        try:
            shared = SharedView(key, (self.store.num_samples, out.shape[1]), out.numpy().dtype)
            lo, hi = part_bounds(self.store, self.node.local_rank, self.node.local_world)
            step = self.store.shard_rows  # one read per shard: its chunks fetched concurrently
            for a in range(lo, hi, step):  # (lo is a shard's first row: part_bounds)
                b = min(a + step, hi)
                shared.array[a:b] = self._read(name, a, b)
        except (PctError, ValueError, OSError) as exc:
            problem = exc
        try:
            all_ok = distributed.node_agree(problem is None, self.node)  # every part is in
            if self.node.local_rank == 0:
                unlink(key)  # every process has mapped it, or given up
            if problem is not None:
                raise problem
            if not all_ok:
                raise PctError(f"another process of this node failed while reading its part "
                               f"of the teacher cache {self.store.path}")
            np.take(shared.array, self.order, axis=0, out=out.numpy())
        finally:
            if shared is not None:
                shared.close()
        return out

    def _scatter_alone(self, name, out):
        """One process on the node: read the view in order, keep this process's rows."""
        by_row = np.argsort(self.order, kind="stable")  # positions, sorted by sample index
        rows_sorted = self.order[by_row]
        for lo in range(0, self.store.num_samples, self.store.shard_rows):
            hi = min(lo + self.store.shard_rows, self.store.num_samples)
            a, b = np.searchsorted(rows_sorted, [lo, hi])
            if a < b:
                out[by_row[a:b]] = self._read(name, lo, hi)[rows_sorted[a:b] - lo]

    def _read(self, name, lo, hi):
        """Rows [lo, hi) of the view (see `check_finite_rows`)."""
        block = self.store.read_rows(name, self.view, lo, hi)
        check_finite_rows(self.store, name, self.view, lo, block)
        return block

    def wait(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self

    def batch(self, step, indices, device):
        """(logits [B, C] float32, features [B, D] float32 or None) of batch `step`: the rows
        [step·B, step·B + len(indices)) of the buffers, in the loader's order. A sampled
        cache gives `losses.SampledTargets` of those rows in place of the logits.

        indices: int64 [B] on the CPU, the batch's sample indices. Its first and last entries
        are checked against the order (O(1); a shifted or reordered epoch fails there).
        """
        lo, size = step * self.batch_size, len(indices)
        if size == 0 or lo + size > len(self.order) or int(indices[0]) != self.order[lo] \
                or int(indices[-1]) != self.order[lo + size - 1]:
            raise RuntimeError(f"join out of step at batch {step}: the loader yielded other "
                               f"samples than the prefetched order")
        rows = {name: buffer[lo:lo + size].to(device, non_blocking=True)
                for name, buffer in self.buffers.items()}
        features = rows["features"].float() if self.features else None
        if "logits" in rows:
            return rows["logits"].float(), features
        return SampledTargets(self.codec, {name: rows[name] for name in self.encoded}), features


def check_finite_rows(store, name, view, lo, rows):
    """PctError naming the first sample whose teacher logits (rows of array `name` from sample
    `lo` on, of one view) hold NaN/inf: a float array of the cache's logits or codec."""
    if name in value_arrays(store.attrs) and np.issubdtype(rows.dtype, np.floating):
        bad = first_nonfinite_row(rows)
        if bad is not None:
            raise PctError(f"teacher cache {store.path} has NaN/inf logits at sample "
                           f"{lo + bad}, view {view}")


def part_bounds(store, part, parts):
    """Rows [lo, hi) of part `part` of `parts` of a view: contiguous runs of whole shards (a
    shard is one stored object, fetched and checked whole, so no two parts share one)."""
    shards = -(-store.num_samples // store.shard_rows)
    lo = part * shards // parts * store.shard_rows
    hi = (part + 1) * shards // parts * store.shard_rows
    return min(lo, store.num_samples), min(hi, store.num_samples)

"""Join cached teacher outputs to training batches by sample index, without reads in the step.

The rows a process visits in an epoch are known before the epoch starts (the sampler order).
`EpochTargets` reads the epoch's view of the cache chunk by chunk, sequentially, in a
background thread, scattering the rows this process needs into a buffer laid out in its batch
order; batch k is then the contiguous slice [k·B, (k+1)·B). The next epoch's buffer is filled
while the current epoch trains. Memory per process ≈ (N / world) · C · itemsize.
"""
import threading

import numpy as np
import torch

from ..errors import PctError


class EpochTargets:
    """Cached logits (and features) of one view, in one process's visiting order.

    order: int64 [n] sample indices in the order the loader yields them.
    """

    def __init__(self, store, view, order, batch_size, with_features=False, pin_memory=False):
        self.store, self.view, self.order = store, int(view), np.asarray(order, np.int64)
        self.batch_size, self.pin_memory = int(batch_size), pin_memory
        self.names = ["logits"] + (["features"] if with_features else [])
        self.buffers = {}
        self.error = None
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _fill(self):
        try:
            by_row = np.argsort(self.order, kind="stable")  # positions, sorted by sample index
            rows_sorted = self.order[by_row]
            for name in self.names:
                self.buffers[name] = self._gather(name, by_row, rows_sorted)
        except (PctError, ValueError, OSError) as exc:
            self.error = exc

    def _gather(self, name, by_row, rows_sorted):
        array = self.store.group[name]
        dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
        # Page-locked on GPU machines, so the per-step copy to the device is asynchronous.
        out = torch.empty((len(self.order), array.shape[-1]), dtype=dtype,
                          pin_memory=self.pin_memory).numpy()
        for lo, block in self.store.iter_rows(name, self.view):
            a, b = np.searchsorted(rows_sorted, [lo, lo + len(block)])
            if a == b:
                continue
            picked = block[rows_sorted[a:b] - lo]
            if name == "logits" and not np.isfinite(picked).all():
                bad = rows_sorted[a:b][~np.isfinite(picked).all(axis=1)][0]
                raise PctError(f"teacher cache {self.store.path} has NaN/inf logits at sample "
                               f"{bad}, view {self.view}")
            out[by_row[a:b]] = picked
        return out

    def wait(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self

    def batch(self, step, indices, device):
        """(logits [B, C] float32, features [B, D] float32 or None) of batch `step`.

        indices: int64 [B] on the CPU, the batch's sample indices; checked against the order.
        """
        size = len(indices)
        lo = step * self.batch_size
        expected = self.order[lo:lo + size]
        if not np.array_equal(expected, indices.numpy()):
            raise RuntimeError(f"join out of step at batch {step}: the loader yielded other samples "
                               f"than the prefetched order")
        out = [torch.from_numpy(self.buffers[n][lo:lo + size]).to(device, non_blocking=True).float()
               for n in self.names]
        return out[0], (out[1] if len(out) > 1 else None)

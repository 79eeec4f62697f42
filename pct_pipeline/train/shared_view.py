"""A view's rows in node-shared memory, which the node's processes fill together (join.py).

`SharedView(key, shape, dtype)` maps the file /dev/shm/pct-KEY (created by whichever process
comes first) as an array of `shape`. KEY names the run, the node and the epoch, so nodes sharing
a machine, and runs, never collide. The processes meet at `distributed.node_agree` once their
parts are written; then part 0 unlinks the file (every process has mapped it) and the memory is
freed when the last process closes its mapping. (multiprocessing.shared_memory would do the
mapping, but on Python 3.11 it registers every segment with the resource tracker of each process
that opens it, which unlinks it when that process exits, whoever still uses it.)
"""
import mmap
import os
import tempfile

import numpy as np

from ..errors import PctError


def shared_dir():
    """Node-local memory-backed folder: /dev/shm where there is one, else the temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class SharedView:
    def __init__(self, key, shape, dtype):
        self.path = os.path.join(shared_dir(), f"pct-{key}")
        dtype = np.dtype(dtype)
        size = max(1, int(np.prod(shape)) * dtype.itemsize)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, size)  # every process asks for the same size: no data is lost
            # reserve the pages now: a full /dev/shm is then an error here, not a SIGBUS later
            os.posix_fallocate(fd, 0, size)
            self.mapping = mmap.mmap(fd, size)
        except OSError as exc:
            raise PctError(f"cannot map {size / 2**30:.2f} GiB of shared memory at "
                           f"{self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        self.array = np.frombuffer(self.mapping, dtype=dtype, count=int(np.prod(shape)))
        self.array = self.array.reshape(shape)

    def close(self):
        del self.array
        self.mapping.close()


def unlink(key):
    """Remove the file of SharedView `key` (once every process has mapped it, or given up)."""
    try:
        os.unlink(os.path.join(shared_dir(), f"pct-{key}"))
    except FileNotFoundError:
        pass

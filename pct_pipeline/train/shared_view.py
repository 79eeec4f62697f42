"""A view's rows in node-shared memory, filled by the node's processes together.

`SharedView(key, shape, dtype, part, parts)` maps the file /dev/shm/pct-KEY (created by
whichever process comes first) as an array of `shape`, followed by one flag per process of
the node. Each process writes its part of the rows, raises its flag, and `wait_all` returns
once every flag is up; the file is then unlinked by part 0 (every process has mapped it by
then), and the memory is freed when the last process leaves the context. KEY names the run,
the node and the epoch (see join.py), so nodes sharing a machine, and runs, never collide.
A process that fails marks its flag, and the others raise instead of waiting forever.
"""
import mmap
import os
import tempfile
import time

import numpy as np

from ..errors import PctError

READY, FAILED = 1, -1
POLL_S = 0.002
TIMEOUT_S = 3600.0


def shared_dir():
    """Node-local memory-backed folder: /dev/shm where there is one, else the temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class SharedView:
    def __init__(self, key, shape, dtype, part, parts):
        self.path = os.path.join(shared_dir(), f"pct-{key}")
        self.part, self.parts = int(part), int(parts)
        dtype = np.dtype(dtype)
        data_bytes = int(np.prod(shape)) * dtype.itemsize
        flags_at = -(-data_bytes // 8) * 8
        size = flags_at + 8 * self.parts
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, size)  # every process asks for the same size: no data is lost
            # reserve the pages now: a full /dev/shm is then an error here, not a SIGBUS later
            os.posix_fallocate(fd, 0, size)
            self.mapping = mmap.mmap(fd, size)
            self.memory = np.frombuffer(self.mapping, dtype=np.uint8)
        except OSError as exc:
            raise PctError(f"cannot map {size / 2**30:.2f} GiB of shared memory at "
                           f"{self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        self.array = self.memory[:data_bytes].view(dtype).reshape(shape)
        self.flags = self.memory[flags_at:].view(np.int64)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.flags[self.part] = FAILED
            self._unlink()
        del self.array, self.flags, self.memory
        self.mapping.close()

    def wait_all(self):
        """Mark this part written; return when every part is (PctError if one failed)."""
        self.flags[self.part] = READY
        deadline = time.monotonic() + TIMEOUT_S
        while not (self.flags == READY).all():
            if (self.flags == FAILED).any():
                raise PctError(f"another process of this node failed while reading its part "
                               f"of the teacher cache into {self.path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes of this node did not fill {self.path} within "
                                   f"{TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
        if self.part == 0:
            self._unlink()

    def _unlink(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

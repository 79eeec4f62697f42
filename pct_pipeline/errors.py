"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""
import errno
import os
from contextlib import contextmanager

# OSErrors of a write that the user can act on: a full disk or quota, no permission, a
# read-only or failing file system.
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG,
                errno.EIO)


class PctError(Exception):
    """A user-facing error; the message names the problem and the offending value."""


def write_error(path, exc):
    """The PctError naming `path` for an OSError of WRITE_ERRORS met while writing it, else
    None (other errors are bugs, whose traceback is wanted)."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
        return PctError(f"cannot write {path}: {os.strerror(exc.errno)}")
    return None


@contextmanager
def writing(path):
    """Turn a WRITE_ERRORS OSError raised inside the block into a PctError naming `path`."""
    try:
        yield
    except OSError as exc:
        error = write_error(path, exc)
        if error is None:
            raise
        raise error from None

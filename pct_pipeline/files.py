"""Writing a file whole or not at all: a temporary file beside it, renamed over it at the end."""
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import writing


@contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path` to write; when the block ends without an exception
    it is renamed over `path`. `path` is then whole, or as it was: the temporary file never
    stays behind, and a full disk or a refused write is a PctError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with writing(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def write_text_atomic(path, text):
    """Write `text` to `path` through `atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)

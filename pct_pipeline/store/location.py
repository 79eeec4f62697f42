"""Where a store lives: a local path, or a URL that fsspec reaches (s3://, gs://, file://).

The one place that tells the two apart; store.py opens stores through it and the rest of the
package asks it whether something is there, to remove it, its size, and for the writer's lock.
A `file://` URL is a local path. Other URLs go through fsspec, whose credentials, endpoint
and options come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, AWS_PROFILE…, or fsspec's configuration, e.g. FSSPEC_S3='{"anon": true}').

Object stores have neither rename nor flock. Zarr writes every chunk, shard and marker as one
object (one PUT, whole or absent), so §Store's units and markers need no rename; the
one-writer lock beside a store is locks.py's.
"""
import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import PctError


class Location:
    """A store location: `str()` is the text the user gave; `path` is the local Path, or None
    for a URL (then `url` is the URL)."""

    def __init__(self, where):
        self.text = where.text if isinstance(where, Location) else str(where)
        scheme, sep, rest = self.text.partition("://")
        local = not sep or scheme == "file"
        self.path = Path(rest if sep else self.text) if local else None
        self.url = None if local else self.text
        self._fs = None

    def __str__(self):
        return self.text

    def __repr__(self):
        return f"Location({self.text!r})"

    @property
    def local(self):
        return self.path is not None

    def filesystem(self):
        """(fsspec file system, path inside it) of a URL."""
        if self._fs is None:
            import fsspec

            with self.reaching():
                try:
                    self._fs = fsspec.core.url_to_fs(self.url)
                except (ImportError, ValueError) as exc:
                    raise PctError(f"cannot open {self}: {reason(exc)}") from None
        return self._fs

    @contextmanager
    def reaching(self):
        """Turn what the storage service or the network raised into a PctError naming this
        location (credentials, endpoint, bucket, permissions); a local path raises as is."""
        if self.local:
            yield
            return
        try:
            yield
        except PctError:
            raise
        except remote_errors() as exc:
            raise PctError(f"cannot reach {self}: {reason(exc)}") from None

    def _remote(self):
        """(fs, path) with the file system's listing cache dropped: zarr writes through a
        file system instance of its own, so a cached listing may be out of date."""
        fs, root = self.filesystem()
        fs.invalidate_cache()
        return fs, root

    def exists(self):
        """True when anything (a store, a file, a link, objects under the prefix) is here."""
        if self.local:
            return self.path.exists() or self.path.is_symlink()
        with self.reaching():
            fs, root = self._remote()
            return fs.exists(root)

    def remove(self, ignore_errors=False):
        """Remove what is here (a store, a file, a link, every object under the prefix)."""
        if self.local:
            if self.path.is_dir() and not self.path.is_symlink():
                shutil.rmtree(self.path, ignore_errors=ignore_errors)
            elif self.path.exists() or self.path.is_symlink():
                self.path.unlink()
            return
        with self.reaching():
            fs, root = self._remote()
            if fs.exists(root):
                fs.rm(root, recursive=True)

    def size(self):
        """Bytes of the files (objects) under this location."""
        if self.local:
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        with self.reaching():
            fs, root = self._remote()
            return int(fs.du(root)) if fs.exists(root) else 0

    def listing(self):
        """{key: bytes} of every file (object) under this location, keys relative to it with
        '/' separators: one walk of the folder, or one listing of the prefix."""
        if self.local:
            out = {}
            for folder, _, files in os.walk(self.path):
                for name in files:
                    full = os.path.join(folder, name)
                    key = os.path.relpath(full, self.path).replace(os.sep, "/")
                    out[key] = os.stat(full).st_size
            return out
        with self.reaching():
            fs, root = self._remote()
            root = root.rstrip("/")
            found = fs.find(root, detail=True) if fs.exists(root) else {}
            return {name[len(root):].lstrip("/"): int(info["size"])
                    for name, info in found.items()}

    def check_parent(self):
        """PctError unless the folder (for a URL: the bucket) that will hold the store exists."""
        if self.local:
            if not self.path.parent.is_dir():
                raise PctError(f"output folder does not exist: {self.path.parent}")
            return
        with self.reaching():
            fs, root = self._remote()
            bucket = root.split("/", 1)[0]
            if not fs.exists(bucket):
                raise PctError(f"bucket not found: {bucket} (of {self})")

    def lock_location(self):
        """`.NAME.lock` beside the store."""
        if self.local:
            return str(self.path.parent / f".{self.path.name}.lock")
        head, _, name = self.text.rstrip("/").rpartition("/")
        if head.endswith(":/"):  # s3://bucket: a lock beside it would be outside any bucket
            raise PctError(f"a store needs a name inside its bucket, e.g. {self.text.rstrip('/')}"
                           f"/NAME.zarr, not {self}")
        return f"{head}/.{name}.lock"

    def lock_held(self):
        """True when a writer holds this store's lock now (a local lock file is only probed,
        never written: a refused command changes no file)."""
        if not self.local:
            return Location(self.lock_location()).exists()
        try:
            fd = os.open(self.lock_location(), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):  # no lock file, or no folder for one
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def lock(self):
        """The one-writer lock of this store, held until `release()`; PctError naming the lock
        and its owner when another process holds it."""
        from .locks import FileLock, ObjectLock

        self.check_parent()
        return FileLock(self) if self.local else ObjectLock(self)


def reason(exc):
    """The first line of an exception's message, with its type."""
    text = str(exc).strip().splitlines()
    return f"{text[0] if text else ''} ({type(exc).__name__})".strip()


def remote_errors():
    """Exception types of remote storage: OSError (what fsspec maps errors to), timeouts,
    and the clients' own (botocore's, aiohttp's) where installed."""
    errors = [OSError, TimeoutError]
    try:
        from botocore import exceptions as boto

        errors += [boto.BotoCoreError, boto.ClientError]
    except ImportError:
        pass
    try:
        import aiohttp

        errors.append(aiohttp.ClientError)
    except ImportError:
        pass
    return tuple(errors)



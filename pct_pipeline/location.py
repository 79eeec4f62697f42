"""Where a store lives: a local path, or a URL that fsspec reaches (s3://, gs://, file://).

The one place that tells the two apart; store.py opens stores through it and the rest of the
package asks it whether something is there, to remove it, its size, and for the writer's lock.
A `file://` URL is a local path. Other URLs go through fsspec, whose credentials, endpoint
and options come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, AWS_PROFILE…, or fsspec's configuration, e.g. FSSPEC_S3='{"anon": true}').

Object stores have neither rename nor flock. Zarr writes every chunk, shard and marker as one
object (one PUT, whole or absent), so §Store's units and markers need no rename; the
one-writer lock is an object `.NAME.lock` beside the store (`ObjectLock`), where a local store
keeps an flock on a file of that name (`FileLock`). Both hold the owner's host, pid and time.

Its length is the two lock kinds (flock and lock object) next to the location they guard; the
object lock's takeover rules need to be read with the local one.
"""
import fcntl
import json
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import PctError, writing

LOCK_REFRESH_S = 30   # an object lock's owner rewrites its time this often
LOCK_STALE_S = 300    # an object lock not refreshed for this long belongs to a dead writer
LOCK_CONFIRM_S = 1.0  # wait before reading back a lock written without a conditional create


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
        except FileNotFoundError:
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


def owner_record():
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
            "token": uuid.uuid4().hex}


def describe_owner(owner):
    """'pid P on host H since T' of a lock's content (a dict, or None when unreadable)."""
    if not isinstance(owner, dict):
        return "by an unknown owner"
    since = datetime.fromtimestamp(lock_time(owner), timezone.utc)
    return (f"by pid {owner.get('pid')} on host {owner.get('host')} since "
            f"{since:%Y-%m-%d %H:%M:%S} UTC")


def lock_time(owner):
    """The time a lock's owner last wrote it (0 when it does not say)."""
    value = owner.get("time")
    return float(value) if isinstance(value, (int, float)) else 0.0


def parse_owner(data):
    try:
        owner = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def refused(location, lock, owner):
    return PctError(f"{location} is being written by another process (lock {lock} is held "
                    f"{describe_owner(owner)}; if no such process runs, remove the lock)")


class FileLock:
    """An exclusive flock on the lock file beside a local store; the kernel drops it when the
    process dies, however it dies."""

    def __init__(self, location):
        self.name = location.lock_location()
        with writing(location):
            self.fd = os.open(self.name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = parse_owner(os.pread(self.fd, 4096, 0))
            os.close(self.fd)
            raise refused(location, self.name, owner) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(owner_record()).encode(), 0)

    def release(self):
        os.close(self.fd)


class ObjectLock:
    """A lock object beside a store in object storage, holding its owner's host, pid, time and
    a random token.

    Taken with a conditional create (S3's If-None-Match: *, fsspec mode 'xb'); on a backend
    without one, written and read back after a moment (a concurrent writer's token shows).
    A background thread rewrites the time every LOCK_REFRESH_S. A lock whose owner is gone is
    taken over: one of a process of this host that no longer runs (a writer killed with
    SIGKILL), or one not refreshed for LOCK_STALE_S (its host died). Removed by `release`.
    """

    def __init__(self, location):
        self.location, self.name = location, location.lock_location()
        self.fs, self.key = Location(self.name).filesystem()
        self.record = owner_record()
        with location.reaching():
            self._acquire()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._refresh, daemon=True)
        self.thread.start()

    def _acquire(self):
        if self._create():
            return
        owner = self._owner()
        if owner is None and self._create():  # released in between
            return
        if not stale(owner):
            raise refused(self.location, self.name, owner)
        self.fs.rm(self.key)  # a dead writer's lock
        if not self._create():
            raise refused(self.location, self.name, self._owner())
        self._confirm()  # another process may have taken the dead writer's lock at once

    def _create(self):
        """True when this call created the lock object; False when one exists."""
        data = json.dumps(self.record).encode()
        try:
            with self.fs.open(self.key, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # no conditional create on this backend
            if self.fs.exists(self.key):
                return False
            self.fs.pipe_file(self.key, data)
            self._confirm()
            return True

    def _confirm(self):
        time.sleep(LOCK_CONFIRM_S)
        owner = self._owner()
        if not owner or owner.get("token") != self.record["token"]:
            raise refused(self.location, self.name, owner)

    def _owner(self):
        """The lock's content as a dict; None when it is gone or unreadable."""
        try:
            return parse_owner(self.fs.cat_file(self.key))
        except FileNotFoundError:
            return None

    def _refresh(self):
        while not self.stop.wait(LOCK_REFRESH_S):
            try:
                owner = self._owner()
                if not owner or owner.get("token") != self.record["token"]:
                    return  # taken over: this process is presumed dead by the others
                self.record["time"] = time.time()
                self.fs.pipe_file(self.key, json.dumps(self.record).encode())
            except remote_errors():
                continue  # a passing network problem; the next round tries again

    def release(self):
        self.stop.set()
        try:
            owner = self._owner()
            if owner and owner.get("token") == self.record["token"]:
                self.fs.rm(self.key)
        except remote_errors():
            pass  # unreachable now: the lock goes stale and the next writer takes it over


def stale(owner):
    """True when the owner of a lock is gone: a process of this host that no longer runs, or
    a lock not refreshed for LOCK_STALE_S."""
    if not isinstance(owner, dict):
        return False
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
    return time.time() - lock_time(owner) > LOCK_STALE_S

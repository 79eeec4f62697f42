"""The one-writer lock beside a store: `.NAME.lock`, an flock on a local file (`FileLock`) or
an object in object storage (`ObjectLock`). Both hold the owner's host, pid and time, which a
refused second writer is told; the object lock's takeover rules stand in for the kernel's
release of an flock when its process dies."""
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

import filelock

from ..errors import PctError, writing
from .location import Location, remote_errors

LOCK_REFRESH_S = 30   # an object lock's owner rewrites its time this often
LOCK_STALE_S = 300    # an object lock not refreshed for this long belongs to a dead writer
LOCK_CONFIRM_S = 1.0  # wait before reading back a lock written without a conditional create


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
    """An exclusive lock on the lock file beside a local store (the filelock package: an flock,
    which the kernel drops when the process dies, however it dies). Its holder writes its
    owner record into the file, which a refused writer reads back."""

    def __init__(self, location):
        self.name = location.lock_location()
        self.lock = filelock.FileLock(self.name, mode=0o644)
        try:
            with writing(location):
                self.lock.acquire(timeout=0)
        except filelock.Timeout:
            with open(self.name, "rb") as f:
                owner = parse_owner(f.read(4096))
            raise refused(location, self.name, owner) from None
        with open(self.name, "r+b") as f:
            f.truncate(0)
            f.write(json.dumps(owner_record()).encode())

    def release(self):
        self.lock.release()


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

"""The zarr store behind a store location, wrapped three ways:

- `CountingStore` counts the bytes every read returns (BYTES_READ: what bench/scale.py reports);
- `RemoteStore` turns what object storage raises into a PctError naming the location;
- `RecordingStore` keeps (size, crc32) of every object a writer puts, so that a unit's write
  record (format.py) says exactly what was written;
- `VerifiedStore` checks every object a reader gets against those records before zarr decodes
  it: a missing object (which zarr would read as fill values) or one of another size or
  checksum raises `UnwrittenData`, naming the array and rows through the reader's `describe`.

A verified object is fetched whole once (zarr asks a shard for byte ranges) and its ranges are
served from that copy until the reader's call ends (`forget`).
"""
import threading
import zlib

import zarr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from ..errors import PctError
from .location import Location


class UnwrittenData(PctError):
    """A store read that its writer's records do not vouch for."""


def checksum(buffer):
    """crc32 of a zarr Buffer's bytes (zlib reads the buffer in place, without a copy)."""
    return zlib.crc32(buffer.as_numpy_array())


class ByteCounter:
    """Bytes a process has read from stores (what came back from the storage layer, i.e.
    compressed chunk bytes), thread-safe."""

    def __init__(self):
        self.total, self.lock = 0, threading.Lock()

    def add(self, buffer):
        if buffer is not None:
            with self.lock:
                self.total += len(buffer)


BYTES_READ = ByteCounter()  # every store this process opens counts here


class CountingStore(WrapperStore):
    """A zarr store that counts the bytes its reads return into BYTES_READ."""

    def _with_store(self, store):
        return type(self)(store)

    async def get(self, key, prototype, byte_range=None):
        buffer = await self._store.get(key, prototype, byte_range)
        BYTES_READ.add(buffer)
        return buffer

    async def get_partial_values(self, prototype, key_ranges):
        buffers = await self._store.get_partial_values(prototype, key_ranges)
        for buffer in buffers:
            BYTES_READ.add(buffer)
        return buffers


class RemoteStore(WrapperStore):
    """A zarr store in object storage whose failures (credentials, endpoint, bucket, network)
    raise PctError naming the location, whichever zarr call met them."""

    def __init__(self, store, location):
        super().__init__(store)
        self.location = location

    def _with_store(self, store):
        return type(self)(store, self.location)

    async def get(self, key, prototype, byte_range=None):
        with self.location.reaching():
            return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        with self.location.reaching():
            return await self._store.get_partial_values(prototype, key_ranges)

    async def exists(self, key):
        with self.location.reaching():
            return await self._store.exists(key)

    async def set(self, key, value):
        with self.location.reaching():
            await self._store.set(key, value)

    async def delete(self, key):
        with self.location.reaching():
            await self._store.delete(key)

    async def delete_dir(self, prefix):
        with self.location.reaching():
            await self._store.delete_dir(prefix)

    async def list_prefix(self, prefix):
        with self.location.reaching():
            async for key in self._store.list_prefix(prefix):
                yield key

    async def list_dir(self, prefix):
        with self.location.reaching():
            async for key in self._store.list_dir(prefix):
                yield key


class RecordingStore(WrapperStore):
    """Records {key: (size, crc32)} of every object set through it, in `written`."""

    def __init__(self, store):
        super().__init__(store)
        self.written = {}

    def _with_store(self, store):
        clone = type(self)(store)
        clone.written = self.written
        return clone

    async def set(self, key, value):
        await self._store.set(key, value)
        self.written[key] = (len(value), checksum(value))

    async def _set_many(self, values):
        for key, value in values:
            await self.set(key, value)


class VerifiedStore(WrapperStore):
    """Serves an object listed in `expected` ({key: (size, crc32)}) only when it is there with
    that size and checksum; `describe(key)` names what the object holds, for the error."""

    def __init__(self, store, expected, describe):
        super().__init__(store)
        self.expected, self.describe = expected, describe
        self.verified = {}

    def _with_store(self, store):
        clone = type(self)(store, self.expected, self.describe)
        clone.verified = self.verified
        return clone

    def forget(self):
        """Drop the whole objects kept since the last call (end of a reader's read)."""
        self.verified.clear()

    async def get(self, key, prototype, byte_range=None):
        if key not in self.expected:
            return await self._store.get(key, prototype, byte_range)
        whole = self.verified.get(key)
        if whole is None:
            whole = await self._store.get(key, prototype)
            self._check(key, whole)
            self.verified[key] = whole
        return _byte_range(whole, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    def _check(self, key, whole):
        size, crc = self.expected[key]
        if whole is None:
            problem = "is missing"
        elif len(whole) != size:
            problem = f"has {len(whole)} bytes, but {size} were written"
        elif checksum(whole) != crc:
            problem = "was altered after it was written (its checksum differs)"
        else:
            return
        raise UnwrittenData(f"{self.describe(key)}: object {key} {problem}")


def _byte_range(buffer, byte_range):
    """The part of `buffer` that a zarr ByteRequest asks for."""
    if byte_range is None:
        return buffer
    n = len(buffer)
    if isinstance(byte_range, RangeByteRequest):
        return buffer[byte_range.start:byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return buffer[byte_range.offset:n]
    if isinstance(byte_range, SuffixByteRequest):
        return buffer[max(0, n - byte_range.suffix):n]
    raise TypeError(f"unknown byte request {byte_range!r}")


def zarr_store(location, read_only=False):
    """The zarr store behind a store location (a path, or a URL: see location.py), counting
    its reads. The only place that turns a location into storage: the rest of the package
    passes locations around."""
    location = Location(location)
    if location.local:
        return CountingStore(LocalStore(str(location.path), read_only=read_only))
    with location.reaching():
        try:
            backend = FsspecStore.from_url(location.url, read_only=read_only)
        except (ImportError, ValueError) as exc:  # no fsspec backend for this URL scheme
            raise PctError(f"cannot open {location}: {exc}") from None
    return CountingStore(RemoteStore(backend, location))


def open_group(location, mode="r", store=None):
    """The Zarr group at `location` (mode 'r', 'r+' or 'w' as zarr.open_group), through
    `store` if given (a wrapper of zarr_store's)."""
    store = store or zarr_store(location, read_only=mode == "r")
    return zarr.open_group(store=store, mode=mode)

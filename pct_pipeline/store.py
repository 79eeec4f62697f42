"""§Store: the Zarr v3 format of teacher caches and prediction stores.

A store is a group ``NAME.zarr`` with ``logits`` [V, N, C], ``labels`` [N], ``crops`` [V, N, 5],
optional ``features`` [V, N, D] and ``member_logits`` [M, V, N, C], and ``done`` [V, S]: one
completion marker per (view, shard). Arrays are chunked (1, R, ·) with R·C·itemsize ≈ 1 MiB
and sharded along N in blocks of ``shard_rows`` rows; a writer owns whole (view, shard) units,
writes every array's rows of the unit, then sets its marker. Consumers refuse a store with a
false marker. Every chunk carries a checksum, so a corrupted chunk fails loudly on read.

A teacher cache written with a compact codec (attribute ``codec``, see codecs.py) holds the
codec's arrays [V, N, width] instead of ``logits``, chunked and sharded alike, plus
``reference_logits`` float32 [K, C]: the exact teacher logits of a sample of view 0's rows
(`reference_rows`), from which the codec's fidelity is measured.

Its length is the one store format: creating, writing units, validating and reading it, the
package's only zarr importer; the location of a store is location.py's.
"""
import math
import threading

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from .errors import PctError, writing
from .location import Location

SCHEMA_VERSION = 1
CHUNK_BYTES = 1 << 20
CHUNKS_PER_SHARD = 16
KINDS = ("teacher-cache", "predictions")


def chunk_rows(row_bytes, num_samples):
    """Rows per chunk so that a chunk holds about 1 MiB (at least one row, at most N)."""
    return int(max(1, min(num_samples, CHUNK_BYTES // max(1, row_bytes))))


def plan_layout(num_samples, num_classes, dtype="float16", feature_dim=None,
                chunks_per_shard=CHUNKS_PER_SHARD, rows_per_chunk=None):
    """{chunk_rows, shard_rows, num_shards} of a store: known before it exists, so every rank
    can tell which (view, shard) units are its own."""
    widest = max(int(num_classes), feature_dim or 0)
    rows = rows_per_chunk or chunk_rows(widest * np.dtype(dtype).itemsize, num_samples)
    shard_rows = rows * chunks_per_shard
    return {"chunk_rows": rows, "shard_rows": shard_rows,
            "num_shards": math.ceil(num_samples / shard_rows)}


def rank_shards(num_shards, rank, world):
    """The contiguous run of shards rank `rank` of `world` owns when a store is written by rows
    (predictions): balanced to within one shard."""
    return range(rank * num_shards // world, (rank + 1) * num_shards // world)


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


def zarr_store(location, read_only=False):
    """The zarr store behind a store location (a path, or a URL: see location.py). The only
    place that turns a location into storage: the rest of the package passes locations
    around."""
    location = Location(location)
    if location.local:
        return CountingStore(LocalStore(str(location.path), read_only=read_only))
    with location.reaching():
        try:
            backend = FsspecStore.from_url(location.url, read_only=read_only)
        except (ImportError, ValueError) as exc:  # no fsspec backend for this URL scheme
            raise PctError(f"cannot open {location}: {exc}") from None
    return CountingStore(RemoteStore(backend, location))


def open_group(location, mode="r"):
    """The Zarr group at `location` (mode 'r', 'r+' or 'w' as zarr.open_group)."""
    return zarr.open_group(store=zarr_store(location, read_only=mode == "r"), mode=mode)


def create_store(path, *, kind, labels, num_classes, views, attributes, dtype="float16",
                 feature_dim=None, members=None, chunks_per_shard=CHUNKS_PER_SHARD,
                 rows_per_chunk=None, encoded=None, reference_rows=None):
    """Create an empty store (every marker false) and return its layout as a dict.

    `rows_per_chunk` overrides the ~1 MiB chunk size (tests use it to get several shards
    out of a tiny data set). `encoded`: {name: (width, dtype)}, a compact codec's arrays,
    made [V, N, width] in place of `logits` (the layout stays that of `dtype` logits, so
    units are the same whatever the codec); `reference_rows`: K, the sample size of
    `reference_logits` (see `reference_rows`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown store kind {kind!r}")
    labels = np.asarray(labels, np.int64)
    layout = plan_layout(len(labels), num_classes, dtype, feature_dim, chunks_per_shard,
                         rows_per_chunk)
    attrs = dict(attributes, schema_version=SCHEMA_VERSION, kind=kind, num_samples=len(labels),
                 num_classes=int(num_classes), views=int(views), **layout)
    if reference_rows:
        attrs["reference_rows_per_shard"] = min(layout["shard_rows"],
                                                -(-int(reference_rows) // layout["num_shards"]))
    # zarr writes each chunk to a temporary file and renames it: a full disk leaves no
    # chunk half-written, and the markers say which units are whole.
    with writing(path):
        _create_arrays(path, attrs, labels, np.dtype(dtype), feature_dim, members, encoded)
    return attrs


def _create_arrays(path, attrs, labels, dtype, feature_dim, members, encoded):
    views, n, c = attrs["views"], attrs["num_samples"], attrs["num_classes"]
    rows, shard_rows, num_shards = attrs["chunk_rows"], attrs["shard_rows"], attrs["num_shards"]
    group = zarr.create_group(store=zarr_store(path), overwrite=True, attributes=attrs)
    data = dict(compressors=[ZstdCodec(level=1, checksum=True)])
    group.create_array("labels", data=labels, chunks=(n,), dimension_names=["sample"], **data)
    last = "class" if encoded is None else "value"
    for name, (width, kind) in (encoded or {"logits": (c, dtype)}).items():
        group.create_array(name, shape=(views, n, width), dtype=kind, chunks=(1, rows, width),
                           shards=(1, shard_rows, width), fill_value=0,
                           dimension_names=["view", "sample", last], **data)
    if attrs.get("reference_rows_per_shard"):
        # one chunk per shard's sample: each unit of view 0 writes its own chunk
        group.create_array("reference_logits", shape=(len(reference_rows(attrs)), c),
                           dtype="float32", chunks=(attrs["reference_rows_per_shard"], c),
                           dimension_names=["row", "class"], fill_value=0, **data)
    group.create_array("crops", shape=(views, n, 5), dtype="int32", chunks=(1, shard_rows, 5),
                       dimension_names=["view", "sample", "box"], fill_value=0, **data)
    if feature_dim:
        group.create_array("features", shape=(views, n, feature_dim), dtype="float16",
                           chunks=(1, rows, feature_dim), shards=(1, shard_rows, feature_dim),
                           dimension_names=["view", "sample", "feature"], fill_value=0, **data)
    if members:
        group.create_array("member_logits", shape=(members, views, n, c), dtype=dtype,
                           chunks=(1, 1, rows, c), shards=(1, 1, shard_rows, c),
                           dimension_names=["member", "view", "sample", "class"],
                           fill_value=0, **data)
    # One chunk per marker: writers of different units never share a chunk.
    group.create_array("done", shape=(views, num_shards), dtype="bool", chunks=(1, 1),
                       fill_value=False, dimension_names=["view", "shard"])


def write_unit(path, view, shard, *, crops, logits=None, encoded=None, features=None,
               member_logits=None, reference=None):
    """Write the rows of (view, shard) of every array, then mark the unit done.

    logits [rows, C] or encoded {name: [rows, width]} (a compact codec's arrays), crops
    int32 [rows, 5], features [rows, D], member_logits [M, rows, C], where rows are the
    shard's rows in order; reference float32 [k, C]: the exact logits of the shard's
    `reference_rows` (view 0). Data goes in before the marker, so a unit interrupted
    half-way stays not-done and is written again on resume.
    """
    group = open_group(path, mode="r+")
    attrs = group.attrs.asdict()
    lo, hi = shard_bounds(attrs, shard)
    with writing(path):
        for name, rows in ({"logits": logits} if encoded is None else encoded).items():
            group[name][view, lo:hi] = rows
        if reference is not None:
            first = shard * attrs["reference_rows_per_shard"]
            group["reference_logits"][first:first + len(reference)] = reference
        group["crops"][view, lo:hi] = crops
        if features is not None:
            group["features"][view, lo:hi] = features
        if member_logits is not None:
            group["member_logits"][:, view, lo:hi] = member_logits
        group["done"][view, shard] = True


def shard_bounds(attrs, shard):
    lo = shard * attrs["shard_rows"]
    return lo, min(lo + attrs["shard_rows"], attrs["num_samples"])


def reference_rows(attrs, shard=None, per_shard=None):
    """int64 sample indices of the reference sample (view 0): the first `per_shard` (default
    `reference_rows_per_shard`) rows of every shard (of `shard` only, if given), spread over
    the data set (whose samples are often sorted by class) and one chunk read per shard;
    empty without a sample."""
    per_shard = int(per_shard or attrs.get("reference_rows_per_shard") or 0)
    shards = range(int(attrs["num_shards"])) if shard is None else [shard]
    rows = [np.arange(lo, min(hi, lo + per_shard), dtype=np.int64)
            for lo, hi in (shard_bounds(attrs, s) for s in shards)]
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def value_arrays(attrs):
    """Names of the arrays holding a store's teacher outputs: `logits`, or a compact
    codec's arrays (codecs.py, imported only for such a store: it needs torch)."""
    if attrs.get("codec", "float16") == "float16":
        return ["logits"]
    from .codecs import from_attrs

    return list(from_attrs(attrs).arrays(int(attrs["num_classes"])))


def set_attributes(path, **values):
    """Add or replace attributes of the store at `path`."""
    with writing(path):
        open_group(path, mode="r+").attrs.update(values)


def describe_missing(done):
    """'view v shard s' of the first few false markers, for error messages."""
    missing = np.argwhere(~np.asarray(done, bool))
    shown = ", ".join(f"view {v} shard {s}" for v, s in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    return f"{len(missing)} of {np.asarray(done).size} units not written ({shown}{more})"


def existing_attrs(path):
    """Attributes of the pct store at `path`; None when nothing is there; PctError when
    something that is not a pct store is there."""
    path = Location(path)
    if not path.exists():
        return None
    try:
        attrs = open_group(path).attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        attrs = {}
    if attrs.get("schema_version") != SCHEMA_VERSION or attrs.get("kind") not in KINDS:
        raise PctError(f"{path} exists and is not a pct store (use --overwrite to replace it)")
    return attrs


def done_markers(path):
    """bool [V, S]: the completion markers of a store, complete or not."""
    group = open_group(path)
    if "done" not in group:  # creation was interrupted before the markers were made
        raise PctError(f"store {path} lacks array 'done' (use --overwrite to replace it)")
    return group["done"][...]


class Store:
    """A validated, read-only store. Arrays are read lazily; a view is read chunk by chunk."""

    def __init__(self, path, group):
        self.path = Location(path)
        self.group = group
        self.attrs = group.attrs.asdict()
        self.kind = self.attrs["kind"]
        self.num_samples = int(self.attrs["num_samples"])
        self.num_classes = int(self.attrs["num_classes"])
        self.views = int(self.attrs["views"])
        self.chunk_rows = int(self.attrs["chunk_rows"])
        self.shard_rows = int(self.attrs["shard_rows"])
        self.has_features = "features" in group
        self.feature_dim = int(group["features"].shape[-1]) if self.has_features else None

    @property
    def labels(self):
        return self._read("labels", ())

    def logits(self, view=0):
        """[N, C] logits of one view, in the store's dtype."""
        return self._read("logits", (view,))

    def features(self, view=0):
        return self._read("features", (view,))

    def crops(self, view=0):
        return self._read("crops", (view,))

    def member_logits(self, member, view=0):
        return self._read("member_logits", (member, view))

    def reference(self):
        """(int64 [K] sample indices, float32 [K, C] exact teacher logits, {array: [K, width]}
        the same rows as stored) of view 0's reference sample (compact caches; see
        `reference_rows`)."""
        rows = reference_rows(self.attrs)
        stored = {name: self.rows_at(name, 0, rows) for name in value_arrays(self.attrs)}
        return rows, self._read("reference_logits", ()), stored

    def read_rows(self, name, view, lo, hi):
        """Rows [lo, hi) of one view of array `name` ([hi - lo, width]); one call, so zarr
        fetches the chunks concurrently."""
        array = self.group[name]
        return self._checked(lambda: array[view, lo:hi], name)

    def rows_at(self, name, view, rows):
        """Rows `rows` (int64 [k], increasing) of one view of array `name`: [k, width]."""
        array = self.group[name]
        return self._checked(lambda: array.get_orthogonal_selection((view, np.asarray(rows))),
                             name)

    def _read(self, name, prefix):
        if name not in self.group:
            raise PctError(f"store {self.path} has no '{name}' array")
        array = self.group[name]
        return self._checked(lambda: array[prefix] if prefix else array[...], name)

    def _checked(self, read, name):
        try:
            return read()
        except (ValueError, RuntimeError, OSError) as exc:
            raise PctError(f"store {self.path}: array '{name}' is unreadable or corrupted "
                           f"({type(exc).__name__}: {exc})") from None


def open_store(path, kind=None, require_complete=True):
    """Open and validate a store: a Zarr group of our schema, of `kind`, every unit done."""
    path = Location(path)
    if not path.exists():
        raise PctError(f"store not found: {path}")
    try:
        group = open_group(path)
        attrs = group.attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError) as exc:
        raise PctError(f"not a Zarr store: {path} ({type(exc).__name__})") from None
    if attrs.get("schema_version") != SCHEMA_VERSION or attrs.get("kind") not in KINDS:
        raise PctError(f"not a pct store: {path} (schema_version={attrs.get('schema_version')!r},"
                       f" kind={attrs.get('kind')!r})")
    missing = [name for name in ("labels", *value_arrays(attrs), "crops", "done")
               if name not in group]
    if missing:
        raise PctError(f"store {path} lacks array '{missing[0]}'")
    if kind is not None and attrs["kind"] != kind:
        raise PctError(f"store {path} is a {attrs['kind']} store, expected {kind}")
    if require_complete:
        done = group["done"][...]
        if not done.all():
            raise PctError(f"incomplete store {path}: {describe_missing(done)}; "
                           f"rerun the command that made it to finish it")
    return Store(path, group)

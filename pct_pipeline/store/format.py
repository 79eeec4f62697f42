"""§Store: the Zarr v3 format of teacher caches and prediction stores, and how it is written.

A store is a group ``NAME.zarr`` with ``logits`` [V, N, C], ``labels`` [N], ``crops`` [V, N, 5],
optional ``features`` [V, N, D] and ``member_logits`` [M, V, N, C], ``done`` [V, S] (one
completion marker per (view, shard)) and ``unit_records`` [V, S, A, 2]: what the writer of each
unit wrote. Arrays are chunked (1, R, ·) with R·C·itemsize ≈ 1 MiB and sharded along N in blocks
of ``shard_rows`` rows, so a unit (view, shard) is one object per array (its "slots",
attribute ``unit_arrays``). A writer owns whole units: it writes every slot's object, records
each object's size and crc32 in the unit's record, then sets its marker. Readers refuse a store
with a false marker, and read only objects that match their records (reader.py): a missing
object, which zarr would read as fill values, or an altered one is refused.

A teacher cache written with a compact codec (attribute ``codec``, codecs.py) holds the codec's
arrays [V, N, width] instead of ``logits``, chunked and sharded alike, plus ``reference_logits``
float32 [K, C]: the exact teacher logits of a sample of view 0's rows (`reference_rows`).
"""
import math
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from ..errors import PctError, writing
from .backend import RecordingStore, open_group, zarr_store
from .location import Location

SCHEMA_VERSION = 2  # 2: unit records; stores of version 1 are read without verification
READABLE_SCHEMAS = (1, 2)
CHUNK_BYTES = 1 << 20
CHUNKS_PER_SHARD = 16
KINDS = ("teacher-cache", "predictions")
# Settings that make two stores different artifacts; the batch size, worker count and process
# count are absent because they change no byte of the output.
IDENTITY = ("kind", "dataset", "teachers", "views", "view_seed", "resolution", "scale", "ratio",
            "flip", "eval_view", "crop_ratio", "split", "dtype", "store_features", "keep_members",
            "chunks_per_shard", "rows_per_chunk", "codec")
NOT_IN_UNIT = -1
# Every chunk a writer touches is stored (zarr skips all-fill chunks by default; the setting
# is zarr's runtime configuration, not the arrays' metadata), so a unit's record lists one
# object per slot, and a missing object is never legitimate.
WRITE_EVERY_CHUNK = {"array.write_empty_chunks": True}  # a record's size for a slot the unit has no object of (reference rows, views > 0)


@dataclass(frozen=True)
class Contents:
    """What a store holds besides its labels: `views` views of [N, num_classes] values in
    `dtype` (or, with `encoded` {name: (width, dtype)}, a compact codec's arrays in their
    place), optional `feature_dim`-wide features, `members` members' logits and
    `reference_rows` exact rows; the layout: `chunks_per_shard` chunks of ~1 MiB, or of
    `rows_per_chunk` rows (tests use it to get several shards out of a tiny data set)."""

    views: int
    num_classes: int
    dtype: str = "float16"
    feature_dim: int | None = None
    members: int | None = None
    encoded: dict | None = None
    reference_rows: int | None = None
    chunks_per_shard: int = CHUNKS_PER_SHARD
    rows_per_chunk: int | None = None


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


def create_store(path, kind, labels, contents, attributes):
    """Create an empty store (every marker false) of `contents` (a Contents) with `attributes`,
    and return its attributes (the layout and `unit_arrays` added)."""
    if kind not in KINDS:
        raise ValueError(f"unknown store kind {kind!r}")
    labels = np.asarray(labels, np.int64)
    c = contents
    layout = plan_layout(len(labels), c.num_classes, c.dtype, c.feature_dim, c.chunks_per_shard,
                         c.rows_per_chunk)
    attrs = dict(attributes, schema_version=SCHEMA_VERSION, kind=kind, num_samples=len(labels),
                 num_classes=int(c.num_classes), views=int(c.views), **layout)
    if c.reference_rows:
        attrs["reference_rows_per_shard"] = min(layout["shard_rows"],
                                                -(-int(c.reference_rows) // layout["num_shards"]))
    attrs["unit_arrays"] = unit_arrays(c, bool(c.reference_rows))
    # zarr writes each chunk to a temporary file and renames it: a full disk leaves no
    # chunk half-written, and the markers say which units are whole.
    with writing(path), zarr.config.set(WRITE_EVERY_CHUNK):
        store = RecordingStore(zarr_store(path))
        group = zarr.create_group(store=store, overwrite=True, attributes=attrs)
        _create_arrays(group, attrs, labels, c)
        attrs["labels_record"] = list(store.written["labels/c/0"])
        group.attrs.update({"labels_record": attrs["labels_record"]})
    return attrs


def unit_arrays(contents, reference):
    """The slots of a unit: one object each (a member's logits are slot member_logits/m)."""
    names = list(contents.encoded or ["logits"]) + ["crops"]
    names += ["features"] if contents.feature_dim else []
    names += [f"member_logits/{m}" for m in range(contents.members or 0)]
    return names + (["reference_logits"] if reference else [])


def _create_arrays(group, attrs, labels, c):
    views, n = attrs["views"], attrs["num_samples"]
    rows, shard_rows, num_shards = attrs["chunk_rows"], attrs["shard_rows"], attrs["num_shards"]
    data = dict(compressors=[ZstdCodec(level=1, checksum=True)], fill_value=0)

    def sharded(name, width, dtype, last):
        group.create_array(name, shape=(views, n, width), dtype=dtype, chunks=(1, rows, width),
                           shards=(1, shard_rows, width),
                           dimension_names=["view", "sample", last], **data)

    group.create_array("labels", data=labels, chunks=(n,), dimension_names=["sample"],
                       compressors=data["compressors"])
    for name, (width, dtype) in (c.encoded or {"logits": (c.num_classes, c.dtype)}).items():
        sharded(name, width, dtype, "class" if c.encoded is None else "value")
    if attrs.get("reference_rows_per_shard"):
        # one chunk per shard's sample: each unit of view 0 writes its own chunk
        group.create_array("reference_logits", shape=(len(reference_rows(attrs)), c.num_classes),
                           dtype="float32", chunks=(attrs["reference_rows_per_shard"],
                                                    c.num_classes),
                           dimension_names=["row", "class"], **data)
    group.create_array("crops", shape=(views, n, 5), dtype="int32", chunks=(1, shard_rows, 5),
                       dimension_names=["view", "sample", "box"], **data)
    if c.feature_dim:
        sharded("features", c.feature_dim, "float16", "feature")
    if c.members:
        group.create_array("member_logits", shape=(c.members, views, n, c.num_classes),
                           dtype=c.dtype, chunks=(1, 1, rows, c.num_classes),
                           shards=(1, 1, shard_rows, c.num_classes),
                           dimension_names=["member", "view", "sample", "class"], **data)
    # One chunk per marker and per record: writers of different units never share a chunk.
    slots = len(attrs["unit_arrays"])
    group.create_array("unit_records", shape=(views, num_shards, slots, 2), dtype="int64",
                       chunks=(1, 1, slots, 2), dimension_names=["view", "shard", "slot", "field"],
                       **data)
    group.create_array("done", shape=(views, num_shards), dtype="bool", chunks=(1, 1),
                       fill_value=False, dimension_names=["view", "shard"])


def slot_key(slot, view, shard):
    """The object key (inside the store) of a unit's slot: the shard of its array."""
    name, _, member = slot.partition("/")
    if name == "reference_logits":
        return f"reference_logits/c/{shard}/0"
    if member:
        return f"{name}/c/{member}/{view}/{shard}/0"
    return f"{name}/c/{view}/{shard}/0"


def write_unit(path, view, shard, values):
    """Write the rows of unit (view, shard) of every array, record what was written, then mark
    the unit done.

    values: {array name: rows} with the shard's rows in order: the logits [rows, C] (or a
    compact codec's arrays [rows, width]), 'crops' int32 [rows, 5], optionally 'features'
    [rows, D], 'member_logits' [M, rows, C], and (view 0 of a compact cache)
    'reference_logits' float32 [k, C], the exact logits of the shard's `reference_rows`.
    Data goes in before the record and the marker, so a unit interrupted half-way stays
    not-done and is written again on resume.
    """
    store = RecordingStore(zarr_store(path))
    group = open_group(path, mode="r+", store=store)
    attrs = group.attrs.asdict()
    lo, hi = shard_bounds(attrs, shard)
    with writing(path), zarr.config.set(WRITE_EVERY_CHUNK):
        for name, rows in values.items():
            if name == "reference_logits":
                first = shard * attrs["reference_rows_per_shard"]
                group[name][first:first + len(rows)] = rows
            elif name == "member_logits":
                group[name][:, view, lo:hi] = rows
            else:
                group[name][view, lo:hi] = rows
        group["unit_records"][view, shard] = unit_record(attrs, view, shard, store.written)
        group["done"][view, shard] = True


def unit_record(attrs, view, shard, written):
    """int64 [A, 2] (size, crc32) of each slot's object of the unit, from what the writer
    recorded; a slot the unit has no object of gets (NOT_IN_UNIT, 0)."""
    record = np.full((len(attrs["unit_arrays"]), 2), (NOT_IN_UNIT, 0), np.int64)
    for i, slot in enumerate(attrs["unit_arrays"]):
        if slot == "reference_logits" and view != 0:
            continue
        key = slot_key(slot, view, shard)
        if key not in written:  # a bug: every slot's object is written by its unit
            raise RuntimeError(f"unit (view {view}, shard {shard}) did not write {key}")
        record[i] = written[key]
    return record


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


def identity(attrs):
    """(setting, value) pairs that make two stores different artifacts: they must agree for a
    rerun to resume a store, or for two caches to hold the same views."""
    from .codecs import from_attrs

    config = attrs.get("config", {})
    values = {name: attrs.get(name, config.get(name)) for name in IDENTITY}
    values["teachers"] = [f"{t.get('arch')}:{t.get('sha256')}" for t in attrs.get("teachers", [])]
    if values["flip"] is None:  # stores made before the flip was an option flipped at 0.5
        values["flip"] = 0.5
    values["codec"] = from_attrs(attrs).name  # stores made before codecs: float16
    dataset = values.pop("dataset") or {}
    # The path is informative only: a moved data set is the same data set.
    pairs = [(f"dataset {key}", dataset.get(key)) for key in ("size", "num_samples",
                                                               "labels_sha256", "images_sha256",
                                                               "classes")]
    return pairs + list(values.items())


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
    if attrs.get("schema_version") not in READABLE_SCHEMAS or attrs.get("kind") not in KINDS:
        raise PctError(f"{path} exists and is not a pct store (use --overwrite to replace it)")
    return attrs


def done_markers(path):
    """bool [V, S]: the completion markers of a store, complete or not."""
    group = open_group(path)
    if "done" not in group:  # creation was interrupted before the markers were made
        raise PctError(f"store {path} lacks array 'done' (use --overwrite to replace it)")
    return group["done"][...]

"""Reading a store: `open_store` validates it and returns a `Store`, whose every read comes from
objects that match what their writer recorded (format.py's unit records).

At open, the store's listing is held against the records: an object that is missing or of
another size refuses the store before anything is read. Each read then checks the crc32 of
every object it fetches (backend.VerifiedStore), so altered bytes are refused before any loss
or report uses them; `Store.verify` reads a share of the units for that check up front.
Stores written before records existed (schema 1) are read with a note that they cannot be
verified.
"""
import os
import sys

import numpy as np

from ..classes import check_same
from ..errors import PctError
from .backend import UnwrittenData, VerifiedStore, open_group, zarr_store
from .format import (KINDS, NOT_IN_UNIT, READABLE_SCHEMAS, describe_missing, reference_rows,
                     shard_bounds, slot_key, value_arrays)
from .location import Location


class Store:
    """A validated, read-only store. Arrays are read lazily; a view is read chunk by chunk."""

    def __init__(self, path, group, backing=None):
        self.path = Location(path)
        self.group = group
        self.backing = backing  # the VerifiedStore under `group` (None: not verifiable)
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
    def classes(self):
        """The class names of the data, in label order, or None when the store has none."""
        names = (self.attrs.get("dataset") or {}).get("classes")
        return list(names) if isinstance(names, list) else None

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

    def check_data(self, data, source):
        """PctError unless this store was made from the data `data` describes (a dataset's
        identity, dataset.BetonInfo.identity(); `source` names it): the same sample count,
        labels, images and class names."""
        have = self.attrs.get("dataset") or {}
        if self.attrs.get("schema_version") == 1:
            raise PctError(f"store {self.path} was written by an earlier version of pct, whose "
                           f"record of its data cannot be checked against {source}: write it "
                           f"again with the command that made it")
        for key in ("num_samples", "labels_sha256", "images_sha256"):
            if have.get(key) != data.get(key):
                raise PctError(f"store {self.path} was made from other data than {source}: "
                               f"dataset {key} {have.get(key)!r} in the store, "
                               f"{data.get(key)!r} in {source}")
        check_same(have.get("classes"), data.get("classes"), f"store {self.path}", source)

    def verify(self, part=0, parts=1, check=None):
        """Read every object of units part, part + parts, ... (in (view, shard) order) and
        check it against its record: UnwrittenData for the first that does not match.
        `check(name, view, lo, rows)`, if given, sees each array's rows of each unit (e.g. to
        refuse NaN logits). A store of schema 1 has no records: only `check` applies."""
        units = [(v, s) for v in range(self.views) for s in range(int(self.attrs["num_shards"]))]
        slots = self.attrs.get("unit_arrays") or [*value_arrays(self.attrs), "crops"]
        for view, shard in units[part::parts]:
            lo, hi = shard_bounds(self.attrs, shard)
            for slot in slots:
                name, _, member = slot.partition("/")
                if name == "reference_logits":
                    continue  # read whole by `reference`
                if member:
                    rows = self._checked(lambda: self.group[name][int(member), view, lo:hi], name)
                else:
                    rows = self.read_rows(name, view, lo, hi)
                if check is not None:
                    check(name, view, lo, rows)

    def _read(self, name, prefix):
        if name not in self.group:
            raise PctError(f"store {self.path} has no '{name}' array")
        array = self.group[name]
        return self._checked(lambda: array[prefix] if prefix else array[...], name)

    def _checked(self, read, name):
        try:
            return read()
        except PctError:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            raise PctError(f"store {self.path}: array '{name}' is unreadable or corrupted "
                           f"({type(exc).__name__}: {exc})") from None
        finally:
            if self.backing is not None:
                self.backing.forget()


def open_store(path, kind=None):
    """Open and validate a store: a Zarr group of our schema, of `kind`, every unit done and
    every recorded object present with its recorded size."""
    path = Location(path)
    if not path.exists():
        raise PctError(f"store not found: {path}")
    try:
        group = open_group(path)
        attrs = group.attrs.asdict()
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError) as exc:
        raise PctError(f"not a Zarr store: {path} ({type(exc).__name__})") from None
    if attrs.get("schema_version") not in READABLE_SCHEMAS or attrs.get("kind") not in KINDS:
        raise PctError(f"not a pct store: {path} (schema_version={attrs.get('schema_version')!r},"
                       f" kind={attrs.get('kind')!r})")
    missing = [name for name in ("labels", *value_arrays(attrs), "crops", "done")
               if name not in group]
    if missing:
        raise PctError(f"store {path} lacks array '{missing[0]}'")
    if kind is not None and attrs["kind"] != kind:
        raise PctError(f"store {path} is a {attrs['kind']} store, expected {kind}")
    done = group["done"][...]
    if not done.all():
        raise PctError(f"incomplete store {path}: {describe_missing(done)}; "
                       f"rerun the command that made it to finish it")
    if "unit_records" not in group:
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"pct: note: store {path} was written before stores recorded what they hold: "
                  f"its data cannot be verified (write it again to get the records)",
                  file=sys.stderr, flush=True)
        return Store(path, group)
    expected = recorded_objects(path, attrs, group["unit_records"][...])
    check_listing(path, attrs, expected)
    backing = VerifiedStore(zarr_store(path, read_only=True), expected,
                            lambda key: describe_object(path, attrs, key))
    return Store(path, open_group(path, store=backing), backing)


def recorded_objects(path, attrs, records):
    """{object key: (size, crc32)} of every unit's recorded objects and of the labels, from
    the unit records int64 [V, S, A, 2]. A unit without a record (its record object was
    deleted: all zeros) is refused."""
    out = {"labels/c/0": tuple(attrs["labels_record"])}
    for (view, shard), record in np.ndenumerate(records[..., 0, 0]):
        if not records[view, shard, :, 0].any():
            raise UnwrittenData(f"store {path}: the write record of view {view}, shard {shard} "
                                f"is missing, so its data cannot be trusted")
        for slot, (size, crc) in zip(attrs["unit_arrays"], records[view, shard]):
            if size != NOT_IN_UNIT:
                out[slot_key(slot, view, shard)] = (int(size), int(crc))
    return out


def check_listing(path, attrs, expected):
    """UnwrittenData naming the first recorded object that is missing from the store or of
    another size (a deleted or truncated chunk), found from one listing of the store."""
    present = Location(path).listing()
    for key, (size, _) in expected.items():
        if present.get(key) != size:
            problem = "is missing" if key not in present else \
                f"has {present[key]} bytes, but {size} were written"
            raise UnwrittenData(f"{describe_object(path, attrs, key)}: object {key} {problem}")


def describe_object(path, attrs, key):
    """'store P: array A, view v, rows lo-hi' of the object `key` (which rows it holds)."""
    name, _, index = key.partition("/c/")
    parts = [int(i) for i in index.split("/")] if index else []
    where = f"store {path}: array '{name}'"
    if name == "labels" or attrs is None or not parts:
        return where
    if name == "reference_logits":
        return f"{where}, the reference rows of shard {parts[0]}"
    if name == "member_logits":
        where, parts = f"{where}, member {parts[0]}", parts[1:]
    lo, hi = shard_bounds(attrs, parts[1])
    return f"{where}, view {parts[0]}, rows {lo}-{hi - 1}"

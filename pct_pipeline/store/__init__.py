"""§Store, the package's only zarr user: one Zarr v3 format for teacher caches and predictions.

    location.py  where a store lives (a path, or a URL fsspec reaches) and what is there;
    locks.py     the one-writer lock beside a store;
    backend.py   the zarr store behind a location: counting, remote errors, write records,
                 verified reads;
    format.py    the layout, creating a store, writing a (view, shard) unit and its record;
    reader.py    `open_store` and `Store`: validated, verified reads;
    codecs.py    how a teacher cache stores its logits (imports torch: import it by name).
"""
from .backend import BYTES_READ, UnwrittenData, open_group, zarr_store
from .format import (CHUNKS_PER_SHARD, KINDS, SCHEMA_VERSION, Contents, create_store,
                     describe_missing, done_markers, existing_attrs, identity, plan_layout,
                     rank_shards,
                     reference_rows, set_attributes, shard_bounds, value_arrays, write_unit)
from .location import Location
from .reader import Store, open_store

__all__ = ["BYTES_READ", "UnwrittenData", "open_group", "zarr_store", "CHUNKS_PER_SHARD", "KINDS",
           "SCHEMA_VERSION", "Contents", "create_store", "describe_missing", "done_markers",
           "existing_attrs", "identity", "plan_layout", "rank_shards", "reference_rows", "set_attributes",
           "shard_bounds", "value_arrays", "write_unit", "Location", "Store", "open_store"]

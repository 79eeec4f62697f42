"""The store a precompute run writes: its lock, its attributes, and the check that an
existing store was made by the same command (so a rerun resumes it, never mixes two runs).
`out` is a store location (a path or a URL, see location.py)."""

from .. import __version__, models, store
from ..errors import PctError

REFERENCE_ROWS = 1000  # exact rows a compact cache keeps to measure its codec's fidelity


def acquire_lock(out):
    """The store's one-writer lock (`.NAME.lock` beside it: an flock on a local file, a lock
    object in object storage), held until its `release()`; refuses a second writer."""
    return store.Location(out).lock()


def prepare_store(cfg, info, teachers, out):
    """Create the store, or check that an existing one was made by this same command."""
    wanted = store_attributes(cfg, info, teachers)
    if cfg.overwrite:
        store.Location(out).remove()
    if check_existing(out, wanted):
        return
    compact = cfg.codec.name != "float16"
    contents = store.Contents(
        views=cfg.views, num_classes=info.num_classes, dtype=cfg.logits_dtype,
        feature_dim=models.feature_dim(teachers[0].model) if cfg.store_features else None,
        members=len(teachers) if cfg.keep_members else None,
        encoded=cfg.codec.arrays(info.num_classes) if compact else None,
        reference_rows=REFERENCE_ROWS if compact else None,
        chunks_per_shard=cfg.chunks_per_shard, rows_per_chunk=cfg.rows_per_chunk)
    store.create_store(out, cfg.kind, info.labels, contents, wanted)


def check_existing(out, wanted):
    """True when `out` is a store this same command can resume; False when nothing is there;
    PctError for anything else (another store, someone else's files)."""
    existing = store.existing_attrs(out)
    if existing is None:
        return False
    check_same_command(out, existing, wanted)
    store.done_markers(out)  # the layout is whole, so the ranks can resume it
    return True


def store_attributes(cfg, info, teachers):
    """The §Store attributes this command writes (create_store adds the layout fields)."""
    return {
        "kind": cfg.kind, "split": cfg.split_name, "views": cfg.views, **cfg.spec.attrs(),
        "dtype": cfg.logits_dtype,
        "teachers": [models.checkpoint_record(t.arch, t.path) for t in teachers],
        "ensemble": "mean-logits", "dataset": info.identity(),
        "pct_version": __version__, "config": cfg.as_dict(), **cfg.codec.attrs(),
    }


def check_same_command(out, existing, wanted):
    """Refuse (naming the first differing setting and both values) unless they agree."""
    if existing.get("schema_version") != store.SCHEMA_VERSION:
        raise PctError(f"{out} was written by an earlier version of pct (store schema "
                       f"{existing.get('schema_version')}); use --overwrite to write it again")
    for (name, there), (_, here) in zip(store.identity(existing), store.identity(wanted)):
        if there != here:
            raise PctError(f"{out} was made by a different command: {name} is {there!r} there, "
                           f"{here!r} here (use --overwrite to replace it)")

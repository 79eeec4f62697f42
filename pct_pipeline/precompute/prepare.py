"""The store a precompute run writes: its lock, its attributes, and the check that an
existing store was made by the same command (so a rerun resumes it, never mixes two runs).
`out` is a store location (a path or a URL, see location.py)."""

from .. import __version__, codecs, models, store, views
from ..errors import PctError

# Settings that make two stores different artifacts; the batch size, worker count and process
# count are absent because they change no byte of the output.
IDENTITY = ("kind", "dataset", "teachers", "views", "view_seed", "resolution", "scale", "ratio",
            "flip", "eval_view", "crop_ratio", "split", "dtype", "store_features", "keep_members",
            "chunks_per_shard", "rows_per_chunk", "codec")
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
    feature_dim = models.feature_dim(teachers[0].model) if cfg.store_features else None
    codec = codecs.parse(cfg.codec)
    compact = codec.name != "float16"
    store.create_store(out, kind=cfg.kind, labels=info.labels, num_classes=info.num_classes,
                       views=cfg.num_views, attributes=wanted, dtype=cfg.dtype,
                       feature_dim=feature_dim, members=len(teachers) if cfg.keep_members else None,
                       chunks_per_shard=cfg.chunks_per_shard, rows_per_chunk=cfg.rows_per_chunk,
                       encoded=codec.arrays(info.num_classes) if compact else None,
                       reference_rows=REFERENCE_ROWS if compact else None)


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
        "kind": cfg.kind, "split": cfg.split_name, "views": cfg.num_views,
        "view_seed": cfg.view_seed, "resolution": cfg.resolution, "scale": list(cfg.scale),
        "ratio": list(cfg.ratio), "flip": cfg.flip, "eval_view": cfg.eval_view, "crop_ratio": cfg.crop_ratio,
        "teachers": [models.checkpoint_record(t.arch, t.path) for t in teachers],
        "ensemble": "mean-logits", "dataset": dict(info.fingerprint, classes=info.classes),
        "pct_version": __version__, "config": cfg.as_dict(), **codecs.parse(cfg.codec).attrs(),
    }


def identity(attrs):
    """(setting, value) pairs that must agree for a rerun to resume a store."""
    config = attrs.get("config", {})
    values = {name: attrs.get(name, config.get(name)) for name in IDENTITY}
    values["teachers"] = [f"{t.get('arch')}:{t.get('sha256')}" for t in attrs.get("teachers", [])]
    if values["flip"] is None:  # stores made before the flip was an option flipped at 0.5
        values["flip"] = views.DEFAULT_FLIP
    values["codec"] = codecs.from_attrs(attrs).name  # stores made before codecs: float16
    dataset = values.pop("dataset") or {}
    # The path is informative only: a moved data set is the same data set.
    pairs = [(f"dataset {key}", dataset.get(key)) for key in ("size", "num_samples",
                                                               "labels_sha256", "images_sha256",
                                                               "classes")]
    return pairs + list(values.items())


def check_same_command(out, existing, wanted):
    """Refuse (naming the first differing setting and both values) unless they agree."""
    for (name, there), (_, here) in zip(identity(existing), identity(wanted)):
        if there != here:
            raise PctError(f"{out} was made by a different command: {name} is {there!r} there, "
                           f"{here!r} here (use --overwrite to replace it)")

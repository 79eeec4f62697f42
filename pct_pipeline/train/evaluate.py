"""Validation and prediction stores, for one process or many, without gathering logits.

Each process evaluates a contiguous run of rows: the rows of its own shards of the predictions
store it may write (`store.rank_shards` over a layout of one chunk per shard, so the runs are
balanced to within one chunk). Per-epoch validation sums top-1/top-5 counts over the
processes (one all_reduce of three numbers); a predictions store is written by every process
for its own rows, after process 0 has created it. No process holds more than its own rows'
logits: (N / W + one shard) · C · 4 bytes.

Logits are computed in float32 with autocast off, whatever the training precision: bf16 rounds
logits between 8 and 16 to steps of 0.0625, which ties near-equal classes, and those boundary
samples are exactly the ones the negative flip rate counts.

`evaluate_checkpoint` is `pct evaluate`: the same predictions store for any checkpoint.
"""
import json
from dataclasses import asdict

import numpy as np
import torch

from .. import __version__, distributed, models, store, views
from ..dataset import BetonInfo, ViewLoader
from ..errors import PctError, first_nonfinite_row

PREDICTION_DTYPE = "float32"


def prediction_layout(num_samples, num_classes, rows_per_chunk=None):
    """The layout of a predictions store: float32 logits, one chunk (~1 MiB unless
    `rows_per_chunk` says otherwise) per shard, plus `num_samples`."""
    return dict(store.plan_layout(num_samples, num_classes, PREDICTION_DTYPE, chunks_per_shard=1,
                                  rows_per_chunk=rows_per_chunk), num_samples=num_samples)


def own_rows(num_samples, num_classes, d, rows_per_chunk=None):
    """int64 rows this process evaluates: those of its shards of the predictions store."""
    layout = prediction_layout(num_samples, num_classes, rows_per_chunk)
    shards = store.rank_shards(layout["num_shards"], d.rank, d.world)
    if not len(shards):
        return np.zeros(0, np.int64)
    lo, hi = store.shard_bounds(layout, shards[0])[0], store.shard_bounds(layout, shards[-1])[1]
    return np.arange(lo, hi, dtype=np.int64)


def make_loader(path, rows, batch_size, resolution, workers, crop_ratio, device):
    """The eval-view loader over `rows` in order, or None when this process has no rows."""
    if len(rows) == 0:
        return None
    return ViewLoader(path, batch_size, resolution, workers, eval_view=True,
                      crop_ratio=crop_ratio, indices=rows, device=device)


@torch.inference_mode()
def predict(model, loader):
    """Yield (logits float32 [B, C], labels int64 [B], indices int64 [B]) on the loader's
    device, computed with autocast off (exact float32 logits)."""
    if loader is None:
        return
    model.eval()
    for images, labels, indices in loader:
        with models.autocast(images.device):
            logits = models.main_logits(model(images)).float()
        yield logits, labels, indices


def topk_correct(logits, labels, k=5):
    """(top-1 hits, top-k hits) of a batch as float tensors; ties go to the lower class."""
    top = logits.topk(min(k, logits.shape[1]), dim=1, sorted=True).indices
    hits = top == labels[:, None]
    return hits[:, 0].sum().double(), hits.any(dim=1).sum().double()


def validate(batches, d):
    """{'top1', 'top5'} over all processes' rows: counts summed by one all_reduce.

    batches: (logits [B, C], labels [B], indices [B]) of this process's rows, as `predict`
    yields them."""
    top1 = top5 = seen = 0.0
    for logits, labels, _ in batches:
        a, b = topk_correct(logits, labels)
        top1, top5, seen = top1 + a.item(), top5 + b.item(), seen + len(labels)
    top1, top5, seen = distributed.all_sum([top1, top5, seen], d.device)
    return {"top1": top1 / max(seen, 1), "top5": top5 / max(seen, 1)}


def write_predictions(path, batches, rows, val_info, num_classes, d, attrs, source,
                      rows_per_chunk=None):
    """Write the predictions store `path` on the validation set; returns accuracy.

    Process 0 creates the store (attributes `attrs` plus the eval view's description); then
    every process takes `batches` (as `predict` yields them) of `rows` (its `own_rows`, in
    order) and writes its shards' units. A NaN/inf
    logit or a failed write stops every process with the same one-line error (`source` names
    the model in it).
    """
    _agree(d, lambda: d.is_main and _create(path, val_info, num_classes, attrs, rows_per_chunk))
    logits = np.empty((len(rows), num_classes), np.float32)
    hits, at = np.zeros(2), 0
    for batch, labels, _ in batches:
        hits += [t.item() for t in topk_correct(batch, labels)]
        logits[at:at + len(labels)] = batch.cpu().numpy()
        at += len(labels)
    layout = prediction_layout(val_info.num_samples, num_classes, rows_per_chunk)
    _agree(d, lambda: _write_rows(path, logits, rows, val_info, attrs["crop_ratio"], d, source,
                                  layout))
    top1, top5 = distributed.all_sum(hits.tolist(), d.device)
    return {"top1": top1 / val_info.num_samples, "top5": top5 / val_info.num_samples}


def _write_rows(path, logits, rows, val_info, crop_ratio, d, source, layout):
    """Check this process's rows for NaN/inf, then write its shards' units."""
    bad = first_nonfinite_row(logits)
    if bad is not None:
        raise PctError(f"{source} gives NaN/inf logits for sample {rows[bad]} of "
                       f"{val_info.path}")
    boxes = views.crop_boxes(0, 0, val_info.heights, val_info.widths, eval_view=True,
                             crop_ratio=crop_ratio, indices=rows)
    first = rows[0] if len(rows) else 0
    for shard in store.rank_shards(layout["num_shards"], d.rank, d.world):
        lo, hi = (b - first for b in store.shard_bounds(layout, shard))
        store.write_unit(path, 0, shard, logits=logits[lo:hi], crops=boxes[lo:hi])


def _create(path, val_info, num_classes, attrs, rows_per_chunk):
    attrs = {"split": "val", "eval_view": True, "view_seed": 0, "scale": None, "ratio": None,
             "flip": 0.0, "dataset": {**val_info.fingerprint, "classes": val_info.classes},
             "teachers": [], "ensemble": "mean-logits", "pct_version": __version__, **attrs}
    store.create_store(path, kind="predictions", labels=val_info.labels,
                       num_classes=num_classes, views=1, dtype=PREDICTION_DTYPE,
                       attributes=json.loads(json.dumps(attrs, default=str)), chunks_per_shard=1,
                       rows_per_chunk=rows_per_chunk)


def _agree(d, action):
    """Run `action` where it applies and raise the first process's PctError on every process,
    so that no process waits for one that has stopped."""
    problem = None
    try:
        action()
    except PctError as exc:
        problem = str(exc)
    problem = distributed.first_problem(problem)
    if problem is not None:
        raise PctError(problem)


def evaluate_checkpoint(cfg):
    """`pct evaluate`: the eval-view logits of the checkpoint `cfg.checkpoint` as a predictions
    store `cfg.out`, written by every process for its own rows (cfg: an EvaluateConfig;
    `trust_checkpoint`: see models.load_file). Returns {'top1', 'top5', 'config'}, the config
    as used: its resolution and crop ratio resolved (EvaluateConfig.resolve)."""
    d = distributed.setup(cfg.device)
    try:
        check_new_output(cfg.out, cfg.overwrite)
        arch, trained = _checkpoint_arch(cfg)
        cfg = cfg.resolve(trained)
        val_info = BetonInfo(cfg.data)
        model, classes = models.load_model(arch, cfg.checkpoint, trust=cfg.trust_checkpoint)
        if val_info.num_classes > classes:
            raise PctError(f"checkpoint {cfg.checkpoint} has {classes} classes, the data "
                           f"{cfg.data} has {val_info.num_classes}")
        model = model.to(d.device)
        rows = own_rows(val_info.num_samples, classes, d, cfg.rows_per_chunk)
        loader = make_loader(cfg.data, rows, cfg.batch_size, cfg.resolution, cfg.workers,
                             cfg.crop_ratio, d.device)
        if d.is_main and cfg.overwrite:
            remove_output(cfg.out)
        distributed.barrier()
        record = models.checkpoint_record(arch, cfg.checkpoint)
        attrs = {"resolution": cfg.resolution, "crop_ratio": cfg.crop_ratio,
                 "model": {"arch": arch, "checkpoint": str(cfg.checkpoint),
                           "sha256": record["sha256"]},
                 "teachers": [record], "config": asdict(cfg)}
        try:
            result = write_predictions(cfg.out, predict(model, loader), rows, val_info, classes,
                                       d, attrs, f"checkpoint {cfg.checkpoint}",
                                       cfg.rows_per_chunk)
        except PctError:  # a full disk, say: leave no half-made store under --out
            if d.is_main:
                remove_output(cfg.out, ignore_errors=True)
            raise
        return {**result, "config": asdict(cfg)}
    finally:
        distributed.cleanup()


def _checkpoint_arch(cfg):
    """(architecture, `pct train` config dict or None): --arch, else the one the checkpoint
    records; --arch contradicting the checkpoint's is refused."""
    ckpt = models.load_file(cfg.checkpoint, cfg.trust_checkpoint)
    named = ckpt.get("arch") if isinstance(ckpt, dict) else None
    if cfg.arch is not None and named is not None and cfg.arch != named:
        raise PctError(f"--arch {cfg.arch} contradicts checkpoint {cfg.checkpoint}, which holds "
                       f"a {named} model")
    if cfg.arch is None and named is None:
        raise PctError(f"{cfg.checkpoint} does not name its architecture (not written by pct "
                       f"train): give --arch")
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    return cfg.arch or named, config


def remove_output(out, ignore_errors=False):
    """Remove what --overwrite replaces: a store (a folder, or objects under a URL), a file or
    a link. `ignore_errors`: remove what can be removed, quietly (cleaning up after an
    error, whose message is the one to show)."""
    try:
        store.Location(out).remove(ignore_errors)
    except PctError:
        if not ignore_errors:
            raise


def check_new_output(out, overwrite):
    """Refuse to replace whatever is at `out` (a store of earlier results, someone's folder)
    unless asked to."""
    if not overwrite and store.Location(out).exists():
        raise PctError(f"{out} exists (use --overwrite to replace it)")

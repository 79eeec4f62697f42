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

Used by `pct train` (each epoch's validation, the final predictions) and `pct evaluate`.
"""
import json
from dataclasses import dataclass

import numpy as np
import torch

from . import __version__, distributed, models, store
from .dataset import ViewLoader
from .errors import PctError, first_nonfinite_row

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


def make_loader(path, rows, spec, batch_size, workers, device):
    """The loader of eval view `spec` (a views.ViewSpec) over `rows` in order, or None when
    this process has no rows."""
    if len(rows) == 0:
        return None
    return ViewLoader(path, spec, batch_size, workers, indices=rows, device=device)


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


@dataclass(frozen=True)
class Output:
    """A predictions store to write: `path` (a path or URL), the validation `data` (a
    dataset.BetonInfo) it holds the logits of, the model's `num_classes`, the eval view
    `spec` (a views.ViewSpec), `attrs` describing the model, and `rows_per_chunk` (None: ~1
    MiB chunks)."""

    path: str
    data: object
    num_classes: int
    spec: object
    attrs: dict
    rows_per_chunk: int | None = None


def write_predictions(output, batches, rows, d, source):
    """Write the predictions store `output` (an Output); returns accuracy.

    Process 0 creates the store; then every process takes `batches` (as `predict` yields
    them) of `rows` (its `own_rows`, in order) and writes its shards' units. A NaN/inf logit or
    a failed write stops every process with the same one-line error (`source` names the model
    in it).
    """
    distributed.agree(lambda: d.is_main and _create(output))
    logits = np.empty((len(rows), output.num_classes), np.float32)
    hits, at = np.zeros(2), 0
    for batch, labels, _ in batches:
        hits += [t.item() for t in topk_correct(batch, labels)]
        logits[at:at + len(labels)] = batch.cpu().numpy()
        at += len(labels)
    distributed.agree(lambda: _write_rows(output, logits, rows, d, source))
    top1, top5 = distributed.all_sum(hits.tolist(), d.device)
    n = output.data.num_samples
    return {"top1": top1 / n, "top5": top5 / n}


def _write_rows(output, logits, rows, d, source):
    """Check this process's rows for NaN/inf, then write its shards' units."""
    bad = first_nonfinite_row(logits)
    if bad is not None:
        raise PctError(f"{source} gives NaN/inf logits for sample {rows[bad]} of "
                       f"{output.data.path}")
    boxes = output.spec.boxes(0, output.data.heights, output.data.widths, rows)
    layout = prediction_layout(output.data.num_samples, output.num_classes, output.rows_per_chunk)
    first = rows[0] if len(rows) else 0
    for shard in store.rank_shards(layout["num_shards"], d.rank, d.world):
        lo, hi = (b - first for b in store.shard_bounds(layout, shard))
        store.write_unit(output.path, 0, shard, {"logits": logits[lo:hi], "crops": boxes[lo:hi]})


def _create(output):
    data = output.data
    attrs = {"split": "val", **output.spec.attrs(), "dataset": data.identity(),
             "teachers": [], "ensemble": "mean-logits", "pct_version": __version__,
             **output.attrs}
    contents = store.Contents(views=1, num_classes=output.num_classes, dtype=PREDICTION_DTYPE,
                              chunks_per_shard=1, rows_per_chunk=output.rows_per_chunk)
    store.create_store(output.path, "predictions", data.labels, contents,
                       json.loads(json.dumps(attrs, default=str)))

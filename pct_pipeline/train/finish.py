"""The end of a `pct train` run: RUN_DIR/predictions.zarr of the final model (or of its EMA),
written by every process for its own rows, unless a finished run's store already holds them."""
from dataclasses import asdict
from pathlib import Path

from .. import models, store
from ..errors import PctError
from ..predictions import Output, predict, write_predictions


def finish(run, state, val, epoch, source=None):
    """Write RUN_DIR/predictions.zarr of the final model, or of its EMA with
    --predictions-of ema (every process its own rows), loaded from checkpoint `source` (else
    the run's own); returns its accuracy. A finished run whose complete predictions are of
    this epoch's weights is left as it is; predictions of an earlier epoch (a run continued
    with more epochs) are replaced."""
    cfg, d, path = run.cfg, run.d, run.out / "predictions.zarr"
    if not cfg.evaluate and epoch >= cfg.epochs and \
            predictions_model(path) == (epoch, cfg.predictions_of):
        if d.is_main:
            print(f"{run.out} is complete ({epoch} of {cfg.epochs} epochs, {path}): nothing to "
                  f"do", flush=True)
        return None
    chosen = state.ema.module if cfg.predictions_of == "ema" else state.model
    attrs = {"model": {"arch": cfg.arch, "epoch": epoch, "weights": cfg.predictions_of},
             "teachers": checkpoint_entry(cfg, source or run.out / "checkpoint.pt", d),
             "config": asdict(cfg)}
    loader, rows = val
    output = Output(path, run.val_info, run.num_classes, cfg.val_views, attrs)
    result = write_predictions(output, predict(chosen, loader), rows, d,
                               f"the {cfg.arch} model of {run.out}")
    if d.is_main:
        print(f"final: val_top1 {result['top1']:.4f} val_top5 {result['top5']:.4f} at "
              f"{cfg.val_views.resolution} px -> {path}", flush=True)
    return result


def checkpoint_entry(cfg, path, d):
    """The predictions store's `teachers` entry: the checkpoint holding the model (on process
    0, which writes the attributes; [] elsewhere or without a checkpoint)."""
    path = Path(path)
    if not d.is_main or not path.is_file():
        return []
    return [models.checkpoint_record(cfg.arch, path)]


def predictions_model(path):
    """(epoch, weights) of the model whose predictions the complete store `path` holds, or
    None when there is no complete store."""
    try:
        model = store.open_store(path).attrs.get("model") or {}
    except PctError:
        return None
    return model.get("epoch"), model.get("weights")

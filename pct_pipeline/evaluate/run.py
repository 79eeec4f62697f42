"""`pct evaluate`: the eval-view logits of any checkpoint as a predictions store, written by
every process for its own rows (predictions.py), at the view the checkpoint's training
validated with unless told otherwise."""
from dataclasses import asdict, replace

from .. import distributed, models, store
from ..dataset import BetonInfo
from ..errors import PctError
from ..predictions import Output, make_loader, own_rows, predict, write_predictions


def run(cfg):
    """Write the predictions store `cfg.out` of checkpoint `cfg.checkpoint` (an EvaluateConfig).
    Returns {'top1', 'top5', 'config'}, the config as used (its view resolved)."""
    d = distributed.setup(cfg.device)
    try:
        return _run(cfg, d)
    finally:
        distributed.cleanup()


def _run(cfg, d):
    check_new_output(cfg.out, cfg.overwrite)
    arch, trained = checkpoint_arch(cfg)
    spec = cfg.eval_view(trained)
    cfg = replace(cfg, resolution=spec.resolution, crop_ratio=spec.crop_ratio)
    val_info = BetonInfo(cfg.data)
    model, classes = models.load_model(arch, cfg.checkpoint, trust=cfg.trust_checkpoint)
    models.check_classes(cfg.checkpoint, val_info.classes, f"the data {cfg.data}",
                         cfg.allow_unnamed_classes, cfg.trust_checkpoint)
    if val_info.num_classes > classes:
        raise PctError(f"checkpoint {cfg.checkpoint} has {classes} classes, the data "
                       f"{cfg.data} has {val_info.num_classes}")
    model = model.to(d.device)
    rows = own_rows(val_info.num_samples, classes, d, cfg.rows_per_chunk)
    loader = make_loader(cfg.data, rows, spec, cfg.batch_size, cfg.workers, d.device)
    if d.is_main and cfg.overwrite:
        remove_output(cfg.out)
    distributed.barrier()
    record = models.checkpoint_record(arch, cfg.checkpoint)
    attrs = {"model": {"arch": arch, "checkpoint": str(cfg.checkpoint), "sha256": record["sha256"]},
             "teachers": [record], "config": asdict(cfg)}
    output = Output(cfg.out, val_info, classes, spec, attrs, cfg.rows_per_chunk)
    try:
        result = write_predictions(output, predict(model, loader), rows, d,
                                   f"checkpoint {cfg.checkpoint}")
    except PctError:  # a full disk, say: leave no half-made store under --out
        if d.is_main:
            remove_output(cfg.out, ignore_errors=True)
        raise
    return {**result, "config": asdict(cfg)}


def checkpoint_arch(cfg):
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

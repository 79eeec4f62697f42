"""`pct train`: one training loop for one process or torchrun DDP.

Epoch e trains on view e mod V of a teacher cache (view e without one), joined by sample index
to the cached logits; the loss is `losses.pct_loss`. After every epoch RUN_DIR/checkpoint.pt
is written atomically, then a line is appended to RUN_DIR/metrics.jsonl (losses, top-1/top-5,
images/s, where the step's time went); the final model's validation logits go to
RUN_DIR/predictions.zarr. Re-running the command into its run folder resumes it
(checkpoint.py); the recipe (schedule, precision, EMA) is in recipe.py.
"""
import json
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import allocator, distributed, models, store
from ..dataset import BetonInfo, ViewLoader
from ..errors import PctError, writing
from . import checkpoint, recipe
from .clock import CHECK_EVERY, NonFinite, StepClock
from .evaluate import predict, validate, write_predictions
from .losses import pct_loss
from .prepare import (bct_arch, check_options, check_ranks_in_sync, make_teachers,
                      make_val_loader, resolve_views, sync_buffers)
from .teachers import bct_head, open_cache


def run(cfg):
    d = distributed.setup(cfg.device)
    try:
        with ExitStack() as held:  # the run folder's lock, once training starts
            return _run(cfg, d, held)
    finally:
        distributed.cleanup()


def _run(cfg, d, held):
    train_info, val_info = BetonInfo(cfg.data), BetonInfo(cfg.val)
    num_classes = cfg.num_classes or train_info.num_classes
    check_options(cfg, train_info, val_info, num_classes)
    source = checkpoint.resume_source(cfg)
    if cfg.evaluate and cfg.resolution is None and cfg.val_resolution is None:
        cfg = replace(cfg, val_resolution=checkpoint.validated_resolution(source, cfg))
    cnaish = cfg.loss.mode == "cna"
    cache = open_cache(cfg.teacher_cache, train_info, num_classes, cnaish) if cfg.teacher_cache else None
    cfg = replace(resolve_views(cfg, cache), workers=distributed.workers_for(cfg.workers))
    ident = checkpoint.identity(cfg, num_classes, train_info, cache, d.world, val_info)
    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.arch, num_classes, pretrained=cfg.pretrained,
                               **dict(cfg.model_kwargs))
    model = recipe.convert_sync_bn(cfg, model, d).to(d.device)
    if d.device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = cfg.lr * cfg.batch_size * cfg.accum_steps * d.world / 256 if cfg.auto_scale else cfg.lr
    optimizer, precision = recipe.make_optimizer(cfg, model, lr), recipe.Precision(cfg, d.device)
    ema = recipe.make_ema(cfg, model)
    out = Path(cfg.out)
    start_epoch = checkpoint.load(source, cfg, ident, model, optimizer, precision, ema) if source else 0
    recipe.apply_options(optimizer, cfg, lr)  # the schedule of this command, from where it is
    val = make_val_loader(cfg, val_info, num_classes, d)
    if cfg.evaluate or start_epoch >= cfg.epochs:
        return finish(cfg, model, ema, val, val_info, num_classes, d, out, start_epoch, source)
    train_loader = ViewLoader(cfg.data, cfg.batch_size, cfg.resolution, cfg.workers,
                              order="random", seed=cfg.seed, distributed=d.world > 1,
                              drop_last=True, device=d.device, view_seed=cfg.view_seed,
                              scale=cfg.scale, ratio=cfg.ratio, flip=cfg.flip)
    teachers = make_teachers(cfg, cache, train_loader, num_classes, d, cnaish)
    head = None
    if cfg.loss.bct_loss_weight > 0:
        head = bct_head(cfg.bct_old_model, cfg.bct_old_arch or bct_arch(cfg, cache),
                        models.feature_dim(model), num_classes, d.device, cfg.trust_checkpoint)
    net = DistributedDataParallel(model) if d.world > 1 else model
    held.enter_context(lock_run_folder(out, d))
    if d.is_main:
        start_run(cfg, out, source, start_epoch, ident, model, optimizer, precision, ema)
    distributed.barrier()
    allocator.freeze_built_objects()
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        view = teachers.view_of(epoch) if teachers else epoch
        train_loader.set_epoch(epoch)
        train_loader.set_view(view)
        if teachers:
            teachers.begin_epoch(epoch, cfg.epochs)
        stats = train_one_epoch(cfg, net, model, train_loader, optimizer, precision, ema,
                                teachers, head, epoch, d)
        sync_buffers(model, d)
        stats.update(epoch=epoch + 1, view=view, **validate(predict(model, val[0]), d))
        if ema is not None:
            ema_stats = validate(predict(ema.module, val[0]), d)
            stats.update(ema_top1=ema_stats["top1"], ema_top5=ema_stats["top5"])
        if d.is_main:
            end_epoch(cfg, out, stats, ident, model, optimizer, precision, ema, started, start_epoch)
    check_ranks_in_sync(model, d)
    return finish(cfg, model, ema, val, val_info, num_classes, d, out, cfg.epochs)


def lock_run_folder(out, d):
    """Process 0's `checkpoint.RunLock` of the run folder (nothing elsewhere); when another
    command holds it, every process stops with the same one-line refusal."""
    lock, problem = nullcontext(), None
    if d.is_main:
        try:
            lock = checkpoint.RunLock(out)
        except PctError as exc:
            problem = str(exc)
    problem = distributed.first_problem(problem)
    if problem is not None:
        raise PctError(problem)
    return lock


def start_run(cfg, out, source, start_epoch, ident, model, optimizer, precision, ema):
    """Process 0, before the first epoch: clear a run being overwritten, record the config,
    drop metrics lines newer than the checkpoint resumed, save init.pt if asked."""
    if cfg.overwrite:
        checkpoint.clear_run(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=str))
    if source is not None:
        checkpoint.trim_metrics(out, start_epoch)
        print(f"resuming from {source} at epoch {start_epoch} of {cfg.epochs}", flush=True)
    if cfg.save_init_checkpoint and start_epoch == 0:
        checkpoint.save(out / "init.pt", cfg, ident, model, optimizer, precision, ema, 0)


def end_epoch(cfg, out, stats, ident, model, optimizer, precision, ema, started, start_epoch):
    """Process 0, after an epoch: the checkpoint first, then its metrics line (a run killed
    between the two resumes without a duplicate line), then the progress line."""
    epoch = stats["epoch"]
    checkpoint.save(out / "checkpoint.pt", cfg, ident, model, optimizer, precision, ema, epoch)
    if cfg.epochs_per_save and epoch % cfg.epochs_per_save == 0:
        checkpoint.save(out / f"checkpoint_epoch_{epoch}.pt", cfg, ident, model, optimizer,
                        precision, ema, epoch)
    checkpoint.log_epoch(out, stats)
    per_epoch = (time.perf_counter() - started) / (epoch - start_epoch)
    ema = f" ema top1 {stats['ema_top1']:.4f}" if "ema_top1" in stats else ""
    print(f"epoch {epoch}/{cfg.epochs}: loss {stats['loss']:.4f} ce {stats['ce']:.4f} "
          f"fd {stats['fd']:.4f} top1 {stats['top1']:.4f} top5 {stats['top5']:.4f}{ema} "
          f"{stats['images_per_s']:.0f} img/s, ETA {eta(per_epoch * (cfg.epochs - epoch))}",
          flush=True)


def eta(seconds):
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def train_one_epoch(cfg, net, model, loader, optimizer, precision, ema, teachers, head, epoch, d):
    """One pass over the loader; returns mean losses, images/s and the step's time account.

    Every `accum_steps` loader batches make one optimizer step (gradients of the group
    averaged; DDP synchronises on the group's last batch only).
    """
    net.train()
    batches = len(loader) if cfg.max_steps_per_epoch is None else \
        min(len(loader), cfg.max_steps_per_epoch * cfg.accum_steps)
    steps = -(-batches // cfg.accum_steps)
    taps = cfg.loss.mode == "cna" or cfg.loss.bct_loss_weight > 0  # features are needed
    sums, seen, start = {}, 0, time.perf_counter()
    clock, health = StepClock(d.device), NonFinite(d.device)
    for i, (images, labels, indices) in zip(range(batches), loader):
        clock.mark("loader")
        step, micro = divmod(i, cfg.accum_steps)
        group = min(cfg.accum_steps, batches - step * cfg.accum_steps)
        if micro == 0:
            recipe.set_lr(optimizer, recipe.lr_factor(cfg, epoch, step, steps))
        last = micro == group - 1
        with (nullcontext() if last or d.world == 1 else net.no_sync()):
            with precision.autocast(), (models.FeatureTap(model) if taps else nullcontext()) as tap:
                output = net(images)
            clock.mark("forward")
            # after the forward: the loader refills its queue then, not during the join
            old_logits, old_features = (teachers.targets(i, images, indices) if teachers
                                        else (None, None))
            clock.mark("targets")
            loss, parts = step_loss(cfg, d, output, labels, old_logits, tap, old_features, head)
            health.watch(i, loss, models.main_logits(output), indices)
            clock.mark("loss")
            precision.backward(loss / group)
            clock.mark("backward")
        if last:
            precision.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_parameters(model)
        clock.mark("optimizer")
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value * len(labels)
        seen += len(labels)
        if i % CHECK_EVERY == CHECK_EVERY - 1:
            health.check(epoch)
        if d.is_main and cfg.print_freq and i % cfg.print_freq == 0:
            print(f"epoch {epoch} step {i}/{batches} loss {parts['loss'].item():.4f}", flush=True)
    health.check(epoch)
    elapsed = time.perf_counter() - start
    totals = distributed.all_sum([float(v) for v in sums.values()] + [seen], d.device)
    stats = {name: total / max(totals[-1], 1) for name, total in zip(sums, totals)}
    stats.update(images_per_s=totals[-1] / elapsed, train_time_s=elapsed,
                 lr=optimizer.param_groups[0]["lr"], step_time_s=clock.account())
    return stats


def step_loss(cfg, d, output, labels, old_logits, tap, old_features, head):
    """(total loss, its parts) of one batch: pct_loss plus the auxiliary heads' CE."""
    logits = models.main_logits(output)
    features, anchors = (tap.features if tap is not None else None), None
    if cfg.loss.mode == "cna" and d.world > 1:  # negatives from the global batch
        anchors = slice(d.rank * len(labels), (d.rank + 1) * len(labels))
        features = distributed.all_gather_with_grad(features.float())
        old_features = distributed.all_gather_with_grad(old_features)
    loss, parts = pct_loss(cfg.loss, logits.float(), labels, old_logits, features,
                           old_features, head, anchors)
    # auxiliary heads' CE counts like CE: inside pct_loss's (1 - a) factor, as in the original
    a = cfg.loss.kd_alpha if cfg.loss.mode is not None else 0.0
    return loss + (1 - a) * models.aux_loss(output, labels), parts


def finish(cfg, model, ema, val, val_info, num_classes, d, out, epoch, source=None):
    """Write RUN_DIR/predictions.zarr of the final model, or of its EMA with
    --predictions-of ema (every process its own rows), loaded from checkpoint `source` (else
    the run's own); returns its accuracy. A finished run whose complete predictions are of
    this epoch's weights is left as it is; predictions of an earlier epoch (a run continued
    with more epochs) are replaced."""
    path = out / "predictions.zarr"
    if not cfg.evaluate and epoch >= cfg.epochs and \
            predictions_model(path) == (epoch, cfg.predictions_of):
        if d.is_main:
            print(f"{out} is complete ({epoch} of {cfg.epochs} epochs, {path}): nothing to do",
                  flush=True)
        return None
    chosen = ema.module if cfg.predictions_of == "ema" else model
    attrs = {"resolution": cfg.val_resolution or cfg.resolution, "crop_ratio": cfg.crop_ratio,
             "model": {"arch": cfg.arch, "epoch": epoch, "weights": cfg.predictions_of},
             "teachers": checkpoint_entry(cfg, source or out / "checkpoint.pt", d),
             "config": asdict(cfg)}
    loader, rows = val
    result = write_predictions(path, predict(chosen, loader), rows, val_info, num_classes, d,
                               attrs, f"the {cfg.arch} model of {out}")
    if d.is_main:
        print(f"final: top1 {result['top1']:.4f} top5 {result['top5']:.4f} at "
              f"{attrs['resolution']} px -> "
              f"{out / 'predictions.zarr'}", flush=True)
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


"""`pct train`: one training loop for one process or torchrun DDP.

Epoch e trains on view e mod V of a teacher cache (view e without one), joined by sample index
to the cached logits; the loss is `losses.pct_loss`. After every epoch RUN_DIR/checkpoint.pt
is written atomically (state.py), then a line is appended to RUN_DIR/metrics.jsonl (losses,
top-1/top-5, images/s, where the step's time went); the final model's validation logits go to
RUN_DIR/predictions.zarr (finish.py). Re-running the command into its run folder resumes it
(run_folder.py); the recipe (schedule, precision, EMA) is in recipe.py; the validation counts
(negative flips against --old-predictions), the log line and TensorBoard in watch.py.
"""
import json
import time
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import allocator, distributed, models
from ..dataset import BetonInfo, Shuffle, ViewLoader
from ..errors import writing
from ..losses import pct_loss
from ..predictions import predict
from ..progress import clock
from . import recipe, run_folder
from .clock import Pace, StepClock
from .finish import finish
from .nonfinite import CHECK_EVERY, NonFinite
from .prepare import (bct_arch, check_options, check_ranks_in_sync, fit_to_data, make_teachers,
                      make_val_loader, note_upsampling, resolve, sync_buffers)
from .state import TrainState
from .teachers import bct_head, open_cache, verify_cache
from .watch import epoch_line, load_old_predictions, open_board, validate


@dataclass(frozen=True)
class Run:
    """What stays fixed during one `pct train` command: the resolved config, the run folder,
    the identity a checkpoint must share to be resumed (run_folder.identity), this process's
    distributed.Dist, the validation data (a dataset.BetonInfo) and the model's class count."""

    cfg: object
    out: Path
    ident: dict
    d: object
    val_info: object
    num_classes: int


class OldModel(NamedTuple):
    """Where the loss's old-model inputs come from: `teachers` (CachedTeachers,
    OnlineTeachers or None) and the frozen old classifier of BCT, `bct_head` ((weight, bias)
    or None)."""

    teachers: object
    bct_head: tuple | None


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
    cfg = fit_to_data(cfg, train_info, d)
    source = run_folder.resume_source(cfg)
    cnaish = cfg.loss.mode == "cna"
    cache = open_cache(cfg.teacher_cache, train_info, num_classes, cnaish) if cfg.teacher_cache else None
    if cache is not None:
        verify_cache(cache, d)
    cfg = resolve(cfg, cache, source)
    note_upsampling(cfg, train_info, val_info, d)
    ident = run_folder.identity(cfg, num_classes, train_info, cache, d.world, val_info)
    run = Run(cfg, Path(cfg.out), ident, d, val_info, num_classes)
    state = build_state(cfg, num_classes, d)
    start_epoch = state.load(source, cfg, ident) if source else 0
    recipe.apply_options(state.optimizer, cfg, recipe.base_lr(cfg, d.world))
    val = make_val_loader(cfg, val_info, num_classes, d)
    if cfg.evaluate or start_epoch >= cfg.epochs:
        return finish(run, state, val, start_epoch, source)
    old_top1 = load_old_predictions(cfg, val_info, num_classes, val[1], d)
    loader = ViewLoader(cfg.data, cfg.views, cfg.batch_size, cfg.workers,
                        shuffle=Shuffle(cfg.seed, distributed=d.world > 1), device=d.device)
    old = OldModel(make_teachers(cfg, cache, loader, num_classes, d, cnaish),
                   make_bct_head(cfg, cache, state.model, num_classes, d))
    net = DistributedDataParallel(state.model) if d.world > 1 else state.model
    held.enter_context(lock_run_folder(run.out, d))
    board = open_board(cfg, run.out, start_epoch, d)
    if board is not None:
        held.callback(board.close)
    if d.is_main:
        start_run(run, state, source, start_epoch)
    distributed.barrier()
    allocator.freeze_built_objects()
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        view = old.teachers.view_of(epoch) if old.teachers else epoch
        loader.set_epoch(epoch)
        loader.set_view(view)
        if old.teachers:
            old.teachers.begin_epoch(epoch, cfg.epochs)
        stats = train_one_epoch(cfg, state, net, loader, old, epoch, d)
        sync_buffers(state.model, d)
        stats.update(epoch=epoch + 1, view=view,
                     **validate(predict(state.model, val[0]), d, old_top1))
        if state.ema is not None:
            ema = validate(predict(state.ema.module, val[0]), d, old_top1)
            stats.update({f"ema_{name}": value for name, value in ema.items()})
        if d.is_main:
            per_epoch = (time.perf_counter() - started) / (epoch + 1 - start_epoch)
            end_epoch(run, state, stats, per_epoch * (cfg.epochs - epoch - 1), board)
    check_ranks_in_sync(state.model, d)
    return finish(run, state, val, cfg.epochs)


def build_state(cfg, num_classes, d):
    """A fresh TrainState: the model (seeded by cfg.seed, on d's device, channels_last on
    CUDA), SGD, precision and EMA as the recipe says."""
    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.arch, num_classes, pretrained=cfg.pretrained,
                               **dict(cfg.model_kwargs))
    model = recipe.convert_sync_bn(cfg, model, d).to(d.device)
    if d.device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = recipe.make_optimizer(cfg, model, recipe.base_lr(cfg, d.world))
    return TrainState(model, optimizer, recipe.Precision(cfg, d.device), recipe.make_ema(cfg, model))


def make_bct_head(cfg, cache, model, num_classes, d):
    """The frozen old classifier BCT applies to the new features, or None without BCT."""
    if cfg.loss.bct_loss_weight == 0:
        return None
    return bct_head(cfg.bct_old_model, cfg.bct_old_arch or bct_arch(cfg, cache),
                    models.feature_dim(model), num_classes, d.device, cfg.trust_checkpoint)


def lock_run_folder(out, d):
    """Process 0's `run_folder.RunLock` of the run folder (nothing elsewhere); when another
    command holds it, every process stops with the same one-line refusal."""
    lock = nullcontext()

    def take():
        nonlocal lock
        if d.is_main:
            lock = run_folder.RunLock(out)

    distributed.agree(take)
    return lock


def start_run(run, state, source, start_epoch):
    """Process 0, before the first epoch: clear a run being overwritten, record the config,
    drop metrics lines newer than the checkpoint resumed, save init.pt if asked."""
    cfg, out = run.cfg, run.out
    if cfg.overwrite:
        run_folder.clear_run(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=str))
    if source is not None:
        run_folder.trim_metrics(out, start_epoch)
        print(f"resuming from {source} at epoch {start_epoch} of {cfg.epochs}", flush=True)
    if cfg.save_init_checkpoint and start_epoch == 0:
        state.save(out / "init.pt", cfg, run.ident, 0)


def end_epoch(run, state, stats, seconds_left, board=None):
    """Process 0, after an epoch: the TensorBoard points (a run killed before its checkpoint
    resumes an epoch earlier, and TensorBoard drops them then), the checkpoint, its metrics
    line (a run killed between the two resumes without a duplicate line), the log line. The
    steady rates (steady_*) go to the log line and TensorBoard; metrics.jsonl keeps the
    whole epoch's images_per_s and step-time account."""
    cfg, out, epoch = run.cfg, run.out, stats["epoch"]
    if board is not None:
        board.log(stats)
    state.save(out / "checkpoint.pt", cfg, run.ident, epoch)
    if cfg.epochs_per_save and epoch % cfg.epochs_per_save == 0:
        state.save(out / f"checkpoint_epoch_{epoch}.pt", cfg, run.ident, epoch)
    run_folder.log_epoch(out, {k: v for k, v in stats.items() if not k.startswith("steady_")})
    print(epoch_line(stats, cfg.epochs, clock(seconds_left)), flush=True)


def train_one_epoch(cfg, state, net, loader, old, epoch, d):
    """One pass over the loader; returns mean losses, train top-1 (on the training views),
    images/s and the step's time account of the whole epoch, and the steady rates from the
    end of its first optimizer step on (steady_images_per_s, steady_step_s: without the
    loaders' compilation, which the first epoch's first batch waits for).

    state: the TrainState (net: its model, wrapped by DDP under torchrun); old: an OldModel.
    Every `accum_steps` loader batches make one optimizer step (gradients of the group
    averaged; DDP synchronises on the group's last batch only).
    """
    net.train()
    batches = len(loader) if cfg.max_steps_per_epoch is None else \
        min(len(loader), cfg.max_steps_per_epoch * cfg.accum_steps)
    steps = -(-batches // cfg.accum_steps)
    taps = cfg.loss.mode == "cna" or cfg.loss.bct_loss_weight > 0  # features are needed
    sums, seen, pace = {}, 0, Pace(d.device)
    hits = torch.zeros((), dtype=torch.float64, device=d.device)  # train top-1, no host sync
    clock, health = StepClock(d.device), NonFinite(d.device)
    for i, (images, labels, indices) in zip(range(batches), loader):
        clock.mark("loader")
        step, micro = divmod(i, cfg.accum_steps)
        group = min(cfg.accum_steps, batches - step * cfg.accum_steps)
        if micro == 0:
            recipe.set_lr(state.optimizer, recipe.lr_factor(cfg, epoch, step, steps))
        last = micro == group - 1
        with (nullcontext() if last or d.world == 1 else net.no_sync()):
            with state.precision.autocast(), \
                    (models.FeatureTap(state.model) if taps else nullcontext()) as tap:
                output = net(images)
            clock.mark("forward")
            # after the forward: the loader refills its queue then, not during the join
            targets = old.teachers.targets(i, images, indices) if old.teachers else (None, None)
            clock.mark("targets")
            loss, parts = step_loss(cfg, d, output, labels, targets, tap, old.bct_head)
            logits = models.main_logits(output)
            health.watch(i, loss, logits, indices)
            hits += (logits.detach().argmax(dim=1) == labels).sum()
            clock.mark("loss")
            state.precision.backward(loss / group)
            clock.mark("backward")
        if last:
            state.precision.step(state.optimizer)
            state.optimizer.zero_grad(set_to_none=True)
            if state.ema is not None:
                state.ema.update_parameters(state.model)
        clock.mark("optimizer")
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value * len(labels)
        seen += len(labels)
        if last:
            pace.stepped(seen)
        if i % CHECK_EVERY == CHECK_EVERY - 1:
            health.check(epoch)
        if d.is_main and cfg.print_freq and i % cfg.print_freq == 0:
            print(f"epoch {epoch} step {i}/{batches} loss {parts['loss'].item():.4f}", flush=True)
    health.check(epoch)
    steady = pace.stop(seen)
    *totals, hits, images, steady = distributed.all_sum(
        [float(v) for v in sums.values()] + [float(hits), seen, steady], d.device)
    stats = {name: total / max(images, 1) for name, total in zip(sums, totals)}
    stats.update(train_top1=hits / max(images, 1), lr=state.optimizer.param_groups[0]["lr"],
                 step_time_s=clock.account(), **pace.rates(images, steady, steps))
    return stats


def step_loss(cfg, d, output, labels, targets, tap, head):
    """(total loss, its parts) of one batch: pct_loss plus the auxiliary heads' CE.
    targets: (old logits [B, C] or None, old features [B, D] or None)."""
    logits, (old_logits, old_features) = models.main_logits(output), targets
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

"""Setting up a `pct train` run: option checks, the training and validation views, the
teachers (cache or online), the validation loader, and the cross-process checks of DDP."""
import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from .. import classes, distributed, models, progress
from ..errors import PctError
from ..losses import MODES
from ..predictions import make_loader, own_rows
from ..views import ViewSpec, trained_eval_view
from .run_folder import trained_config
from .teachers import CachedTeachers, OnlineTeachers, check_codec, fidelity_warning
from ..progress import note


def make_val_loader(cfg, val_info, num_classes, d):
    """(eval-view loader over this process's validation rows or None, the rows)."""
    rows = own_rows(val_info.num_samples, num_classes, d)
    return make_loader(cfg.val, rows, cfg.val_views, cfg.batch_size, cfg.workers, d.device), rows


def make_teachers(cfg, cache, loader, num_classes, d, with_features):
    """CachedTeachers, OnlineTeachers, or None when the loss has no distillation term (a cache
    given for BCT alone names the old architecture and is not read per epoch)."""
    if cfg.loss.mode is None:
        return None
    if cache is not None:
        check_codec(cache, cfg.loss)
        warning = fidelity_warning(cache, cfg.loss) if d.is_main else None
        if warning:
            print(f"pct: warning: {warning}", file=sys.stderr, flush=True)
        return CachedTeachers(cache, loader, with_features, d)
    if cfg.online_teachers:
        return OnlineTeachers(cfg.online_teachers, num_classes, d.device,
                              d.device.type == "cuda" and cfg.channels_last, with_features, cfg.amp,
                              cfg.trust_checkpoint)
    return None


def bct_arch(cfg, cache):
    if cache is not None and len(cache.attrs.get("teachers", [])) == 1:
        return cache.attrs["teachers"][0]["arch"]
    if len(cfg.online_teachers) == 1:
        return cfg.online_teachers[0][0]
    return cfg.arch


def check_options(cfg, train_info, val_info, num_classes):
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise PctError(f"--out {cfg.out} is not a folder (the run folder holds checkpoints, "
                       f"metrics and predictions)")
    if cfg.teacher_cache and cfg.online_teachers:
        raise PctError("give either --teacher-cache or --online-teacher, not both")
    if cfg.loss.mode is not None and not (cfg.teacher_cache or cfg.online_teachers):
        raise PctError(f"--kd-loss-mode {cfg.loss.mode} needs --teacher-cache or --online-teacher")
    if cfg.loss.mode is None and (cfg.teacher_cache or cfg.online_teachers) \
            and cfg.loss.bct_loss_weight == 0:
        teacher = "--teacher-cache" if cfg.teacher_cache else "--online-teacher"
        raise PctError(f"{teacher} is given without --kd-loss-mode, so the teacher would not be "
                       f"used; add --kd-loss-mode ({', '.join(MODES)})")
    if cfg.loss.bct_loss_weight > 0 and not cfg.bct_old_model:
        raise PctError(f"--bct-loss-weight {cfg.loss.bct_loss_weight} needs --bct-old-model")
    if train_info.num_classes < 2:
        raise PctError(f"the training data {train_info.path} has one class: a classifier needs "
                       f"at least two")
    if cfg.predictions_of == "ema" and cfg.ema_decay is None:
        raise PctError("--predictions-of ema needs --ema-decay (no EMA is kept without it)")
    if val_info.num_classes > num_classes:
        raise PctError(f"validation data has {val_info.num_classes} classes, the model {num_classes}")
    check_same_classes(train_info, val_info)
    for path in [p for _, p in cfg.online_teachers] + [cfg.bct_old_model] * bool(cfg.bct_old_model):
        models.check_classes(path, train_info.classes, f"the training data {train_info.path}",
                             cfg.allow_unnamed_classes, cfg.trust_checkpoint)


def fit_to_data(cfg, train_info, d):
    """`cfg` with --batch-size lowered to the training samples of one process where it is
    larger (with a note): an epoch trains on whole batches only, so a larger batch would train
    on nothing. Each of W processes gets floor(N / W) samples or more."""
    share = train_info.num_samples // d.world
    if cfg.batch_size <= share:
        return cfg
    if share == 0:
        raise PctError(f"the training data {train_info.path} has {train_info.num_samples} "
                       f"samples, fewer than the {d.world} processes")
    each = f" of each of the {d.world} processes" if d.world > 1 else ""
    note(f"--batch-size {cfg.batch_size} is more than the {share} training samples{each}; "
         f"using --batch-size {share}", d)
    return replace(cfg, batch_size=share)


def note_upsampling(cfg, train_info, val_info, d):
    """A note for each of the training and validation views larger than its data's images."""
    progress.note_upsampling("--resolution", cfg.views.resolution, train_info, d)
    progress.note_upsampling("the validation resolution", cfg.val_views.resolution, val_info, d)


def check_same_classes(train_info, val_info):
    """Refuse validation data whose label i names another class than the training data's
    label i (class folders missing from one of the two shift every later label). Data sets
    written without class names are not compared."""
    classes.check_same(train_info.classes, val_info.classes,
                       f"the training data {train_info.path}", f"validation data {val_info.path}")


def resolve(cfg, cache, source):
    """`cfg` with its views resolved: the training views (the teacher cache's, an explicit
    option that contradicts them refused; without a cache ViewSpec's defaults, with the
    options given), the validation view (centre crop at --val-resolution, else the training
    resolution; with --evaluate and no resolution given, the one the checkpoint `source`
    validated at) and the loader workers."""
    given = dict(cfg.view_options)
    if cache is None:
        views = ViewSpec().with_options(given)
    else:
        views = ViewSpec.from_attrs(cache.attrs).with_options(
            given, source=f"the teacher cache {cache.path}")
    resolution = cfg.val_resolution or views.resolution
    if cfg.evaluate and "resolution" not in given and cfg.val_resolution is None:
        trained = trained_eval_view(trained_config(source, cfg.trust_checkpoint))
        resolution = trained.resolution if trained else resolution
    return replace(cfg, views=views, val_views=ViewSpec.centre(resolution, cfg.crop_ratio),
                   workers=distributed.workers_for(cfg.workers))


def sync_buffers(model, d):
    """Give every rank rank 0's BatchNorm statistics (each rank's last forward updated its own)."""
    if d.world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def check_ranks_in_sync(model, d):
    """Under DDP, compare a hash of every parameter across ranks (cheap, once)."""
    if d.world == 1:
        return
    digest = hashlib.sha256()
    for tensor in model.parameters():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    hashes = [None] * d.world
    dist.all_gather_object(hashes, digest.hexdigest())
    if len(set(hashes)) != 1:
        raise RuntimeError(f"DDP ranks diverged: parameter hashes {hashes}")
    if d.is_main:
        print(f"parameters identical on all {d.world} ranks (sha256 {hashes[0][:16]})", flush=True)

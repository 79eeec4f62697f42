"""Setting up a `pct train` run: option checks, the training views' definition, the teachers
(cache or online), the validation loader, and the cross-process checks of DDP."""
import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from .. import views
from ..errors import PctError
from .evaluate import make_loader, own_rows
from .losses import MODES
from .teachers import CachedTeachers, OnlineTeachers, check_codec, fidelity_warning


def make_val_loader(cfg, val_info, num_classes, d):
    """(eval-view loader over this process's validation rows or None, the rows)."""
    rows = own_rows(val_info.num_samples, num_classes, d)
    return make_loader(cfg.val, rows, cfg.batch_size, cfg.val_resolution or cfg.resolution,
                       cfg.workers, cfg.crop_ratio, d.device), rows


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
    if cfg.batch_size > train_info.num_samples:
        raise PctError(f"--batch-size {cfg.batch_size} exceeds the {train_info.num_samples} "
                       f"training samples")
    if cfg.predictions_of == "ema" and cfg.ema_decay is None:
        raise PctError("--predictions-of ema needs --ema-decay (no EMA is kept without it)")
    if val_info.num_classes > num_classes:
        raise PctError(f"validation data has {val_info.num_classes} classes, the model {num_classes}")
    check_same_classes(train_info, val_info)


def check_same_classes(train_info, val_info):
    """Refuse validation data whose label i names another class than the training data's
    label i (class folders missing from one of the two shift every later label). Data sets
    written without class names are not compared."""
    train, val = train_info.classes, val_info.classes
    if not train or not val:
        return
    for label, (a, b) in enumerate(zip(train, val)):
        if a != b:
            raise PctError(f"validation data {val_info.path} has class {b!r} at label {label}, "
                           f"the training data {train_info.path} has {a!r}: the labels would "
                           f"not mean the same classes")
    if len(val) > len(train):
        raise PctError(f"validation data {val_info.path} has classes the training data "
                       f"{train_info.path} lacks, e.g. {val[len(train)]!r}")


def resolve_views(cfg, cache):
    """`cfg` with the training views' definition filled in: resolution, view seed, crop scale
    and ratio, flip probability. With a teacher cache they are the cache's (an explicit option
    that contradicts it is refused, naming both values); without, the views module's defaults."""
    if cache is None:
        cfg = replace(cfg, resolution=cfg.resolution or 224,
                      view_seed=0 if cfg.view_seed is None else cfg.view_seed,
                      scale=tuple(cfg.scale or views.DEFAULT_SCALE),
                      ratio=tuple(cfg.ratio or views.DEFAULT_RATIO),
                      flip=views.DEFAULT_FLIP if cfg.flip is None else cfg.flip)
        views.check_augmentation(cfg.scale, cfg.ratio, cfg.flip)
        return cfg
    scale, ratio, flip = views.augmentation_attrs(cache.attrs)
    cached = {"resolution": cache.attrs["resolution"], "view_seed": cache.attrs["view_seed"],
              "scale": scale, "ratio": ratio, "flip": flip}
    for name, there in cached.items():
        here = getattr(cfg, name)
        if here is not None and (tuple(here) if isinstance(here, (list, tuple)) else here) != there:
            shown = " ".join(map(str, here)) if isinstance(here, (list, tuple)) else here
            raise PctError(f"--{name.replace('_', '-')} {shown} contradicts the teacher cache "
                           f"{cache.path}, made with {name} {there}: its views are fixed (drop "
                           f"the option, or precompute a cache with it)")
    return replace(cfg, **cached)


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

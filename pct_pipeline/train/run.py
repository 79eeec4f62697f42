"""`pct train` and `pct evaluate`: one training loop for one process or torchrun DDP.

Epoch e trains on view e mod V of a teacher cache (view e without one), joined by sample index
to the cached logits; the loss is `losses.pct_loss`. Every epoch appends a line to
RUN_DIR/metrics.jsonl and writes RUN_DIR/checkpoint.pt atomically; the final model's
validation logits go to RUN_DIR/predictions.zarr.
"""
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .. import __version__, distributed, models, store, views
from ..dataset import BetonInfo, ViewLoader
from ..errors import PctError, writing
from .losses import pct_loss
from .teachers import CachedTeachers, OnlineTeachers, bct_head, open_cache


def run(cfg):
    d = distributed.setup(cfg.device)
    try:
        return _run(cfg, d)
    finally:
        distributed.cleanup()


def _run(cfg, d):
    train_info, val_info = BetonInfo(cfg.data), BetonInfo(cfg.val)
    num_classes = cfg.num_classes or train_info.num_classes
    check_options(cfg, train_info, val_info, num_classes)
    cnaish = cfg.loss.mode == "cna"
    cache = open_cache(cfg.teacher_cache, train_info, num_classes, cnaish) if cfg.teacher_cache else None
    resolution = cfg.resolution or (cache.attrs["resolution"] if cache else 224)
    if cache and resolution != cache.attrs["resolution"]:
        raise PctError(f"--resolution {resolution} differs from the teacher cache's "
                       f"{cache.attrs['resolution']}: the cached views are at that size")
    on_gpu = d.device.type == "cuda"
    crops = dict(view_seed=cache.attrs["view_seed"], scale=tuple(cache.attrs["scale"]),
                 ratio=tuple(cache.attrs["ratio"])) if cache else dict(view_seed=cfg.view_seed)
    train_loader = ViewLoader(cfg.data, cfg.batch_size, resolution, cfg.workers, order="random",
                              seed=cfg.seed, distributed=d.world > 1, drop_last=True,
                              device=d.device, **crops)
    val_loader = make_val_loader(cfg, val_info, cfg.val_resolution or resolution, d)
    torch.manual_seed(cfg.seed)
    model = models.build_model(cfg.arch, num_classes, pretrained=cfg.pretrained,
                               **dict(cfg.model_kwargs)).to(d.device)
    if on_gpu and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = cfg.lr * cfg.batch_size * d.world / 256 if cfg.auto_scale else cfg.lr
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.wd)
    scheduler = make_scheduler(cfg, optimizer)
    out = Path(cfg.out)
    start_epoch = load_resume(cfg, model, optimizer, scheduler) if cfg.resume else 0
    if cfg.evaluate:
        return finish(cfg, model, val_loader, val_info, d, out, start_epoch, resolution)
    teachers = make_teachers(cfg, cache, train_loader, num_classes, d, cnaish)
    head = None
    if cfg.loss.bct_loss_weight > 0:
        head = bct_head(cfg.bct_old_model, cfg.bct_old_arch or bct_arch(cfg, cache),
                        models.feature_dim(model), d.device)
    net = DistributedDataParallel(model) if d.world > 1 else model
    if d.is_main:
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=str))
        if cfg.save_init_checkpoint and start_epoch == 0:
            save_checkpoint(out / "init.pt", cfg, model, optimizer, scheduler, 0, num_classes)
    for epoch in range(start_epoch, cfg.epochs):
        view = teachers.view_of(epoch) if teachers else epoch
        train_loader.set_epoch(epoch)
        train_loader.set_view(view)
        if teachers:
            teachers.begin_epoch(epoch, cfg.epochs)
        stats = train_one_epoch(cfg, net, model, train_loader, optimizer, teachers, head, epoch, d)
        scheduler.step()
        sync_buffers(model, d)
        logits, labels = evaluate(model, val_loader, val_info.num_samples, d, cfg.amp)
        stats.update(epoch=epoch + 1, view=view, **accuracy(logits, labels))
        if d.is_main:
            log_epoch(out, stats)
            save_checkpoint(out / "checkpoint.pt", cfg, model, optimizer, scheduler, epoch + 1,
                            num_classes)
            if cfg.epochs_per_save and (epoch + 1) % cfg.epochs_per_save == 0:
                save_checkpoint(out / f"checkpoint_epoch_{epoch + 1}.pt", cfg, model, optimizer,
                                scheduler, epoch + 1, num_classes)
    check_ranks_in_sync(model, d)
    return finish(cfg, model, val_loader, val_info, d, out, cfg.epochs, resolution)


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


def train_one_epoch(cfg, net, model, loader, optimizer, teachers, head, epoch, d):
    """One pass over the loader; returns mean losses and images/s of this process."""
    net.train()
    sums, seen, start = {}, 0, time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and d.device.type == "cuda")
    for step, (images, labels, indices) in enumerate(loader):
        if cfg.max_steps_per_epoch is not None and step >= cfg.max_steps_per_epoch:
            break
        old_logits, old_features = teachers.targets(step, images, indices) if teachers else (None, None)
        with autocast, models.FeatureTap(model) as tap:
            output = net(images)
        logits = models.main_logits(output)
        features, anchors = tap.features, None
        if cfg.loss.mode == "cna" and d.world > 1:  # negatives from the global batch
            anchors = slice(d.rank * len(labels), (d.rank + 1) * len(labels))
            features = distributed.all_gather_with_grad(features.float())
            old_features = distributed.all_gather_with_grad(old_features)
        loss, parts = pct_loss(cfg.loss, logits.float(), labels, old_logits, features,
                               old_features, head, anchors)
        # auxiliary heads' CE counts like CE: inside pct_loss's (1 - a) factor, as in the original
        a = cfg.loss.kd_alpha if cfg.loss.mode is not None else 0.0
        loss = loss + (1 - a) * models.aux_loss(output, labels)
        if not torch.isfinite(loss):
            raise PctError(f"training loss is {loss.item()} at epoch {epoch}, step {step}; "
                           f"lower --lr or check the data and teacher")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value * len(labels)
        seen += len(labels)
        if d.is_main and cfg.print_freq and step % cfg.print_freq == 0:
            print(f"epoch {epoch} step {step}/{len(loader)} loss {parts['loss'].item():.4f}", flush=True)
    elapsed = time.perf_counter() - start
    totals = distributed.all_sum([float(v) for v in sums.values()] + [seen], d.device)
    stats = {name: total / max(totals[-1], 1) for name, total in zip(sums, totals)}
    stats.update(images_per_s=totals[-1] / elapsed, train_time_s=elapsed, lr=optimizer.param_groups[0]["lr"])
    return stats


@torch.inference_mode()
def evaluate(model, loader, num_samples, d, amp=True):
    """Validation logits float32 [N, C] and labels [N] in sample order, on every process."""
    model.eval()
    parts, rows, labels_seen = [], [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and d.device.type == "cuda")
    for images, labels, indices in loader:
        with autocast:
            parts.append(models.main_logits(model(images)).float().cpu())
        rows.append(indices)
        labels_seen.append(labels.cpu())
    local = (torch.cat(parts).numpy(), torch.cat(rows).numpy(), torch.cat(labels_seen).numpy())
    gathered = [local]
    if d.world > 1:
        gathered = [None] * d.world
        dist.all_gather_object(gathered, local)
    logits = np.empty((num_samples, local[0].shape[1]), np.float32)
    labels = np.empty(num_samples, np.int64)
    for part, part_rows, part_labels in gathered:
        logits[part_rows], labels[part_rows] = part, part_labels
    return logits, labels


def accuracy(logits, labels):
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    return {"top1": float((top5[:, 0] == labels).mean()),
            "top5": float((top5 == labels[:, None]).any(axis=1).mean())}


def make_val_loader(cfg, val_info, resolution, d):
    rows = np.array_split(np.arange(val_info.num_samples), d.world)[d.rank]
    return ViewLoader(cfg.val, cfg.batch_size, resolution, cfg.workers, eval_view=True,
                      crop_ratio=cfg.crop_ratio, indices=rows, device=d.device)


def make_teachers(cfg, cache, loader, num_classes, d, with_features):
    if cache is not None:
        return CachedTeachers(cache, loader, with_features)
    if cfg.online_teachers:
        return OnlineTeachers(cfg.online_teachers, num_classes, d.device,
                              d.device.type == "cuda" and cfg.channels_last, with_features, cfg.amp)
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
    if cfg.loss.bct_loss_weight > 0 and not cfg.bct_old_model:
        raise PctError(f"--bct-loss-weight {cfg.loss.bct_loss_weight} needs --bct-old-model")
    if cfg.batch_size > train_info.num_samples:
        raise PctError(f"--batch-size {cfg.batch_size} exceeds the {train_info.num_samples} "
                       f"training samples")
    if val_info.num_classes > num_classes:
        raise PctError(f"validation data has {val_info.num_classes} classes, the model {num_classes}")


def make_scheduler(cfg, optimizer):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=0.1)


def save_checkpoint(path, cfg, model, optimizer, scheduler, epoch, num_classes):
    models.save_atomic({
        "model": model.state_dict(), "arch": cfg.arch, "num_classes": num_classes,
        "model_kwargs": dict(cfg.model_kwargs), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": torch.get_rng_state(),
        "config": asdict(cfg), "pct_version": __version__}, path)


def load_resume(cfg, model, optimizer, scheduler):
    """Restore a `pct train` checkpoint; returns the number of epochs it completed."""
    path = Path(cfg.resume)
    state = models.read_state_dict(path)
    models.load_weights(model, state, cfg.arch, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("arch", cfg.arch) != cfg.arch:
        raise PctError(f"--resume {path} is a {ckpt['arch']} checkpoint, --arch is {cfg.arch}")
    if "optimizer" in ckpt and not cfg.evaluate:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"])
    return int(ckpt.get("epoch", 0))


def log_epoch(out, stats):
    with writing(out / "metrics.jsonl"), open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(stats) + "\n")
    print(f"epoch {stats['epoch']}: loss {stats['loss']:.4f} ce {stats['ce']:.4f} "
          f"fd {stats['fd']:.4f} top1 {stats['top1']:.4f} top5 {stats['top5']:.4f} "
          f"{stats['images_per_s']:.0f} img/s", flush=True)


def finish(cfg, model, val_loader, val_info, d, out, epoch, resolution):
    """Evaluate the final model and write RUN_DIR/predictions.zarr; returns its accuracy."""
    logits, labels = evaluate(model, val_loader, val_info.num_samples, d, cfg.amp)
    result = accuracy(logits, labels)
    if d.is_main:
        with writing(out):
            out.mkdir(parents=True, exist_ok=True)
        write_predictions(out / "predictions.zarr", logits, val_info, asdict(cfg),
                          {"arch": cfg.arch, "epoch": epoch}, cfg.val_resolution or resolution,
                          cfg.crop_ratio)
        print(f"final: top1 {result['top1']:.4f} top5 {result['top5']:.4f} -> "
              f"{out / 'predictions.zarr'}", flush=True)
    distributed.barrier()
    return result


def write_predictions(path, logits, val_info, config, model_info, resolution, crop_ratio):
    """A §Store of kind `predictions` (one eval view) holding `logits` [N, C] of `val_info`."""
    attrs = {"split": "val", "eval_view": True, "view_seed": 0, "resolution": resolution,
             "crop_ratio": crop_ratio, "scale": None, "ratio": None,
             "dataset": {**val_info.fingerprint, "classes": val_info.classes},
             "model": model_info, "teachers": [], "pct_version": __version__, "config": config}
    layout = store.create_store(path, kind="predictions", labels=val_info.labels,
                                num_classes=logits.shape[1], views=1,
                                attributes=json.loads(json.dumps(attrs, default=str)))
    boxes = views.crop_boxes(0, 0, val_info.heights, val_info.widths, eval_view=True,
                             crop_ratio=crop_ratio)
    for shard in range(layout["num_shards"]):
        lo, hi = store.shard_bounds(layout, shard)
        store.write_unit(path, 0, shard, logits=logits[lo:hi].astype(np.float16), crops=boxes[lo:hi])


def evaluate_checkpoint(checkpoint, data, out, batch_size=256, workers=4, resolution=224,
                        crop_ratio=224 / 256, device=None, overwrite=False):
    """`pct evaluate`: the eval-view logits of any checkpoint as a predictions store."""
    d = distributed.setup(device)
    try:
        check_new_output(out, overwrite)
        ckpt = models.load_file(checkpoint)
        arch = ckpt.get("arch") if isinstance(ckpt, dict) else None
        if arch is None:
            raise PctError(f"{checkpoint} does not name its architecture (not written by pct train)")
        val_info = BetonInfo(data)
        model, classes = models.load_model(arch, checkpoint, **ckpt.get("model_kwargs", {}))
        if val_info.num_classes > classes:
            raise PctError(f"checkpoint {checkpoint} has {classes} classes, the data {data} has "
                           f"{val_info.num_classes}")
        model = model.to(d.device)
        rows = np.array_split(np.arange(val_info.num_samples), d.world)[d.rank]
        loader = ViewLoader(data, batch_size, resolution, workers, eval_view=True,
                            crop_ratio=crop_ratio, indices=rows, device=d.device)
        logits, labels = evaluate(model, loader, val_info.num_samples, d)
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        if bad.size:
            raise PctError(f"checkpoint {checkpoint} gives NaN/inf logits for sample {bad[0]} "
                           f"of {data}")
        if d.is_main:
            if overwrite and (Path(out).is_file() or Path(out).is_symlink()):
                Path(out).unlink()  # a store replaces a folder itself, not a file
            try:
                write_predictions(out, logits, val_info, {"checkpoint": str(checkpoint)},
                                  {"arch": arch, "checkpoint": str(checkpoint),
                                   "sha256": models.sha256_file(checkpoint)}, resolution,
                                  crop_ratio)
            except PctError:  # a full disk, say: leave no half-made store under --out
                shutil.rmtree(out, ignore_errors=True)
                raise
        return accuracy(logits, labels)
    finally:
        distributed.cleanup()


def check_new_output(out, overwrite):
    """Refuse to replace whatever is at `out` (a store of earlier results, someone's folder)
    unless asked to."""
    if (Path(out).exists() or Path(out).is_symlink()) and not overwrite:
        raise PctError(f"{out} exists (use --overwrite to replace it)")

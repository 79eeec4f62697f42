"""The optimisation recipe of `pct train`, as torchvision's classification reference has it:
SGD with momentum, weight decay (optionally another for normalisation layers and biases),
a learning-rate schedule that is a pure function of the step, mixed precision, and an EMA of
the weights.

The learning rate is computed for every optimizer step from the current options, never kept
in scheduler state, so a resumed run follows the schedule of the command that resumed it
(a longer --epochs, a new --lr-step) from the step it reached.
"""
import math

import torch
from torch import nn

from .. import models
from ..errors import PctError

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
               nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)


def lr_factor(cfg, epoch, step, steps_per_epoch):
    """Multiplier of the base learning rate at optimizer step `step` of epoch `epoch`.

    Warm-up (cfg.warmup_epochs > 0): linear per step, reaching 1 at the end of the warm-up,
    (k + 1) / (warmup_epochs * steps_per_epoch) at global step k. After it, per epoch:
    `step` decays by 0.1 every cfg.lr_step epochs; `cosine` follows
    0.5 * (1 + cos(pi * (epoch - warmup) / (epochs - warmup))).
    """
    k = epoch * steps_per_epoch + step
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if k < warmup_steps:
        return (k + 1) / warmup_steps
    if cfg.lr_schedule == "cosine":
        done = max(0.0, epoch - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * done / max(cfg.epochs - cfg.warmup_epochs, 1e-9)))
    return 0.1 ** (epoch // cfg.lr_step)


def base_lr(cfg, world):
    """The base learning rate: --lr, times global batch / 256 with --auto-scale (global batch =
    batch size x accumulation steps x processes)."""
    if not cfg.auto_scale:
        return cfg.lr
    return cfg.lr * cfg.batch_size * cfg.accum_steps * world / 256


def schedule_state(cfg, optimizer, epoch):
    """What a checkpoint records of the learning-rate schedule after `epoch` epochs. The
    schedule is a function of (epoch, step) (`lr_factor`), so resuming recomputes it; this
    records it for whoever reads the checkpoint."""
    return {"lr_schedule": cfg.lr_schedule, "lr_step": cfg.lr_step,
            "warmup_epochs": cfg.warmup_epochs, "epochs": cfg.epochs, "last_epoch": epoch,
            "base_lrs": [group["initial_lr"] for group in optimizer.param_groups],
            "last_lrs": [group["lr"] for group in optimizer.param_groups]}


def set_lr(optimizer, factor):
    """Every group's learning rate = its base rate (`initial_lr`) x `factor`."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def make_optimizer(cfg, model, lr):
    """SGD over one group, or two when cfg.norm_weight_decay is set: normalisation layers'
    parameters and every bias get that weight decay, the rest cfg.wd."""
    if cfg.norm_weight_decay is None:
        groups = [{"params": list(model.parameters())}]
    else:
        norm, other = [], []
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                exempt = isinstance(module, NORM_LAYERS) or name == "bias"
                (norm if exempt else other).append(param)
        groups = [{"params": other}, {"params": norm}]
    optimizer = torch.optim.SGD(groups, lr=lr)
    apply_options(optimizer, cfg, lr)
    return optimizer


def apply_options(optimizer, cfg, lr):
    """Base learning rate, momentum and weight decay of every group from the current options
    (after a resumed optimizer state brought the saved ones)."""
    decays = [cfg.wd] if cfg.norm_weight_decay is None else [cfg.wd, cfg.norm_weight_decay]
    for group, decay in zip(optimizer.param_groups, decays, strict=True):
        group.update(initial_lr=lr, lr=lr, momentum=cfg.momentum, weight_decay=decay)


class Precision:
    """Autocast and gradient scaling for one device: bf16 autocast (the default on CUDA),
    fp16 autocast with a GradScaler, or float32 (the default on the CPU; --amp-dtype there
    turns mixed precision on)."""

    def __init__(self, cfg, device):
        dtype = cfg.amp_dtype if cfg.amp_dtype else ("bf16" if device.type == "cuda" else None)
        self.dtype = dtype if cfg.amp else None
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.dtype)
        self.device_type = device.type
        self.torch_dtype = torch_dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == "fp16")

    def autocast(self):
        return models.autocast(self.device_type, self.torch_dtype)

    def backward(self, loss):
        self.scaler.scale(loss).backward()

    def step(self, optimizer):
        """Unscale, step (skipped by the scaler on inf/NaN gradients) and update the scale."""
        self.scaler.step(optimizer)
        self.scaler.update()


def make_ema(cfg, model):
    """An exponential moving average of the weights and buffers (torch's AveragedModel), or
    None: ema = decay * ema + (1 - decay) * weights after every optimizer step."""
    if cfg.ema_decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)


def convert_sync_bn(cfg, model, d):
    """BatchNorm layers synchronised across processes (--sync-bn): CUDA only in torch."""
    if not cfg.sync_bn or d.world == 1:
        return model
    if d.device.type != "cuda":
        raise PctError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on "
                       "the CPU); drop it")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)

"""The training state: what a checkpoint of `pct train` saves and restores.

A checkpoint holds tensors, dicts, lists and plain values only (models.load_file reads it as
data): the model, its EMA, the optimizer, the learning-rate schedule's settings and rates
(`scheduler`, for readers: the schedule is recomputed from the options), the scaler, the epoch,
CPU and CUDA RNG states, the config, the run's identity and the class names of its data.
"""
from dataclasses import asdict, dataclass

import torch

from .. import __version__, models
from ..errors import PctError
from . import recipe
from .run_folder import check_identity, plain


@dataclass
class TrainState:
    """The model, its SGD optimizer, the precision (autocast dtype and gradient scaler,
    recipe.Precision) and the EMA of its weights (None without --ema-decay)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    precision: recipe.Precision
    ema: torch.nn.Module | None = None

    def save(self, path, cfg, ident, epoch):
        """Write a checkpoint after `epoch` epochs, atomically (temporary file + rename)."""
        state = {"model": self.model.state_dict(), "arch": cfg.arch,
                 "num_classes": ident["num_classes"], "classes": ident["data"].get("classes"),
                 "model_kwargs": dict(cfg.model_kwargs),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": recipe.schedule_state(cfg, self.optimizer, epoch),
                 "scaler": self.precision.scaler.state_dict(), "epoch": epoch,
                 "rng": torch.get_rng_state(), "config": plain(asdict(cfg)), "identity": ident,
                 "pct_version": __version__}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["model_ema"] = self.ema.state_dict()
        models.save_atomic(state, path)

    def load(self, path, cfg, ident):
        """Restore a `pct train` checkpoint into this state; returns the epochs it completed.
        With cfg.evaluate only the weights (and EMA) are restored."""
        ckpt = models.load_file(path, cfg.trust_checkpoint)
        weights, _ = models.checkpoint_state(ckpt, path)
        if ckpt.get("arch", cfg.arch) != cfg.arch:
            raise PctError(f"--resume {path} is a {ckpt['arch']} checkpoint, --arch is {cfg.arch}")
        models.load_weights(self.model, weights, cfg.arch, path)
        if not cfg.evaluate:
            check_identity(path, ckpt.get("identity"), ident)
            self._load_optimizer(path, ckpt)
        if self.ema is not None and "model_ema" in ckpt:
            self.ema.load_state_dict(ckpt["model_ema"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"])
        if "cuda_rng" in ckpt and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        return int(ckpt.get("epoch", 0))

    def _load_optimizer(self, path, ckpt):
        if "optimizer" in ckpt:
            saved = len(ckpt["optimizer"].get("param_groups", []))
            if saved != len(self.optimizer.param_groups):
                raise PctError(f"--resume {path} has {saved} optimizer parameter group(s), this "
                               f"command {len(self.optimizer.param_groups)} (was "
                               f"--norm-weight-decay given to one and not the other?)")
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt:
            self.precision.scaler.load_state_dict(ckpt["scaler"])

"""Positive-congruent training losses (SPEC §Train, "Loss"):

    config.py     LossConfig, MODES, FILTERS: the settings, without torch;
    functions.py  the loss functions (pct_loss, kl_distill, ldi, cna, bct, ...), on torch.

`from pct_pipeline.losses import LossConfig` loads config.py only; a name of functions.py is
imported from it on first use (PEP 562 module __getattr__), so a command that only declares its
options (`pct train --help`) never loads torch.
"""
import importlib

from .config import FILTERS, MODES, LossConfig

FUNCTIONS = ("SampledTargets", "bct", "cna", "focal_weights", "kl_distill", "l2_distill", "ldi",
             "ldi_classes", "pct_loss")

__all__ = ["FILTERS", "MODES", "LossConfig", *FUNCTIONS]


def __getattr__(name):
    if name in FUNCTIONS:
        return getattr(importlib.import_module(".functions", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

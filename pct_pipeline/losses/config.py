"""The loss settings of `pct train` (LossConfig) and the names of its distances and filters:
plain values, no torch, so the command line can declare and check them without loading it."""
from dataclasses import dataclass

from ..errors import PctError

MODES = ("kl", "l2", "li", "cna")
FILTERS = ("all_pass", "old_correct", "neg_flip", "new_incorrect")


def choice(value, allowed, what):
    """PctError unless `value` is one of `allowed` (`what` names the setting)."""
    if value not in allowed:
        raise PctError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


@dataclass(frozen=True)
class LossConfig:
    """Loss settings; field names follow the `pct train` options.

    Defaults where SPEC is silent come from the original research code's README and flags:
    kd_alpha 0.9 and kd_loss_weight 1 (the README's focal-distillation and CNA commands),
    kd_temperature 5 (the code's default; the README's example uses 100), kd_filter all_pass
    with filter_base 0 and filter_scale 1 (the code's defaults), li_p 2 and li_margin 0.5
    (README), li_exclude_gt on, li_compute_topk None (all classes), cna_temperature 0.01
    (README), bct_loss_weight 0 (off), label_smoothing 0 (the CE term's, as torchvision's
    --label-smoothing; the distillation terms use the teacher as it is). mode None means no
    distillation: a = 0.
    """

    mode: str | None = None
    kd_alpha: float = 0.9
    kd_loss_weight: float = 1.0
    kd_temperature: float = 5.0
    kd_filter: str = "all_pass"
    filter_base: float = 0.0
    filter_scale: float = 1.0
    li_p: float = 2.0
    li_margin: float = 0.5
    li_exclude_gt: bool = True
    li_compute_topk: int | None = None
    cna_temperature: float = 0.01
    bct_loss_weight: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.mode is not None:
            choice(self.mode, MODES, "kd loss mode")
        choice(self.kd_filter, FILTERS, "kd filter")
        if not 0 <= self.kd_alpha <= 1:
            raise PctError(f"kd alpha must be in [0, 1], got {self.kd_alpha}")
        at_least_zero = {"kd loss weight": self.kd_loss_weight, "li margin": self.li_margin,
                         "bct loss weight": self.bct_loss_weight,
                         "filter base": self.filter_base, "filter scale": self.filter_scale}
        for name, value in at_least_zero.items():
            if not value >= 0:
                raise PctError(f"{name} must be >= 0, got {value}")
        for name, value in {"kd temperature": self.kd_temperature,
                            "cna temperature": self.cna_temperature}.items():
            if not value > 0:
                raise PctError(f"{name} must be positive, got {value}")
        if not self.li_p >= 1:
            raise PctError(f"li p must be at least 1, got {self.li_p}")
        if not 0 <= self.label_smoothing < 1:
            raise PctError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.li_compute_topk is not None and not self.li_compute_topk >= 1:
            raise PctError(f"li compute topk must be at least 1, got {self.li_compute_topk}")

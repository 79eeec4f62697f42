"""The analyze configuration: every knob once, with its default, checked when it is made."""
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import PctError
from . import gates as gate_grammar

# A 95% percentile interval reads the 2.5th and 97.5th percentiles of the resamples: with fewer
# than 100 fewer than 3 resamples lie beyond each end, and with 1 the "interval" is a single
# resample that need not contain the estimate. 1000 or more for numbers one reports.
MIN_BOOTSTRAP = 100
FIGURE_FORMATS = (".png", ".pdf", ".svg")  # what matplotlib writes and a reader opens
GALLERY_FLIPS = ("negative", "positive", "both")


@dataclass(frozen=True)
class AnalyzeConfig:
    """What `pct analyze` does.

    old, new: inputs (store paths or URLs, or .result files); new is a non-empty tuple.
    json_out: a file, "-" for stdout (the text report then goes to stderr), or None.
    plot_out, gallery: figure files whose extension (.png, .pdf, .svg) is their format.
    bootstrap: resamples of the 95% intervals, 0 (none) or at least MIN_BOOTSTRAP.
    gates: --gate expressions (gates.py); images: the .beton the gallery draws from.
    gallery_max: thumbnails per NEW model and kind of flip; gallery_flips: which flips.
    type1_max, type2_min: |change of the label probability| bounds of type-I / type-II flips.
    """

    old: str
    new: tuple
    json_out: str | None = None
    plot_out: str | None = None
    bootstrap: int = 1000
    seed: int = 0
    top_classes: int = 10
    overwrite: bool = False
    gates: tuple = ()
    allow_different_images: bool = False
    images: str | None = None
    gallery: str | None = None
    gallery_max: int = 32
    gallery_flips: str = "negative"
    type1_max: float = 0.1
    type2_min: float = 0.5

    def __post_init__(self):
        if not self.new:
            raise PctError("no NEW input: pct analyze OLD NEW [NEW ...]")
        if self.bootstrap != 0 and not self.bootstrap >= MIN_BOOTSTRAP:
            raise PctError(f"--bootstrap {self.bootstrap}: use 0 (no intervals) or at least "
                           f"{MIN_BOOTSTRAP} resamples for a 95% percentile interval")
        if self.top_classes < 0:
            raise PctError(f"--top-classes must be at least 0, got {self.top_classes}")
        for option, value in (("--type1-max", self.type1_max), ("--type2-min", self.type2_min)):
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise PctError(f"{option} must be a probability change in [0, 1], got {value}")
        for option, out in (("--plot", self.plot_out), ("--gallery", self.gallery)):
            suffix = Path(out).suffix if out is not None else FIGURE_FORMATS[0]
            if suffix.lower() not in FIGURE_FORMATS:
                what = f"unknown figure format {suffix!r}" if suffix else "no extension"
                raise PctError(f"{option} {out}: {what}; name a {', '.join(FIGURE_FORMATS)} "
                               f"file (its extension is its format)")
        self._check_gallery()
        for text in self.gates:
            if gate_grammar.parse(text).needs_bootstrap and self.bootstrap == 0:
                raise PctError(f"gate {text!r} needs bootstrap intervals: --bootstrap 0 "
                               f"computes none")

    def _check_gallery(self):
        if (self.gallery is None) != (self.images is None):
            raise PctError("--gallery and --images go together: --images VAL.beton is where "
                           "the gallery's pictures come from")
        if self.gallery_max < 1:
            raise PctError(f"--gallery-max must be at least 1, got {self.gallery_max}")
        if self.gallery_flips not in GALLERY_FLIPS:
            raise PctError(f"--gallery-flips {self.gallery_flips!r}: choose from "
                           f"{', '.join(GALLERY_FLIPS)}")

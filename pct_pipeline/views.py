"""§Views: deterministic augmentation shared by precompute and train.

A view ``v`` of sample ``i`` is a RandomResizedCrop box plus a horizontal flip given by
``boxes.params(view_seed, v, i, H, W, scale, ratio, flip)``, a pure function built on a
counter-based hash (splitmix64). The definition of the views a loader produces is one noun,
`ViewSpec`: output resolution, view seed, the crop's area range ``scale``, its aspect-ratio
range ``ratio`` and the flip probability ``flip`` (0 disables it), or the evaluation view (a
deterministic centre crop of ratio ``crop_ratio``, no flip). A teacher cache records its
ViewSpec as attributes; the loader's FFCV decoder (dataset/decoder.py) computes the same boxes
with these functions, so the pixels of (view_seed, v, i) are identical whatever the order,
batch size, worker count or process.

The box functions are compiled with numba in boxes.py, which only `ViewSpec.boxes` and the
decoder import: commands declare and check their view options without loading numba.
"""
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
SEED_RANGE = 2 ** 64  # the hash takes a view seed as a uint64


@dataclass(frozen=True)
class ViewSpec:
    """The views a loader produces: training views (RandomResizedCrop + flip, a pure function
    of (view_seed, view, index)) or, with `eval_view`, the centre crop of side
    crop_ratio * min(H, W) without flip. Every image is resized to resolution x resolution.
    Defaults are torchvision's RandomResizedCrop (0.08-1, 3/4-4/3), flip 0.5 and the
    224/256 centre crop of the ImageNet recipes."""

    resolution: int = 224
    view_seed: int = 0
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    flip: float = 0.5
    eval_view: bool = False
    crop_ratio: float = 224 / 256

    def __post_init__(self):
        from .errors import PctError

        for name, (lo, hi) in (("scale", self.scale), ("ratio", self.ratio)):
            if not 0 < lo <= hi < math.inf:
                raise PctError(f"--{name} must be 0 < LO <= HI, got {lo:g} {hi:g}")
        if self.scale[1] > 1:
            raise PctError(f"--scale HI is a fraction of the image area, at most 1, got "
                           f"{self.scale[1]:g}")
        if not 0 <= self.flip <= 1:
            raise PctError(f"--flip is a probability in [0, 1], got {self.flip:g}")
        if not 0 <= self.view_seed < SEED_RANGE:
            raise PctError(f"--view-seed must be in [0, 2**64), got {self.view_seed}")
        if not 0 < self.crop_ratio <= 1:
            raise PctError(f"--crop-ratio must be in (0, 1], got {self.crop_ratio:g}")
        if not self.resolution >= 1:
            raise PctError(f"--resolution must be at least 1 px, got {self.resolution}")

    @classmethod
    def centre(cls, resolution, crop_ratio=None):
        """The evaluation view at `resolution` (crop ratio: the default 224/256 if None)."""
        crop = cls.crop_ratio if crop_ratio is None else crop_ratio
        return cls(resolution=int(resolution), eval_view=True, crop_ratio=float(crop))

    def attrs(self):
        """The store attributes of this definition (JSON values)."""
        out = asdict(self)
        out["scale"], out["ratio"] = list(self.scale), list(self.ratio)
        return out

    @classmethod
    def from_attrs(cls, attrs):
        """The ViewSpec a store (or a checkpoint's config) records. Stores made before `flip`
        was an option flipped with probability 0.5; eval-view stores record no crop ranges."""
        eval_view = bool(attrs.get("eval_view", False))
        names = ("resolution", "crop_ratio") if eval_view else \
            ("resolution", "view_seed", "scale", "ratio", "flip", "crop_ratio")
        values = {name: attrs[name] for name in names if attrs.get(name) is not None}
        for name in ("scale", "ratio"):
            if name in values:
                values[name] = tuple(float(v) for v in values[name])
        return cls(eval_view=eval_view, **values)

    def with_options(self, given, source=None):
        """This definition with the options the user `given` ({name: value}, e.g. from the
        command line) applied. With `source` (what this definition comes from, e.g. "the
        teacher cache X"), an option that contradicts it is refused instead: those views are
        fixed."""
        from .errors import PctError

        wanted = replace(self, **given)
        if source is not None:
            for name, value in given.items():
                if getattr(wanted, name) != getattr(self, name):
                    shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
                    raise PctError(f"--{name.replace('_', '-')} {shown} contradicts {source}, "
                                   f"made with {name} {_shown(getattr(self, name))}: its views "
                                   f"are fixed (drop the option, or precompute a cache with it)")
        return wanted

    def boxes(self, view, heights, widths, indices=None):
        """int32 [n, 5] (top, left, height, width, flip) of `view` for samples `indices`
        (default all) of images heights x widths ([N] each)."""
        from .boxes import eval_params, params

        indices = np.arange(len(heights)) if indices is None else np.asarray(indices)
        out = np.empty((len(indices), 5), np.int32)
        for row, i in enumerate(indices):
            h, w = int(heights[i]), int(widths[i])
            if self.eval_view:
                out[row] = eval_params(h, w, self.crop_ratio)
            else:
                out[row] = params(self.view_seed, view, int(i), h, w, *self.scale, *self.ratio,
                                  self.flip)
        return out


def trained_eval_view(config):
    """The eval view a `pct train` run validated with, from its saved config dict, or None when
    it does not say (configs from before the view was one setting name it by
    `val_resolution`, `resolution` and `crop_ratio`)."""
    config = config if isinstance(config, dict) else {}
    saved = config.get("val_views")
    if isinstance(saved, dict) and _positive(saved.get("resolution")):
        return ViewSpec.from_attrs(saved)
    resolution = _positive(config.get("val_resolution")) or _positive(config.get("resolution"))
    if not resolution:
        return None
    return ViewSpec.centre(int(resolution), _positive(config.get("crop_ratio")))


def _positive(value):
    """`value` if it is a positive number, else None."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return value if number and value > 0 else None


def _shown(value):
    return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else value


def view_options(defaults=None):
    """click decorator declaring the view options --resolution, --view-seed, --scale, --ratio
    and --flip. `defaults`: a ViewSpec whose values are the options' defaults; None makes every
    default None (train: the teacher cache's views, else ViewSpec's), which `given_views`
    then leaves out."""
    import click

    from .options import Finite

    def default(name):
        return None if defaults is None else getattr(defaults, name)

    later = defaults is None
    spec = ViewSpec()
    hints = {name: f" [default: the teacher cache's, else {_shown(getattr(spec, name))}]"
             if later else "" for name in ("resolution", "view_seed", "scale", "ratio", "flip")}
    options = [
        click.option("--resolution", type=click.IntRange(min=8), default=default("resolution"),
                     show_default=not later, help="Side of the views in pixels." + hints["resolution"]),
        click.option("--view-seed", type=click.IntRange(0, SEED_RANGE - 1),
                     default=default("view_seed"), show_default=not later,
                     help="Seed of the views: with the view number and the sample index it "
                     "fixes every crop and flip (0 to 2**64 - 1)." + hints["view_seed"]),
        click.option("--scale", type=(Finite(), Finite()), default=default("scale"),
                     show_default=not later, metavar="LO HI", help="RandomResizedCrop area "
                     "range, as fractions of the image." + hints["scale"]),
        click.option("--ratio", type=(Finite(), Finite()), default=default("ratio"),
                     show_default=not later and "3/4, 4/3", metavar="LO HI",
                     help="RandomResizedCrop aspect-ratio (width / height) range." + hints["ratio"]),
        click.option("--flip", type=Finite(0, 1), default=default("flip"),
                     show_default=not later, help="Probability of a horizontal flip per sample "
                     "and view; 0 disables it (digits, text, fixed-orientation images)."
                     + hints["flip"]),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


VIEW_OPTIONS = ("resolution", "view_seed", "scale", "ratio", "flip")


def given_views(options):
    """Pop the view options from a command's keyword arguments: {name: value} of those given
    (not None), tuples for the ranges."""
    given = {name: options.pop(name) for name in VIEW_OPTIONS}
    return {name: tuple(v) if isinstance(v, (list, tuple)) else v
            for name, v in given.items() if v is not None}


def splitmix64_array(x):
    """One step of splitmix64 on uint64 values (a scalar or an array); wraps modulo 2**64."""
    z = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def decode_jpeg(jpeg_bytes):
    """uint8 [H, W, 3] RGB decoded by OpenCV (independent of the loader's libjpeg-turbo call)."""
    import cv2

    bgr = cv2.imdecode(np.asarray(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def reference_pixels(image, box, output_size):
    """numpy/OpenCV reference of the decoder after decoding: crop box, resize, flip.

    image: uint8 [H, W, 3] RGB; box: (top, left, h, w, flip); returns uint8 [H_out, W_out, 3].
    The loader resizes with OpenCV's INTER_AREA (ffcv's resize_crop), so the reference does too.
    """
    import cv2

    top, left, h, w, flip = (int(b) for b in box)
    crop = np.ascontiguousarray(image[top:top + h, left:left + w])
    out = cv2.resize(crop, (output_size[1], output_size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out[:, ::-1]) if flip else out

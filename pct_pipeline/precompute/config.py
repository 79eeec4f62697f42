"""The precompute configuration: every knob once, with its default."""
from dataclasses import asdict, dataclass

from ..errors import PctError

DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class PrecomputeConfig:
    """What `pct precompute-teachers` does; saved whole in the store's `config` attribute.

    teachers: ((arch, checkpoint path), ...); several are an ensemble (mean of logits).
    views: None means 1 with `eval_view`, and is required otherwise.
    split: None means "val" with `eval_view`, else "train".
    rows_per_chunk: None means chunks of about 1 MiB (set small to get several shards of a
    tiny data set).
    device: None means this process's CUDA device when there is one, else the CPU.
    """

    data: str
    teachers: tuple
    out: str
    views: int | None = None
    view_seed: int = 0
    resolution: int = 224
    batch_size: int = 256
    workers: int = 8
    dtype: str = "float16"
    store_features: bool = False
    keep_members: bool = False
    eval_view: bool = False
    crop_ratio: float = 224 / 256
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    split: str | None = None
    overwrite: bool = False
    chunks_per_shard: int = 16
    rows_per_chunk: int | None = None
    device: str | None = None

    def __post_init__(self):
        if not self.teachers:
            raise PctError("no teacher given: pass --teacher ARCH=CHECKPOINT at least once")
        if self.dtype not in DTYPES:
            raise PctError(f"unknown dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        if self.eval_view and self.views not in (None, 1):
            raise PctError(f"--eval-view makes one view, got --views {self.views}")
        if not self.eval_view and self.views is None:
            raise PctError("missing --views: how many augmentation views to precompute")
        if self.num_views < 1:
            raise PctError(f"--views must be at least 1, got {self.num_views}")
        for name, (lo, hi) in (("scale", self.scale), ("ratio", self.ratio)):
            if not 0 < lo <= hi:
                raise PctError(f"--{name} must be 0 < LO <= HI, got {lo} {hi}")
        if not 0 < self.crop_ratio <= 1:
            raise PctError(f"--crop-ratio must be in (0, 1], got {self.crop_ratio}")

    @property
    def num_views(self):
        return 1 if self.eval_view else int(self.views)

    @property
    def split_name(self):
        return self.split or ("val" if self.eval_view else "train")

    @property
    def kind(self):
        """Eval-view outputs are a prediction store, which `pct analyze` reads."""
        return "predictions" if self.eval_view else "teacher-cache"

    def as_dict(self):
        """JSON-friendly dict (tuples become lists) for the store's `config` attribute."""
        out = asdict(self)
        out["teachers"] = [list(t) for t in self.teachers]
        out["scale"], out["ratio"] = list(self.scale), list(self.ratio)
        return out

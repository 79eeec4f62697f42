"""The precompute configuration: every knob once, with its default."""
from dataclasses import asdict, dataclass

from ..errors import PctError
from ..views import (DEFAULT_CROP_RATIO, DEFAULT_FLIP, DEFAULT_RATIO, DEFAULT_SCALE,
                     check_augmentation)

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
    dtype: None means float32 with `eval_view` (predictions), else float16.
    trust_checkpoint: unpickle the teacher checkpoints fully, which runs any code they hold;
    otherwise they are read as data only (models.load_file).
    codec: how the mean logits are stored (codecs.parse: float16, int8, topk:K, sample:K@T);
    float16 is the plain `logits` array in `dtype`. Features and kept members stay float16.
    """

    data: str
    teachers: tuple
    out: str
    views: int | None = None
    view_seed: int = 0
    resolution: int = 224
    batch_size: int = 256
    workers: int | None = None
    dtype: str | None = None
    store_features: bool = False
    keep_members: bool = False
    eval_view: bool = False
    crop_ratio: float = DEFAULT_CROP_RATIO
    scale: tuple = DEFAULT_SCALE
    ratio: tuple = DEFAULT_RATIO
    flip: float = DEFAULT_FLIP
    split: str | None = None
    overwrite: bool = False
    chunks_per_shard: int = 16
    rows_per_chunk: int | None = None
    device: str | None = None
    trust_checkpoint: bool = False
    codec: str = "float16"

    def __post_init__(self):
        if not self.teachers:
            raise PctError("no teacher given: pass --teacher ARCH=CHECKPOINT at least once")
        if self.dtype is None:  # predictions keep exact float32 logits; caches float16 targets
            object.__setattr__(self, "dtype", "float32" if self.eval_view else "float16")
        if self.dtype not in DTYPES:
            raise PctError(f"unknown dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        if self.eval_view and self.views not in (None, 1):
            raise PctError(f"--eval-view makes one view, got --views {self.views}")
        if not self.eval_view and self.views is None:
            raise PctError("missing --views: how many augmentation views to precompute")
        if self.num_views < 1:
            raise PctError(f"--views must be at least 1, got {self.num_views}")
        check_augmentation(self.scale, self.ratio, self.flip)
        if not 0 < self.crop_ratio <= 1:
            raise PctError(f"--crop-ratio must be in (0, 1], got {self.crop_ratio}")
        self.check_codec()

    def check_codec(self):
        """A compact codec replaces the float16 logits of a training cache, nothing else."""
        from ..codecs import parse  # imports torch

        codec = parse(self.codec)
        object.__setattr__(self, "codec", codec.name)  # the canonical spelling
        if codec.name == "float16":
            return
        if self.eval_view:
            raise PctError(f"--codec {codec.name} is for training caches: --eval-view writes "
                           f"predictions, which keep exact float32 logits")
        if self.dtype != "float16":
            raise PctError(f"--codec {codec.name} replaces the logits array; --dtype "
                           f"{self.dtype} applies to plain logits only (use --codec float16)")

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

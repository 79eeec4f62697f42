"""The precompute configuration: every knob once, with its default."""
from dataclasses import asdict, dataclass, field

from ..errors import PctError
from ..store.codecs import Float16
from ..views import ViewSpec

DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class PrecomputeConfig:
    """What `pct precompute-teachers` does; saved whole in the store's `config` attribute.

    teachers: ((arch, checkpoint path), ...); several are an ensemble (mean of logits).
    views: the number of views V (an eval view makes 1); spec: their definition (ViewSpec,
    with `eval_view` for validation predictions).
    split: None means "val" for an eval view, else "train".
    dtype: None means float32 for an eval view (predictions), else float16.
    rows_per_chunk: None means chunks of about 1 MiB (set small to get several shards of a
    tiny data set).
    device: None means this process's CUDA device when there is one, else the CPU.
    trust_checkpoint: unpickle the teacher checkpoints fully, which runs any code they hold;
    otherwise they are read as data only (models.load_file).
    allow_unnamed_classes: accept teacher checkpoints that record no class names.
    codec: how the mean logits are stored (a store.codecs codec: float16, int8, topk:K,
    sample:K@T); float16 is the plain `logits` array in `dtype`. Features and kept members
    stay float16.
    """

    data: str
    teachers: tuple
    out: str
    views: int = 1
    spec: ViewSpec = field(default_factory=ViewSpec)
    batch_size: int = 256
    workers: int | None = None
    dtype: str | None = None
    store_features: bool = False
    keep_members: bool = False
    split: str | None = None
    overwrite: bool = False
    chunks_per_shard: int = 16
    rows_per_chunk: int | None = None
    device: str | None = None
    trust_checkpoint: bool = False
    allow_unnamed_classes: bool = False
    codec: object = field(default_factory=Float16)

    def __post_init__(self):
        if not self.teachers:
            raise PctError("no teacher given: pass --teacher ARCH=CHECKPOINT at least once")
        if self.dtype not in (None, *DTYPES):
            raise PctError(f"unknown dtype {self.dtype!r} (choose from {', '.join(DTYPES)})")
        if self.spec.eval_view and self.views != 1:
            raise PctError(f"--eval-view makes one view, got --views {self.views}")
        if self.views < 1:
            raise PctError(f"--views must be at least 1, got {self.views}")
        if self.codec.name == "float16":
            return
        if self.spec.eval_view:  # a compact codec replaces a training cache's logits only
            raise PctError(f"--codec {self.codec.name} is for training caches: --eval-view "
                           f"writes predictions, which keep exact float32 logits")
        if self.logits_dtype != "float16":
            raise PctError(f"--codec {self.codec.name} replaces the logits array; --dtype "
                           f"{self.dtype} applies to plain logits only (use --codec float16)")

    @property
    def logits_dtype(self):
        """Predictions keep exact float32 logits; caches float16 targets (unless told)."""
        return self.dtype or ("float32" if self.spec.eval_view else "float16")

    @property
    def split_name(self):
        return self.split or ("val" if self.spec.eval_view else "train")

    @property
    def kind(self):
        """Eval-view outputs are a prediction store, which `pct analyze` reads."""
        return "predictions" if self.spec.eval_view else "teacher-cache"

    def as_dict(self):
        """JSON-friendly dict for the store's `config` attribute."""
        out = asdict(self)
        out["teachers"] = [list(t) for t in self.teachers]
        out["spec"], out["codec"] = self.spec.attrs(), self.codec.name
        return out

"""What `pct evaluate` does: every knob once, with its default."""
from dataclasses import dataclass

from ..views import ViewSpec, trained_eval_view

FALLBACK_RESOLUTION = 224        # for a checkpoint without a `pct train` config


@dataclass(frozen=True)
class EvaluateConfig:
    """Saved whole, with its eval view resolved, in the store's `config` attribute.

    arch: None means the architecture the checkpoint names (needed for a bare state dict).
    resolution, crop_ratio: None means the checkpoint's own (see `eval_view`).
    workers: None means this process's share of the cores (distributed.workers_for).
    device: None means this process's GPU if any, else the CPU.
    rows_per_chunk: None means chunks of about 1 MiB.
    trust_checkpoint: unpickle the checkpoint fully, which runs any code it holds; otherwise it
    is read as data only (models.load_file).
    allow_unnamed_classes: accept a checkpoint that records no class names.
    """

    checkpoint: str
    data: str
    out: str
    arch: str | None = None
    resolution: int | None = None
    crop_ratio: float | None = None
    batch_size: int = 256
    workers: int | None = None
    device: str | None = None
    overwrite: bool = False
    trust_checkpoint: bool = False
    allow_unnamed_classes: bool = False
    rows_per_chunk: int | None = None

    def eval_view(self, trained):
        """The ViewSpec evaluated: the resolution and crop ratio given, else those the model was
        validated with in training (`trained`: the `config` dict of a `pct train` checkpoint,
        see `trained_eval_view`), else 224 px and 224/256."""
        spec = trained_eval_view(trained) or ViewSpec.centre(FALLBACK_RESOLUTION)
        return ViewSpec.centre(self.resolution or spec.resolution,
                               self.crop_ratio or spec.crop_ratio)

"""Training configuration: every knob of `pct train` with its default, frozen.

The loss knobs live in `losses.LossConfig`; this file holds the rest. The resolved config is
saved in every checkpoint, in RUN_DIR/config.json and in the predictions store.
"""
from dataclasses import dataclass, field

from .losses import LossConfig


@dataclass(frozen=True)
class TrainConfig:
    data: str
    val: str
    out: str
    arch: str = "resnet18"
    num_classes: int | None = None          # None: the training data's class count
    model_kwargs: tuple = ()                # ((key, value), ...) passed to the constructor
    pretrained: bool = False                # torchvision's published weights (hub cache only)
    teacher_cache: str | None = None
    online_teachers: tuple = ()             # ((arch, checkpoint), ...): an ensemble if several
    bct_old_model: str | None = None        # checkpoint whose classifier is the BCT head
    bct_old_arch: str | None = None         # its architecture (default: the teacher's, else --arch)
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = 90
    batch_size: int = 256                   # per process
    lr: float = 0.1
    lr_schedule: str = "step"               # step | cosine
    lr_step: int = 30
    momentum: float = 0.9
    wd: float = 1e-4
    auto_scale: bool = False                # lr = lr * global_batch / 256
    resolution: int | None = None           # None: the cache's resolution, else 224
    val_resolution: int | None = None       # None: same as resolution
    crop_ratio: float = 224 / 256
    view_seed: int = 0                      # without a cache; a cache brings its own
    workers: int = 4
    seed: int = 0
    save_init_checkpoint: bool = False
    epochs_per_save: int = 0                # also keep checkpoint_epoch_K.pt every K epochs
    resume: str | None = None
    evaluate: bool = False
    amp: bool = True                        # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True              # on CUDA
    print_freq: int = 50
    device: str | None = None               # None: cuda:LOCAL_RANK if available, else cpu
    max_steps_per_epoch: int | None = None  # cut epochs short (benchmarks, smoke tests)

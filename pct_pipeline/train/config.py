"""Training configuration: every knob of `pct train` with its default, frozen.

The loss knobs live in `losses.LossConfig`; the views' definition in `views.ViewSpec`; this file
holds the rest. The resolved config is saved in every checkpoint, in RUN_DIR/config.json and in
the predictions store.
"""
from dataclasses import dataclass, field

from ..losses import LossConfig
from ..views import ViewSpec


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
    trust_checkpoint: bool = False          # unpickle --resume/--online-teacher/--bct-old-model
                                            # files fully (runs their code), not as data only
    allow_unnamed_classes: bool = False     # accept old models whose checkpoints name no classes
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = 90
    batch_size: int = 256                   # per process and loader batch
    accum_steps: int = 1                    # loader batches per optimizer step
    lr: float = 0.1
    lr_schedule: str = "step"               # step | cosine
    lr_step: int = 30
    warmup_epochs: float = 0.0              # linear warm-up, per step
    momentum: float = 0.9
    wd: float = 1e-4
    norm_weight_decay: float | None = None  # for norm layers and biases; None: wd
    auto_scale: bool = False                # lr = lr * global_batch / 256
    sync_bn: bool = False                   # SyncBatchNorm under DDP (CUDA)
    ema_decay: float | None = None          # EMA of the weights after every optimizer step
    predictions_of: str = "model"           # model | ema: what predictions.zarr holds
    view_options: tuple = ()                # ((name, value), ...): the view options given
    views: ViewSpec | None = None           # the training views: the cache's, or ViewSpec's
                                            # defaults, with view_options (resolved at start)
    val_resolution: int | None = None       # None: the training views' resolution
    crop_ratio: float = ViewSpec.crop_ratio # validation centre crop
    val_views: ViewSpec | None = None       # the validation view (resolved at start)
    workers: int | None = None              # loader threads; None: this process's share of the cores
    seed: int = 0
    save_init_checkpoint: bool = False
    epochs_per_save: int = 0                # also keep checkpoint_epoch_K.pt every K epochs
    resume: str = "auto"                    # auto: OUT/checkpoint.pt if there; or a path
    overwrite: bool = False                 # start afresh in a folder holding a run
    evaluate: bool = False
    amp: bool = True                        # mixed precision (on CUDA unless amp_dtype is set)
    amp_dtype: str | None = None            # bf16 | fp16 (GradScaler); None: bf16 on CUDA only
    channels_last: bool = True              # on CUDA
    print_freq: int = 50
    tensorboard: bool = True               # event files in the run folder (process 0)
    old_predictions: str | None = None      # old model's predictions store of the validation
                                            # data: negative flips at every validation
    device: str | None = None               # None: cuda:LOCAL_RANK if available, else cpu
    max_steps_per_epoch: int | None = None  # cut epochs short (benchmarks, smoke tests)

"""timm's architectures as `timm:NAME`, with the optional extra: pip install 'pct_pipeline[timm]'.

Only this module imports timm, and only once a `timm:` name is used: `import
pct_pipeline.models` and every other name work without it; without it a `timm:` name ends in
one line saying how to install it.

Construction: `timm.create_model(NAME, num_classes=C, **kwargs)`, kwargs from --model-kwargs
(e.g. img_size=32 for a ViT, drop_path_rate=0.1), initialised as timm initialises it. Names
are timm's architecture names without a pretrained tag (`timm:convnext_atto`, not
`timm:convnext_atto.d2_in1k`): a tag names published weights, not an architecture.

Weights: nothing is downloaded. The model kwarg `pretrained_file=PATH` starts from a local
weights file in any layout checkpoints.read_state_dict reads (a timm train.py checkpoint, a
state dict, a .safetensors file such as the model.safetensors timm publishes), read as data
and loaded strictly through timm's own adaptation of published weights (a ViT's position
embedding resampled to its img_size, say). A file with another class count than C gives
the trunk, and a new classifier (timm's reset_classifier). `--pretrained` (torchvision's hub
cache) is refused for timm names, pointing to pretrained_file.

Classifier: the layer timm's pretrained config names (`fc`, `head.fc`, `classifier`, `head`;
the first of a distilled model's two heads), kept as the model's `classifier_layer`, which
architectures.classifier_name reads: features for CNA and BCT are that layer's input, e.g. a
ConvNeXt's pooled and normalised [B, D], a ViT's class token after its final norm.

Input size: a model with a fixed patch grid (timm's PatchEmbed with strict_img_size: ViT, DeiT,
Swin, MLP-Mixer) takes exactly its img_size (square); any other needs at least its total
stride (the last reduction of its feature_info, e.g. 32 px), which leaves its last feature map
at least 1x1 (some networks run on less thanks to padding, ConvNeXt's unpadded 2x2
downsampling does not: the stride is the bound that holds for every one).
"""
import functools

from ..errors import PctError

PREFIX = "timm:"
INSTALL = "pip install 'pct_pipeline[timm]'"


def is_timm(arch):
    return isinstance(arch, str) and arch.startswith(PREFIX)


def _timm(what):
    try:
        import timm
    except ImportError:
        raise PctError(f"{what} needs the timm package, which is not installed: "
                       f"{INSTALL}") from None
    return timm


@functools.cache
def timm_names():
    """Every architecture timm builds, as `timm:NAME`, sorted."""
    return tuple(PREFIX + name for name in _timm("pct models --timm").list_models())


def build(arch, num_classes, pretrained, kwargs):
    """`timm:NAME` with `num_classes` outputs (see the module docstring); PctError for an
    unknown name, bad options, `pretrained` without a weights file, or a file that does not
    fit."""
    from torch import nn  # here, not above: `pct models` checks names with is_timm, torch-free

    timm = _timm(arch)
    name = arch.removeprefix(PREFIX)
    if "." in name:
        raise PctError(f"{arch}: give timm's architecture name without its pretrained tag "
                       f"({PREFIX}{name.split('.')[0]})")
    if not timm.is_model(name):
        raise PctError(f"unknown architecture {arch!r} (see `pct models --timm` for timm's)")
    kwargs = dict(kwargs)
    path = kwargs.pop("pretrained_file", None)
    if pretrained and path is None:
        raise PctError(f"--pretrained reads torchvision's hub cache; {arch} starts from a local "
                       f"weights file instead: drop --pretrained and pass --model-kwargs "
                       f"pretrained_file=PATH (nothing is downloaded)")
    head = _classifier_names(timm, name)
    if path is None:
        model = _create(timm, arch, name, kwargs, num_classes=num_classes)
    else:
        model = _from_file(timm, arch, name, head, num_classes, path, kwargs)
    layer = model.get_submodule(head[0]) if head else None
    if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d)
                                        and layer.kernel_size == (1, 1)):
        model.classifier_layer = head[0]
    return model


def _classifier_names(timm, name):
    """The classifier layer(s) timm's pretrained config of `name` names, as a tuple."""
    cfg = timm.models.get_pretrained_cfg(name)
    names = cfg.classifier if cfg is not None else None
    return (names,) if isinstance(names, str) else tuple(names or ())


def _create(timm, arch, name, kwargs, **fixed):
    """timm.create_model(name, **fixed, **kwargs); kwargs are the user's options."""
    try:
        return timm.create_model(name, **fixed, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise PctError(f"bad model options for {arch} {kwargs}: {exc}") from None


def _from_file(timm, arch, name, head, num_classes, path, kwargs):
    """`name` with the weights of the file `path`, loaded strictly by timm at the file's own
    class count, then given a new classifier of `num_classes` if that differs."""
    from .checkpoints import read_state_dict

    state = read_state_dict(path)
    weight = state.get(f"{head[0]}.weight") if head else None
    classes = int(weight.shape[0]) if weight is not None else 0  # 0: the file has no head
    overlay = {"state_dict": state, "num_classes": classes}
    try:
        model = _create(timm, arch, name, kwargs, num_classes=classes, pretrained=True,
                        pretrained_cfg_overlay=overlay)
    except RuntimeError as exc:  # torch's load_state_dict: missing, unexpected, mis-shaped
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines or [""])[0]
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise PctError(f"weights file {path} does not fit {arch}: {detail}") from None
    model.pretrained_cfg.pop("state_dict", None)  # timm keeps its config: not the weights
    if classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def input_requirement(model):
    """(smallest input side in px, exact side or None) of a timm model (module docstring)."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is not None and getattr(embed, "strict_img_size", False):
        height, width = size
        if height != width:
            raise PctError(f"timm model built for {height}x{width} px inputs; images here are "
                           f"square: pass --model-kwargs img_size=N")
        return height, height
    info = getattr(model, "feature_info", None) or []
    return max([int(f.get("reduction", 1)) for f in info if isinstance(f, dict)] + [1]), None

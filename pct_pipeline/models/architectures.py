"""What an architecture is and how it is built: names, construction, input sizes and the
classifier layer.

Names: every torchvision classification model, the original research code's ResNet variants
(`resnet_variants`: `resnet*_StoDepth_lineardecay`, `aux_resnet*`, `mb_resnet*`), small CNNs
for tests and the demo (`cnn_small`, `cnn_wide`), and, with the optional timm package, every
timm architecture as `timm:NAME` (timm_models.py). `pct models` lists them. GoogLeNet and
Inception v3 are built with their auxiliary heads unless `aux_logits=False` is passed
(outputs.py: what a forward pass returns).

Features are the input of the final classifier layer (the one producing the main logits,
never an auxiliary head's), captured with a forward hook: [B, D] for a linear classifier
(after any dropout in front of it, i.e. post-dropout in training, identical in eval);
SqueezeNet's classifier is a 1x1 convolution, whose input [B, 512, h, w] is averaged over
space to [B, 512]. `feature_dim` gives D from the layer's shape, before any forward.

Input sizes: each model checks its input (a forward pre-hook) and names the size it needs:
torchvision's documented minimum (`weights.meta["min_size"]`, e.g. 63 px for AlexNet, 75 px
for Inception v3; for Swin and EfficientNetV2, which document their training size, the
measured minimum), 299 px for Inception v3 in training with its auxiliary head, exactly
`image_size` (default 224) for ViTs and `input_size` (224) for MaxViT; timm's rules are in
timm_models.py.

`pretrained=True` loads torchvision's published weights (the architecture's DEFAULT weights;
for a variant, those of its ResNet into the backbone) from the torch hub cache only, never
downloading; with a class count other than the weights' 1000, the final classifier (and the
auxiliary heads' last layers) are replaced by freshly initialised ones. timm models start
from a local file instead (timm_models.py).

Its length is torchvision's variety (auxiliary heads, 1x1-conv classifiers, input-size rules),
all of which the construction and the classifier lookup must know together.
"""
import functools
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from ..errors import PctError
from . import timm_models
from .resnet_variants import BASE_ARCH, VARIANTS


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages (channels doubling, 2x2 max-pool between) + global pool + linear."""

    def __init__(self, num_classes=1000, width=16, depth=3, dropout=0.0):
        super().__init__()
        for name, value in (("width", width), ("depth", depth)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        layers, c_in = [], 3
        for stage in range(depth):
            c_out = width * 2 ** stage
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            if stage < depth - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(self.dropout(self.features(x)))


LOCAL_MODELS = {
    "cnn_small": lambda num_classes, **kw: SmallCNN(num_classes, width=kw.pop("width", 8), **kw),
    "cnn_wide": lambda num_classes, **kw: SmallCNN(num_classes, width=kw.pop("width", 32), **kw),
}
# GoogLeNet / Inception v3: auxiliary heads (trained with these CE weights, as in their papers
# and torchvision's reference recipe) and the last layer of each, replaced for --num-classes.
AUX_DEFAULTS = {"aux_logits": True, "init_weights": True}
AUX_HEADS = {"googlenet": ("aux1.fc2", "aux2.fc2"), "inception_v3": ("AuxLogits.fc",)}
CLASSIFIER_ATTRS = ("fc", "classifier", "head", "heads")  # where torchvision keeps the classifier
# torchvision documents the size its weights were trained at for these; measured here, they
# run (forward, batch 1) on inputs down to:
MEASURED_MIN_INPUT = {"swin": 4, "swin_v2": 4, "efficientnet_v2": 1}
INCEPTION_AUX_MIN = 299  # its aux head pools a 17x17 map: smaller inputs fail in training


@functools.cache
def torchvision_models():
    return tuple(torchvision.models.list_models(module=torchvision.models))


def available_models():
    return sorted(LOCAL_MODELS) + sorted([*torchvision_models(), *VARIANTS])


def build_model(arch, num_classes, pretrained=False, **kwargs):
    """Model `arch` with `num_classes` outputs: freshly initialised (torch's default init), or
    with torchvision's published weights when `pretrained` (see the module docstring).
    Unknown names and bad constructor options raise PctError."""
    if arch in LOCAL_MODELS:
        if pretrained:
            raise PctError(f"{arch} has no published weights: drop --pretrained")
        model = _construct(arch, LOCAL_MODELS[arch], num_classes=num_classes, **kwargs)
    elif arch in VARIANTS:
        model = _construct(arch, VARIANTS[arch], num_classes=num_classes, **kwargs)
        if pretrained:
            load_backbone(model, arch, BASE_ARCH[arch])
    elif arch in torchvision_models():
        model = _build_torchvision(arch, num_classes, pretrained, kwargs)
    elif timm_models.is_timm(arch):
        model = timm_models.build(arch, num_classes, pretrained, kwargs)
    else:
        raise PctError(f"unknown architecture {arch!r} (see `pct models` for the list)")
    lo, exact = input_requirement(arch, model, kwargs)
    model.register_forward_pre_hook(functools.partial(_check_input, arch, lo, exact))
    return model


def _construct(arch, constructor, *args, **kwargs):
    try:
        return constructor(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise PctError(f"bad model options for {arch} {kwargs}: {exc}") from None


def _build_torchvision(arch, num_classes, pretrained, kwargs):
    kwargs = {**(AUX_DEFAULTS if arch in AUX_HEADS else {}), **kwargs}
    if arch == "maxvit_t" and isinstance(kwargs.get("input_size"), int):
        kwargs["input_size"] = (kwargs["input_size"],) * 2  # --model-kwargs input_size=N
    if not pretrained:
        return _construct(arch, torchvision.models.get_model, arch, weights=None,
                          num_classes=num_classes, **kwargs)
    weights = hub_weights(arch)
    kwargs.pop("init_weights", None)
    model = _construct(arch, torchvision.models.get_model, arch, weights=weights, **kwargs)
    if num_classes != len(weights.meta["categories"]):
        for name in (classifier_name(model), *AUX_HEADS.get(arch, ())):
            if _submodule_or_none(model, name) is not None:
                model.set_submodule(name, _fresh_layer(model.get_submodule(name), num_classes))
    return model


def hub_weights(arch):
    """torchvision's DEFAULT weights enum of `arch`, after checking its file is in the torch hub
    cache (TORCH_HOME/hub/checkpoints): nothing is ever downloaded."""
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError):
        raise PctError(f"torchvision publishes no weights for {arch}: drop --pretrained") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not path.is_file():
        raise PctError(f"--pretrained {arch} needs torchvision's weights file {path}; it is not "
                       f"there and nothing is downloaded (copy {weights.url} to that path)")
    return weights


def load_backbone(model, arch, base):
    """Load `base`'s published weights into a variant: every tensor whose name and shape match
    (the whole ResNet trunk; `fc` too when the class counts agree); heads stay as initialised."""
    state = hub_weights(base).get_state_dict(progress=False)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    left = [k for k in own if k not in fits and not k.startswith(("fc.", "aux1.", "aux2.", "heads."))]
    if left:
        raise PctError(f"torchvision's {base} weights do not fit {arch}: no '{left[0]}'")
    model.load_state_dict(fits, strict=False)


def _fresh_layer(layer, num_classes):
    """A new final layer like `layer` (nn.Linear or 1x1 nn.Conv2d) with `num_classes` outputs."""
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None)
    conv = nn.Conv2d(layer.in_channels, num_classes, 1)
    nn.init.normal_(conv.weight, 0.0, 0.01)  # as torchvision initialises SqueezeNet's final conv
    nn.init.zeros_(conv.bias)
    return conv


def _submodule_or_none(model, name):
    try:
        return model.get_submodule(name)
    except AttributeError:  # e.g. aux1 is None when built with aux_logits=False
        return None


def input_requirement(arch, model, kwargs=None):
    """(smallest input side in px, exact side or None) that `model` accepts in eval mode."""
    if timm_models.is_timm(arch):
        return timm_models.input_requirement(model)
    if isinstance(model, torchvision.models.VisionTransformer):
        return model.image_size, model.image_size
    if arch == "maxvit_t":
        side = (kwargs or {}).get("input_size", 224)
        side = side if isinstance(side, int) else side[0]
        return side, side
    if arch.startswith(tuple(MEASURED_MIN_INPUT)):
        return MEASURED_MIN_INPUT[arch.rsplit("_", 1)[0]], None
    if arch in torchvision_models():
        return torchvision.models.get_model_weights(arch).DEFAULT.meta["min_size"][0], None
    if arch in LOCAL_MODELS:
        return 2 ** sum(isinstance(m, nn.MaxPool2d) for m in model.features), None
    return 1, None


def _check_input(arch, lo, exact, module, inputs):
    side = min(inputs[0].shape[-2:])
    if exact is not None and tuple(inputs[0].shape[-2:]) != (exact, exact):
        key = ("input_size" if arch == "maxvit_t" else "img_size" if timm_models.is_timm(arch)
               else "image_size")
        raise PctError(f"{arch} was built for {exact}x{exact} px inputs, got "
                       f"{'x'.join(map(str, inputs[0].shape[-2:]))}: use --resolution {exact} "
                       f"or build it with --model-kwargs {key}=N")
    if module.training and arch == "inception_v3" and module.aux_logits and side < INCEPTION_AUX_MIN:
        raise PctError(f"inception_v3 with its auxiliary head needs inputs of at least "
                       f"{INCEPTION_AUX_MIN} px in training, got {side}: raise --resolution or "
                       f"pass --model-kwargs aux_logits=false")
    if side < lo:
        raise PctError(f"{arch} needs inputs of at least {lo} px, got {side}: raise --resolution")


def classifier_name(model):
    """Qualified name of the final classifier layer, the one producing the main logits: the
    model's own `classifier_layer` if it names one (the ResNet variants, timm models), else
    the last nn.Linear or 1x1 nn.Conv2d under the first of `fc`, `classifier`, `head`, `heads`
    the model has (every torchvision classifier), else the last nn.Linear outside auxiliary
    heads."""
    explicit = getattr(model, "classifier_layer", None)
    if explicit:
        return explicit
    for attr in CLASSIFIER_ATTRS:
        module = getattr(model, attr, None)
        if isinstance(module, nn.Module):
            last = _last_layer(module.named_modules(prefix=attr))
            if last is not None:
                return last
    last = _last_layer((n, m) for n, m in model.named_modules() if "aux" not in n.lower())
    if last is None:
        raise PctError(f"cannot find the final classifier layer of {type(model).__name__}")
    return last


def _last_layer(named_modules):
    last = None
    for name, module in named_modules:
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d)
                                             and module.kernel_size == (1, 1)):
            last = name
    return last


class _ParametersOnMeta(torch.overrides.TorchFunctionMode):
    """Allocates `torch.empty` (how layers create their parameters) on the meta device: no
    memory, and initialisation becomes a no-op. Other tensors stay on the CPU, because some
    constructors compute with them (RegNet derives its widths with torch ops)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def shape_only_model(arch, num_classes=1000, **kwargs):
    """`arch` built for its shapes only (parameter counts, layer names, feature width): its
    parameters live on the meta device, so it cannot run a forward pass."""
    with _ParametersOnMeta():
        return build_model(arch, num_classes, **kwargs)


@functools.cache
def classifier_key(arch):
    """classifier_name of `arch`, without initialising a model."""
    return classifier_name(shape_only_model(arch, 10))


def feature_dim(model):
    """Width D of the features FeatureTap captures (the classifier's input channels)."""
    layer = model.get_submodule(classifier_name(model))
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def shared_feature_dim(members, who, consequence):
    """Width D of the features of every model in `members`; PctError naming `who`, every
    width and `consequence` when they differ (their features cannot be averaged)."""
    dims = [feature_dim(model) for model in members]
    if len(set(dims)) > 1:
        raise PctError(f"{who} have different feature sizes {dims}: {consequence}")
    return dims[0]


def classifier_weights(arch, state):
    """The final classifier of `arch` in a state dict as a linear map of the features:
    (weight float32 [C, D], bias float32 [C]). A 1x1-conv classifier (SqueezeNet) gives its
    kernel (its logits add a ReLU before pooling); mb_resnet gives the mean of its heads."""
    name = classifier_key(arch)
    names = [name]
    if name.startswith("heads."):
        names = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith("heads.")})
    if any(f"{n}.weight" not in state for n in names):
        raise PctError(f"checkpoint does not fit {arch}: it has no '{names[0]}.weight'")
    weight = torch.stack([state[f"{n}.weight"].float() for n in names]).mean(0)
    bias = [state.get(f"{n}.bias") for n in names]
    bias = (torch.zeros(weight.shape[0]) if bias[0] is None
            else torch.stack([b.float() for b in bias]).mean(0))
    return weight.reshape(weight.shape[0], -1), bias

"""Architectures by name, penultimate features, and checkpoints.

Any torchvision classification model name works, plus small CNNs for tests and the demo
(`cnn_small`, `cnn_wide`). Features are the input of the final classifier layer, captured
with a forward hook, so every architecture gives (logits [B, C], features [B, D]).
Checkpoints are written atomically (temporary file + rename).
"""
import hashlib
import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import PctError


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages (channels doubling, 2x2 max-pool between) + global pool + linear."""

    def __init__(self, num_classes=1000, width=16, depth=3, dropout=0.0):
        super().__init__()
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


def available_models():
    return sorted(LOCAL_MODELS) + sorted(torchvision.models.list_models(module=torchvision.models))


def build_model(arch, num_classes, **kwargs):
    """A freshly initialised model `arch` with `num_classes` outputs (torch's default init)."""
    if arch in LOCAL_MODELS:
        return LOCAL_MODELS[arch](num_classes, **kwargs)
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise PctError(f"unknown architecture {arch!r} (see `pct models` for the list)")
    extra = {"aux_logits": False, "init_weights": True} if arch in ("googlenet", "inception_v3") else {}
    try:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
                                            **{**extra, **kwargs})
    except TypeError as exc:
        raise PctError(f"bad model options for {arch}: {exc}") from None


def classifier_name(model):
    """Qualified name of the final classifier layer: the last nn.Linear (or 1x1 conv head)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise PctError(f"cannot find the final classifier layer of {type(model).__name__}")
    return last


def feature_dim(model):
    return model.get_submodule(classifier_name(model)).in_features


class FeatureTap:
    """Context manager: while active, `self.features` holds the classifier's input [B, D]."""

    def __init__(self, model):
        self.module = model.get_submodule(classifier_name(model))
        self.features = None

    def _hook(self, module, inputs):
        self.features = inputs[0].flatten(1)

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def main_logits(output):
    """Plain logits of a forward pass (GoogLeNet/Inception return named tuples in training)."""
    return output.logits if hasattr(output, "logits") else output


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path):
    """The state dict in a checkpoint file: a bare state dict, or a dict with 'model' or
    'state_dict' (as `pct train` and the original research code write); 'module.' stripped."""
    path = Path(path)
    if not path.is_file():
        raise PctError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises pickle, zip, EOF and runtime errors alike
        raise PctError(f"unreadable checkpoint {path}: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    state = obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise PctError(f"{path} holds no state dict (expected a dict of tensors, or one under "
                       f"'model' or 'state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def checkpoint_num_classes(arch, state, path="checkpoint"):
    """Class count of `arch` as stored in `state` (rows of its final classifier weight)."""
    key = classifier_name(build_model(arch, 10)) + ".weight"
    if key not in state:
        raise PctError(f"checkpoint {path} does not fit {arch}: it has no '{key}'")
    return int(state[key].shape[0])


def load_weights(model, state, arch, path):
    """Load `state` strictly; a mismatch names the first offending key and both shapes."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            raise PctError(f"checkpoint {path} does not fit {arch}: missing key '{key}'")
        if state[key].shape != value.shape:
            raise PctError(f"checkpoint {path} does not fit {arch}: '{key}' has shape "
                           f"{tuple(state[key].shape)}, the model wants {tuple(value.shape)}")
    extra = [k for k in state if k not in own]
    if extra:
        raise PctError(f"checkpoint {path} does not fit {arch}: unexpected key '{extra[0]}'")
    model.load_state_dict(state)
    return model


def load_model(arch, path, num_classes=None, **kwargs):
    """(model in eval mode, class count) from a checkpoint; `num_classes` is checked if given."""
    state = read_state_dict(path)
    classes = checkpoint_num_classes(arch, state, path)
    if num_classes is not None and classes != num_classes:
        raise PctError(f"checkpoint {path} has {classes} classes, the data has {num_classes}")
    model = load_weights(build_model(arch, classes, **kwargs), state, arch, path)
    return model.eval(), classes


def save_atomic(obj, path):
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

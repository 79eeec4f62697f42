"""Checkpoints: reading any of the accepted layouts as data, writing atomically, fingerprints.

Accepted: a state dict; a dict with `model` or `state_dict` (and our `arch`, `epoch`,
optimizer, scheduler and RNG state, `config`); the original research code's
`model_best.pth.tar` (keys with a `module.` prefix). Everything is read with
`torch.load(weights_only=True)`: a file whose unpickling needs other code is refused, naming
the file and the first global it wanted, unless the user trusts it (`--trust-checkpoint`).
Checkpoints are written to a temporary file and renamed (files.atomic_file).
"""
import hashlib
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import PctError
from ..files import atomic_file
from .architectures import AUX_HEADS, build_model, classifier_key


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_record(arch, path):
    """{arch, sha256, path}: how a store's `teachers` attribute names a checkpoint (§Store)."""
    return {"arch": arch, "sha256": sha256_file(path), "path": str(Path(path).resolve())}


def read_state_dict(path, trust=False):
    """The state dict in a checkpoint file: a bare state dict, or a dict with 'model' or
    'state_dict' (as `pct train` and the original research code write); 'module.' stripped.
    `trust`: see load_file."""
    return read_checkpoint(path, trust)[0]


def read_checkpoint(path, trust=False):
    """(state dict as read_state_dict gives it, the constructor kwargs `pct train` saved with
    it under 'model_kwargs', else {}). `trust`: see load_file."""
    return checkpoint_state(load_file(path, trust), path)


def checkpoint_state(obj, path):
    """read_checkpoint's answer for `obj`, what load_file gave for the file `path`."""
    state = obj
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise PctError(f"{path} holds no state dict (expected a dict of tensors, or one under "
                       f"'model' or 'state_dict')")
    saved = obj.get("model_kwargs") if isinstance(obj, dict) else None
    return ({k.removeprefix("module."): v for k, v in state.items()},
            dict(saved) if isinstance(saved, dict) else {})


def load_file(path, trust=False):
    """What torch.save wrote to `path`, read as data (torch.load with weights_only=True):
    tensors, dicts, lists, tuples, strings and numbers. A file that needs other code to be
    unpickled is refused with a PctError naming the first such global; so is a missing,
    folder or unreadable file. `trust` (--trust-checkpoint) unpickles anything, which runs
    whatever code the file holds; a pickled nn.Module (whole, or under 'model' or
    'state_dict') then gives its state_dict()."""
    path = Path(path)
    if path.is_dir():
        raise PctError(f"checkpoint is a folder: {path} (expected a file written by torch.save)")
    if not path.is_file():
        raise PctError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        wanted = None if trust else unsafe_global(str(exc))
        if wanted is not None:
            raise PctError(f"checkpoint {path} was not loaded: unpickling it needs {wanted}, "
                           f"which runs code from the file; pass --trust-checkpoint only if you "
                           f"trust its source") from None
        raise PctError(f"unreadable checkpoint {path}: UnpicklingError: "
                       f"{unpickler_reason(str(exc))}") from None
    except Exception as exc:  # torch.load raises zip, EOF, index and runtime errors alike
        raise PctError(f"unreadable checkpoint {path}: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        obj = {k: v.state_dict() if isinstance(v, nn.Module) and k in ("model", "state_dict")
               else v for k, v in obj.items()}
    return obj


def unsafe_global(message):
    """The global (module.name) that torch's weights-only unpickler refused, from its error
    message ('GLOBAL posix.system whose module posix is blocked', 'GLOBAL getattr was not an
    allowed global'; builtins lose their module there), or None for other failures."""
    found = re.search(r"GLOBAL\s+([\w.]+)", message)
    if found is None:
        return None
    name = found.group(1).rstrip(".")
    return name if "." in name else f"builtins.{name}"


def unpickler_reason(message):
    """The weights-only unpickler's own line in torch's error message, without its advice."""
    advice = ("Weights only load failed", "weights_only", "Check the documentation",
              "Please file an issue")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    own = [line for line in lines if not any(a in line for a in advice)]
    if own:
        return own[0].removeprefix("WeightsUnpickler error: ")
    return lines[0].removeprefix("Weights only load failed. ") if lines else ""


def checkpoint_num_classes(arch, state, path="checkpoint"):
    """Class count of `arch` as stored in `state` (rows of its final classifier weight)."""
    key = classifier_key(arch) + ".weight"
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


def load_model(arch, path, num_classes=None, trust=False, **kwargs):
    """(model in eval mode, class count) from a checkpoint; `num_classes` is checked if given.
    The model is built with the checkpoint's saved `model_kwargs` (e.g. a ViT's image_size),
    overridden by `kwargs`. A GoogLeNet / Inception v3 checkpoint without auxiliary heads
    loads into a model without. `trust`: see load_file."""
    state, saved = read_checkpoint(path, trust)
    kwargs = {**saved, **kwargs}
    classes = checkpoint_num_classes(arch, state, path)
    heads = AUX_HEADS.get(arch, ())
    if heads and not any(k.startswith(heads[0].split(".")[0] + ".") for k in state):
        kwargs.setdefault("aux_logits", False)  # saved without its auxiliary heads
    if num_classes is not None and classes != num_classes:
        raise PctError(f"checkpoint {path} has {classes} classes, the data has {num_classes}")
    model = load_weights(build_model(arch, classes, **kwargs), state, arch, path)
    return model.eval(), classes


def save_atomic(obj, path):
    """torch.save to a temporary file in the same folder, then rename over `path`; a full disk
    or a refused write is a PctError naming `path`, and leaves `path` as it was."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        _save_to(obj, f)


def _save_to(obj, f):
    try:
        torch.save(obj, f)
    except RuntimeError as exc:
        # torch's zip writer reports a failed write of `f` as a RuntimeError raised while
        # the file's OSError (ENOSPC, say) is being handled: give that OSError back.
        if isinstance(exc.__context__, OSError):
            raise exc.__context__ from None
        raise

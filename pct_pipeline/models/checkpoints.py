"""Checkpoints: reading any of the accepted layouts as data, writing atomically, fingerprints.

Accepted: a state dict; a dict with `model` or `state_dict` (and our `arch`, `epoch`,
optimizer, scheduler and RNG state, `config`); the original research code's
`model_best.pth.tar` (keys with a `module.` prefix); a timm train.py checkpoint (`state_dict`,
`state_dict_ema`, `arch`, `args`, `version`...: its `state_dict` is read, the weights it
trained, as in pct's own checkpoints, whose `model_ema` is not read either; its arch becomes
`timm:NAME`, its args.model_kwargs and gp the model's kwargs); a `.safetensors` file (a state dict;
needs the safetensors package, which the timm extra installs). Everything is read with
`torch.load(weights_only=True)`, with argparse.Namespace (timm's `args`, a bag of plain
values) allowed: a file whose unpickling needs other code is refused, naming the file and the
globals it wants (torch.serialization.get_unsafe_globals_in_checkpoint), unless the user
trusts it (`--trust-checkpoint`). Checkpoints are written to a temporary file and renamed
(files.atomic_file).
"""
import argparse
import os
import sys
import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from ..classes import check_same
from ..errors import PctError
from ..files import atomic_file
from .architectures import AUX_HEADS, build_model, classifier_key


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
    tensors, dicts, lists, tuples, strings, numbers and argparse.Namespace; a `.safetensors`
    file gives its state dict; a timm train.py checkpoint is named as here (from_timm). A
    file that needs other code to be unpickled is refused with a PctError naming the globals
    it wants; so is a missing, folder or unreadable file. `trust` (--trust-checkpoint)
    unpickles anything, which runs whatever code the file holds; a pickled nn.Module (whole,
    or under 'model' or 'state_dict') then gives its state_dict()."""
    path = Path(path)
    if path.is_dir():
        raise PctError(f"checkpoint is a folder: {path} (expected a file written by torch.save)")
    if not path.is_file():
        raise PctError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        wanted = None if trust else unsafe_globals(path)
        if wanted:
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
    return from_timm(obj)


def _load_safetensors(path):
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file as read
    except ImportError:
        raise PctError(f"reading {path} needs the safetensors package: pip install "
                       f"'pct_pipeline[timm]' (or pip install safetensors)") from None
    try:
        return read(path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise PctError(f"unreadable checkpoint {path}: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def from_timm(obj):
    """`obj` as read, or, for a checkpoint timm's train.py wrote ({'arch', 'state_dict',
    'version', 'args', ...}), the same with 'arch' as named here (`timm:NAME`, without a
    pretrained tag or hub prefix) and 'model_kwargs' from its args (model_kwargs, and gp as
    global_pool: what train.py passes to create_model that shapes the model). Without
    'args', timm's 'arch' is the model's class name, not an architecture: it is dropped."""
    if not (isinstance(obj, dict) and {"arch", "state_dict", "version"} <= obj.keys()
            and "model" not in obj and isinstance(obj["arch"], str)):
        return obj
    obj = dict(obj)
    args = obj.get("args")
    if args is None:
        del obj["arch"]
        return obj
    obj["arch"] = "timm:" + obj["arch"].rsplit("/", 1)[-1].split(".")[0]
    kwargs = getattr(args, "model_kwargs", None)
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
    if isinstance(getattr(args, "gp", None), str):  # train.py --gp: the global pooling
        kwargs.setdefault("global_pool", args.gp)
    obj.setdefault("model_kwargs", kwargs)
    return obj


def unsafe_globals(path):
    """The globals (module.name) the weights-only unpickler refuses in the checkpoint `path`,
    as torch finds them, at most three named: sorted, torch's own last (a pickled model's
    class before its layers); "" where torch cannot tell (torch's legacy, pre-zip format)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        found = sorted(found, key=lambda name: (name.startswith("torch."), name))
    except (ValueError, RuntimeError, pickle.UnpicklingError, EOFError):
        return ""
    if len(found) > 3:
        return f"{', '.join(found[:3])} and {len(found) - 3} more"
    return " and ".join([", ".join(found[:-1]), found[-1]] if len(found) > 1 else found)


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
    saved.pop("pretrained_file", None)  # a timm model's starting weights: `state` replaces them
    kwargs = {**saved, **kwargs}
    classes = checkpoint_num_classes(arch, state, path)
    heads = AUX_HEADS.get(arch, ())
    if heads and not any(k.startswith(heads[0].split(".")[0] + ".") for k in state):
        kwargs.setdefault("aux_logits", False)  # saved without its auxiliary heads
    if num_classes is not None and classes != num_classes:
        raise PctError(f"checkpoint {path} has {classes} classes, the data has {num_classes}")
    model = load_weights(build_model(arch, classes, **kwargs), state, arch, path)
    return model.eval(), classes


def recorded_classes(obj):
    """The class names (in label order) a loaded checkpoint records: `pct train`'s `classes`
    (or those of its identity's data), else None."""
    if not isinstance(obj, dict):
        return None
    names = obj.get("classes")
    if names is None and isinstance(obj.get("identity"), dict):
        names = (obj["identity"].get("data") or {}).get("classes")
    return list(names) if isinstance(names, (list, tuple)) else None


def check_classes(path, data_classes, data_name, allow_unnamed=False, trust=False):
    """Refuse checkpoint `path` when the class names it records differ from `data_classes`
    (those of `data_name`, in label order), naming the first difference. A checkpoint that
    records none (a bare state dict, the original code's, timm's) is refused unless
    `allow_unnamed`, and then noted once. Data without class names is not compared."""
    if not data_classes:
        return
    names = recorded_classes(load_file(path, trust))
    if names is None:
        if not allow_unnamed:
            shown = ", ".join(map(str, data_classes[:3])) + (", ..." if len(data_classes) > 3 else "")
            raise PctError(f"checkpoint {path} records no class names, so its labels cannot be "
                           f"checked against those of {data_name} ({shown}); pass "
                           f"--allow-unnamed-classes if label i means the data's class i")
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"pct: note: checkpoint {path} records no class names: its labels are taken "
                  f"to mean the classes of {data_name}", file=sys.stderr, flush=True)
        return
    check_same(data_classes, names, data_name, f"checkpoint {path}")


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

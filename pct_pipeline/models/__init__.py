"""Architectures by name, penultimate features, and checkpoints: one package, three concepts.

    architectures.py     names, construction (torchvision, the research code's ResNet variants
                         in resnet_variants.py, timm's in timm_models.py, the small CNNs of the
                         demo and tests), input sizes, the classifier layer;
    outputs.py           the outputs of a forward pass: main logits, auxiliary loss, autocast;
    tap.py               FeatureTap, the classifier's input captured during a forward pass;
    checkpoints.py       reading checkpoints as data, writing them atomically, fingerprints;
    command.py, table.py `pct models` and the table it answers from without importing torch.

The rest of the package uses them as `models.NAME`, whichever module defines NAME. Each module
is imported when one of its names is first used (PEP 562 `__getattr__`), so importing this
package costs nothing: `pct models` answers from table.py without importing torch, and timm
is imported only for a `timm:` name.
"""
import importlib

_HOME = {
    "architectures": ("AUX_HEADS", "CLASSIFIER_ATTRS", "INCEPTION_AUX_MIN", "LOCAL_MODELS",
                      "SmallCNN", "available_models", "build_model", "classifier_key",
                      "classifier_name", "classifier_weights", "feature_dim", "hub_weights",
                      "input_requirement", "shape_only_model", "shared_feature_dim",
                      "torchvision_models"),
    "outputs": ("autocast", "aux_loss", "main_logits"),
    "checkpoints": ("check_classes", "checkpoint_num_classes", "checkpoint_record",
                    "checkpoint_state", "load_file", "load_model", "load_weights",
                    "read_checkpoint", "read_state_dict", "recorded_classes", "save_atomic",
                    "sha256_file"),
    "tap": ("FeatureTap",),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})

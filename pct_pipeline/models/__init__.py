"""Architectures by name, penultimate features, and checkpoints: one package, three concepts.

    architectures.py     names, construction (torchvision, the research code's ResNet variants
                         in resnet_variants.py, the small CNNs of the demo and tests), input
                         sizes, the classifier layer, the outputs of a forward pass;
    tap.py               FeatureTap, the classifier's input captured during a forward pass;
    checkpoints.py       reading checkpoints as data, writing them atomically, fingerprints.

The rest of the package uses them as `models.NAME`, whichever module defines NAME.
"""
from .architectures import (AUX_HEADS, CLASSIFIER_ATTRS, INCEPTION_AUX_MIN, LOCAL_MODELS,
                            SmallCNN, autocast, aux_loss, available_models, build_model,
                            classifier_key, classifier_name, classifier_weights, feature_dim,
                            hub_weights, input_requirement, main_logits, shape_only_model,
                            shared_feature_dim, torchvision_models)
from .checkpoints import (checkpoint_num_classes, checkpoint_record, checkpoint_state, load_file,
                          load_model, load_weights, read_checkpoint, read_state_dict, save_atomic,
                          sha256_file)
from .tap import FeatureTap

__all__ = ["AUX_HEADS", "CLASSIFIER_ATTRS", "INCEPTION_AUX_MIN", "LOCAL_MODELS", "SmallCNN",
           "autocast", "aux_loss", "available_models", "build_model", "classifier_key",
           "classifier_name", "classifier_weights", "feature_dim", "hub_weights",
           "input_requirement", "main_logits", "shape_only_model", "shared_feature_dim",
           "torchvision_models", "checkpoint_num_classes", "checkpoint_record", "checkpoint_state", "load_file", "load_model", "load_weights",
           "read_checkpoint", "read_state_dict", "save_atomic", "sha256_file", "FeatureTap"]

"""The feature tap: the input of a model's final classifier layer (its penultimate features),
captured with a forward pre-hook while the context is active.

[B, D] for a linear classifier (after any dropout in front of it, i.e. post-dropout in
training, identical in eval); SqueezeNet's classifier is a 1x1 convolution, whose input
[B, 512, h, w] is averaged over space to [B, 512]. `architectures.feature_dim` gives D from
the layer's shape, before any forward.
"""
from .architectures import classifier_name


class FeatureTap:
    """Context manager: while active, `self.features` holds the classifier's input [B, D]
    (a 4-d input of a 1x1-conv classifier averaged over space)."""

    def __init__(self, model):
        self.module = model.get_submodule(classifier_name(model))
        self.features = None

    def _hook(self, module, inputs):
        x = inputs[0]
        self.features = x.mean((2, 3)) if x.dim() == 4 else x.flatten(1)

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()

"""The original research code's ResNet variants, rebuilt on torchvision's ResNet.

All three keep torchvision's ResNet layout and parameter names (conv1 ... layer4, avgpool), so
torchvision's published ResNet weights load into their backbones (`--pretrained`).

- `resnet{18,34,50,101,152}_StoDepth_lineardecay`: stochastic depth. Block k of the K residual
  blocks survives a training step with probability p_k, decaying linearly from `prob_start`
  (1.0) at the first block to `prob_end` (0.5) at the last. One Bernoulli draw per block and
  step, shared by the whole batch, from torch's global RNG (seeded by `pct train --seed`, so
  every DDP rank drops the same blocks). A dropped block passes on relu(shortcut(x)) and its
  residual branch gets zero gradients (it stays in the autograd graph, so DDP needs no
  `find_unused_parameters`; momentum and weight decay keep acting on it). In eval mode
  nothing is random: the block computes relu(shortcut(x) + p_k * branch(x)).
  Output: plain logits [B, C]; the classifier is `fc`.
- `aux_resnet{18,...}`: two Inception-style auxiliary classifiers (torchvision's GoogLeNet
  `InceptionAux`: 4x4 average pool, 1x1 conv to 128, fc 2048->1024, dropout `aux_dropout`
  0.7, fc 1024->C) on the outputs of conv3_x (`layer2`) and conv4_x (`layer3`), the ResNet
  paper's stages 3 and 4. Training: `AuxOutputs(logits, (aux_conv3, aux_conv4), weight)`,
  each auxiliary CE weighted by `aux_weight` (0.3, as GoogLeNet); eval: logits [B, C] of `fc`.
- `mb_resnet{18,...}`: `heads` (3) linear classifiers on the same pooled feature. The model's
  logits are the mean of the heads' logits, in training and eval alike, so CE, distillation
  and accuracy all see the prediction the model makes. Training also returns every head's own
  logits as auxiliary outputs, each trained with CE at `aux_weight` (1.0, as the original added
  its auxiliary terms), so each head is a classifier by itself. Features are the pooled
  feature, tapped at `heads.0` (every head takes the same input).
Minimum input size: 1 px for all (adaptive pooling everywhere).
"""
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.googlenet import InceptionAux
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..errors import PctError

DEPTHS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
          50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3]),
          152: (Bottleneck, [3, 8, 36, 3])}


class AuxOutputs(NamedTuple):
    """Training-mode output of the auxiliary and multi-branch models."""
    logits: torch.Tensor        # [B, C] the model's prediction
    aux: tuple                  # of [B, C] auxiliary logits, each trained with CE
    aux_weight: float           # weight of each auxiliary CE in the training loss


def _anchor(module):
    """A zero scalar that depends on every parameter of `module`: adding it keeps a skipped
    branch in the autograd graph (zero gradients instead of none)."""
    return sum(p.reshape(-1)[0] for p in module.parameters()) * 0.0


class _StoDepthMixin:
    survival = 1.0  # set per block by StoDepthResNet

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        if self.training and torch.rand(()).item() >= self.survival:
            return self.relu(identity + _anchor(self))
        out = self.branch(x)
        if not self.training:
            out = out * self.survival
        return self.relu(out + identity)


class StoDepthBasicBlock(_StoDepthMixin, BasicBlock):
    def branch(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class StoDepthBottleneck(_StoDepthMixin, Bottleneck):
    def branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class StoDepthResNet(ResNet):
    """ResNet whose blocks survive with probability decaying linearly prob_start -> prob_end."""

    def __init__(self, block, layers, num_classes=1000, prob_start=1.0, prob_end=0.5, **kwargs):
        if not 0 <= prob_end <= 1 or not 0 <= prob_start <= 1:
            raise PctError(f"survival probabilities must lie in [0, 1], got prob_start="
                           f"{prob_start}, prob_end={prob_end}")
        block = {BasicBlock: StoDepthBasicBlock, Bottleneck: StoDepthBottleneck}[block]
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        blocks = self.blocks()
        for k, b in enumerate(blocks):
            b.survival = prob_start - (prob_start - prob_end) * k / max(len(blocks) - 1, 1)

    def blocks(self):
        return [b for layer in (self.layer1, self.layer2, self.layer3, self.layer4) for b in layer]


class _TrunkMixin:
    def trunk(self, x):
        """(conv3_x output, conv4_x output, pooled feature [B, D]) of the ResNet trunk."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return c3, c4, torch.flatten(self.avgpool(self.layer4(c4)), 1)


class AuxResNet(_TrunkMixin, ResNet):
    """ResNet + auxiliary classifiers on conv3_x and conv4_x (training only)."""

    classifier_layer = "fc"

    def __init__(self, block, layers, num_classes=1000, aux_weight=0.3, aux_dropout=0.7, **kwargs):
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        self.aux1 = InceptionAux(128 * block.expansion, num_classes, dropout=aux_dropout)
        self.aux2 = InceptionAux(256 * block.expansion, num_classes, dropout=aux_dropout)
        self.aux_weight = float(aux_weight)

    def forward(self, x):
        c3, c4, feature = self.trunk(x)
        logits = self.fc(feature)
        if not self.training:
            return logits
        return AuxOutputs(logits, (self.aux1(c3), self.aux2(c4)), self.aux_weight)


class MBResNet(_TrunkMixin, ResNet):
    """ResNet with `heads` linear classifiers on the pooled feature; logits = their mean."""

    classifier_layer = "heads.0"

    def __init__(self, block, layers, num_classes=1000, heads=3, aux_weight=1.0, **kwargs):
        if int(heads) < 1:
            raise PctError(f"mb_resnet needs at least one head, got heads={heads}")
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        width = self.fc.in_features
        del self.fc
        self.heads = nn.ModuleList(nn.Linear(width, num_classes) for _ in range(int(heads)))
        self.aux_weight = float(aux_weight)

    def forward(self, x):
        feature = self.trunk(x)[2]
        each = [head(feature) for head in self.heads]
        logits = torch.stack(each).mean(0)
        return AuxOutputs(logits, tuple(each), self.aux_weight) if self.training else logits


def _constructor(cls, depth):
    block, layers = DEPTHS[depth]
    return lambda num_classes, **kw: cls(block, layers, num_classes=num_classes, **kw)


VARIANTS = {}
BASE_ARCH = {}  # variant -> the torchvision ResNet whose published weights fit its backbone
for _depth in DEPTHS:
    for _name, _cls in ((f"resnet{_depth}_StoDepth_lineardecay", StoDepthResNet),
                        (f"aux_resnet{_depth}", AuxResNet), (f"mb_resnet{_depth}", MBResNet)):
        VARIANTS[_name] = _constructor(_cls, _depth)
        BASE_ARCH[_name] = f"resnet{_depth}"

"""The outputs of a forward pass: eval mode gives logits [B, C]; in training, GoogLeNet,
Inception v3 and the aux/mb ResNets return a named tuple with `.logits` and auxiliary logits.
`main_logits` picks the former, `aux_loss` turns the latter into their training loss;
`autocast` is the precision they are computed in."""
import torch
import torch.nn.functional as F

# CE weights of the auxiliary heads, as in their papers and torchvision's reference recipe
AUX_WEIGHT = {"googlenet": 0.3, "inception_v3": 0.4}


def autocast(device, dtype=None):
    """The autocast context of `device` (a torch.device or its type, e.g. "cuda") in `dtype`
    (torch.bfloat16 or torch.float16); float32 when `dtype` is None, also inside an enclosing
    autocast (losses and predictions that bf16 rounding would change use that)."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def main_logits(output):
    """The main logits [B, C] of a forward pass (training-mode outputs with auxiliary logits
    are named tuples with `.logits`)."""
    return output.logits if hasattr(output, "logits") else output


def aux_loss(output, labels):
    """Training loss of a forward pass's auxiliary logits, float32 scalar (0 for plain logits):
    GoogLeNet 0.3 * (CE(aux1) + CE(aux2)), Inception v3 0.4 * CE(aux), the aux/mb ResNets
    aux_weight * sum of CE(aux_k). labels: int64 [B]."""
    if hasattr(output, "aux_logits1"):
        terms = [(AUX_WEIGHT["googlenet"], output.aux_logits1),
                 (AUX_WEIGHT["googlenet"], output.aux_logits2)]
    elif hasattr(output, "aux_logits"):
        terms = [(AUX_WEIGHT["inception_v3"], output.aux_logits)]
    elif hasattr(output, "aux"):
        terms = [(output.aux_weight, logits) for logits in output.aux]
    else:
        terms = []
    total = main_logits(output).new_zeros((), dtype=torch.float32)
    for weight, logits in terms:
        if logits is not None:
            total = total + weight * F.cross_entropy(logits.float(), labels)
    return total

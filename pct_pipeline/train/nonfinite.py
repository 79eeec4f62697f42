"""`NonFinite` watches the training loss for NaN/inf without a host synchronisation per step:
the first bad step, its loss and the first sample with non-finite logits stay on the device
until `check`, which the loop calls every CHECK_EVERY steps and at the end of the epoch."""
import torch

from ..errors import PctError

CHECK_EVERY = 50


class NonFinite:
    """The first step of an epoch whose loss is not finite, kept on the device."""

    def __init__(self, device):
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.value = torch.zeros((), device=device)
        self.row = torch.full((), -1, dtype=torch.long, device=device)
        self.indices = {}  # step -> the batch's sample indices (CPU), since the last check

    def watch(self, step, loss, logits, indices):
        bad = ~torch.isfinite(loss.detach()) & (self.step < 0)
        rows_bad = ~torch.isfinite(logits.detach()).all(dim=1)
        row = torch.where(rows_bad.any(), rows_bad.int().argmax(), -1)
        self.step = torch.where(bad, step, self.step)
        self.value = torch.where(bad, loss.detach().float(), self.value)
        self.row = torch.where(bad, row, self.row)
        self.indices[step] = indices

    def check(self, epoch):
        """PctError naming the epoch, step, loss and sample of the first non-finite loss."""
        step = int(self.step)
        if step < 0:
            self.indices.clear()
            return
        row = int(self.row)
        sample = (f"; sample {int(self.indices[step][row])} has non-finite logits"
                  if row >= 0 else "")
        raise PctError(f"training loss is {float(self.value)} at epoch {epoch}, step {step}"
                       f"{sample}; lower --lr or check the data and teacher")

"""Per-step bookkeeping of the training loop that must not stall it.

`StepClock` accounts where an epoch's time goes, phase by phase (loader wait, forward, teacher
targets, loss, backward, optimizer). On the CPU it reads the clock at each phase's end; on
CUDA it records events on the stream (no host synchronisation) and reads them at the epoch's
end, so the account follows the GPU's timeline. The phases add up to the loop's wall time.

`NonFinite` watches the loss for NaN/inf without a host synchronisation per step: the first
bad step, its loss and the first sample with non-finite logits stay on the device until
`check`, which the loop calls every CHECK_EVERY steps and at the end of the epoch.
"""
import time

import torch

from ..errors import PctError

PHASES = ("loader", "forward", "targets", "loss", "backward", "optimizer")
CHECK_EVERY = 50


class StepClock:
    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.spans = []
        self.last = self._now()

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def mark(self, phase):
        """End `phase` now: the time since the previous mark is counted to it."""
        now = self._now()
        if self.cuda:
            self.spans.append((phase, self.last, now))
        else:
            self.totals[phase] += now - self.last
        self.last = now

    def account(self):
        """{phase: seconds} of the epoch so far."""
        if self.cuda and self.spans:
            self.spans[-1][2].synchronize()
            for phase, start, end in self.spans:
                self.totals[phase] += start.elapsed_time(end) / 1000
            self.spans = []
        return dict(self.totals)


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

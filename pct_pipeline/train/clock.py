"""`StepClock` accounts where an epoch's time goes, phase by phase (loader wait, forward,
teacher targets, loss, backward, optimizer), without stalling the loop. On the CPU it reads the
clock at each phase's end; on CUDA it records events on the stream (no host synchronisation)
and reads them at the epoch's end, so the account follows the GPU's timeline. The phases add
up to the loop's wall time.
"""
import time

import torch

PHASES = ("loader", "forward", "targets", "loss", "backward", "optimizer")


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

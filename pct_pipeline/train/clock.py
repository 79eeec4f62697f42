"""`StepClock` accounts where an epoch's time goes, phase by phase (loader wait, forward,
teacher targets, loss, backward, optimizer), without stalling the loop. On the CPU it reads the
clock at each phase's end; on CUDA it records events on the stream (no host synchronisation)
and reads them at the epoch's end, so the account follows the GPU's timeline. The phases add
up to the loop's wall time. `Pace` times the whole epoch and its steady part (from the end of
the first optimizer step on, without the loaders' compilation).
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


class Pace:
    """The wall time of an epoch and of its steady part, which starts at the end of its first
    optimizer step: the first batch of a run waits for the loaders' JIT compilation (seconds),
    which the steady images/s and step time leave out."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.start = time.perf_counter()
        self.warm = None  # (time, images seen) at the end of the first optimizer step
        self.end = None

    def stepped(self, seen):
        """An optimizer step ended after `seen` images of this process; the first one starts
        the steady part (on CUDA once the device has finished it: one synchronisation)."""
        if self.warm is None:
            if self.cuda:
                torch.cuda.synchronize()
            self.warm = (time.perf_counter(), seen)

    def stop(self, seen):
        """The epoch ended after `seen` images; returns the images of the steady part."""
        self.end = time.perf_counter()
        self.warm = self.warm or (self.end, seen)
        return seen - self.warm[1]

    def rates(self, images, steady_images, steps):
        """{images_per_s, train_time_s} of the whole epoch and {steady_images_per_s,
        steady_step_s} of its steady part, from the images of all processes (`images`,
        `steady_images`) and the epoch's optimizer steps."""
        whole, steady = self.end - self.start, self.end - self.warm[0]
        return {"images_per_s": images / whole, "train_time_s": whole,
                "steady_images_per_s": steady_images / steady if steady_images else images / whole,
                "steady_step_s": steady / (steps - 1) if steps > 1 else whole}

"""What `pct cache-fidelity` measures: every knob once, with its default."""
from dataclasses import dataclass


@dataclass(frozen=True)
class FidelityConfig:
    """temperatures: () means 1, 4 and 100 (a sampled codec: its own); student: (arch,
    checkpoint) or None for exact + N(0, 1); data: the .beton the student runs on (None: the
    cache's recorded dataset path)."""

    cache: str
    exact: str | None = None
    temperatures: tuple = ()
    mode: str = "kl"
    rows: int = 1000
    student: tuple | None = None
    data: str | None = None
    li_p: float = 2.0
    li_margin: float = 0.5
    json_out: str | None = None
    trust_checkpoint: bool = False

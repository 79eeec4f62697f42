"""bench/cached_cost.py with two repeats: it builds the tiny setting (data, teacher cache, loader),
times the loss, the view read and cached epochs with and without the background read, and writes
every figure, so that it cannot rot."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about a minute on 2 cores (2,048 synthetic images, a teacher cache); -m slow
def test_cached_cost_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "cost.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cached_cost.py"), "--repeats",
                           "2", "--calls", "5", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    figures = json.loads(out.read_text())["figures"]
    assert set(figures) == {"loss_ce_us", "loss_fd_us", "view_read_ms", "zarr_read_ms",
                            "epoch_with_read_s", "epoch_without_read_s",
                            "with_read_over_without_per_repeat"}
    for name, figure in figures.items():
        assert len(figure["values"]) == 2 and min(figure["values"]) > 0, (name, figure)
    assert figures["loss_fd_us"]["median"] > figures["loss_ce_us"]["median"]  # FD adds work
    assert "cached epoch time with the next view read / without it" in proc.stdout

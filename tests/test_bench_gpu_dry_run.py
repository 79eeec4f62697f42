"""bench/gpu_check.sh --dry-run: the GPU benchmark script runs end to end on the CPU (tiny
sizes, gloo, the real precompute CLI and torchrun) and writes every figure, so it cannot rot."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about a minute on 2 cores; run with -m slow (and before a GPU run)
def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    figures = result["figures"]
    wanted = {f"{v}_images_per_s" for v in ("loader", "ce", "cached", "online1", "online2")}
    assert wanted | {"join_ms_per_batch", "cache_view_read_ms_per_epoch"} <= set(figures)
    for name, figure in figures.items():
        assert len(figure["values"]) == 2 and min(figure["values"]) > 0, (name, figure)
    assert {c["name"] for c in result["checks"]} == {
        "train: cached KD / CE-only", "train: cached KD / online KD, equal-size teacher",
        "train: join time in the step / cached step time",
        "train: cached - CE step time not accounted for by the phases / cached step"}
    for check in result["checks"]:
        assert check["value"] >= 0 and check["spread"][0] <= check["spread"][1]
    account = result["step_account_ms"]  # where a step's time goes, CE-only beside cached
    for variant in ("ce", "cached"):
        phases = account[variant]
        assert {"loader", "targets", "forward", "loss", "backward", "optimizer"} <= set(phases)
        assert sum(v for k, v in phases.items() if k not in ("wall", "other")) > 0
    assert "ms per step (median)" in proc.stdout
    setup = result["setup"]
    assert (setup["student"], setup["ensemble"], setup["process_group"]) == ("resnet18", 2, "gloo")
    assert result["machine"]["versions"]["torch"] and "GPU: none (CPU)" in proc.stdout
    assert "cached_images_per_s" in proc.stdout  # the table is printed

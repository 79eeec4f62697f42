"""bench/analyze.py at a small size: it runs `pct analyze`'s code path several times over the same
report file (as `make bench` does at 50,000 x 1,000) and writes its figures."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_analyze_benchmark_repeats_and_writes_its_figures(tmp_path):
    out = tmp_path / "analyze.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "analyze.py"), "--samples", "500",
                           "--classes", "20", "--bootstrap", "100", "--repeats", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["name"] == "analyze" and result["checks"][0]["value"] > 0

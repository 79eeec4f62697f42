"""The demo's summary (demo/summarize.py) and figure (demo/summary_plot.py) on synthetic logits."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pct_pipeline.analyze.run import Predictions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
import summarize  # noqa: E402

N, C, SEEDS = 400, 10, (1, 2, 3)


def _model(labels, wrong, rng):
    """Logits [N, C] float32 whose argmax is the label except on the bool mask `wrong`."""
    logits = rng.normal(0, 0.1, (len(labels), C)).astype(np.float32)
    predicted = np.where(wrong, (labels + 1 + rng.integers(0, C - 1, len(labels))) % C, labels)
    logits[np.arange(len(labels)), predicted] += 5
    return logits


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, N)
    old = Predictions("old.zarr", _model(labels, rng.random(N) < 0.15, rng), labels, None)
    error = {"ce": 0.08, "fd": 0.03, "ldi": 0.05}
    runs = {m: [Predictions(f"{m}{s}", _model(labels, rng.random(N) < error[m], rng), labels,
                            None) for s in SEEDS] for m in summarize.METHODS}
    return summarize.summarize(old, runs, list(SEEDS), resamples=500), old, runs


def test_counts_and_differences_match_a_direct_count(summary):
    s, old, runs = summary
    old_right = old.logits.argmax(1) == old.labels
    right = {m: [p.logits.argmax(1) == p.labels for p in runs[m]] for m in runs}
    for m, entry in s["methods"].items():
        nf = [int(np.sum(old_right & ~r)) for r in right[m]]
        assert entry["negative_flips_per_seed"] == nf
        assert entry["negative_flips_pooled"] == sum(nf)
        assert entry["top1_mean"] == pytest.approx(np.mean([r.mean() for r in right[m]]))
    for m in ("fd", "ldi"):
        entry, ce = s["methods"][m], s["methods"]["ce"]
        assert entry["reduction"] == ce["negative_flips_pooled"] - entry["negative_flips_pooled"]
        assert entry["relative_reduction"] == pytest.approx(entry["reduction"]
                                                            / ce["negative_flips_pooled"])
        lo, hi = entry["reduction_ci95"]
        assert lo <= entry["reduction"] <= hi
        diffs = entry["top1_difference"]
        for d, r, r_ce, seed in zip(diffs["per_seed"], right[m], right["ce"], SEEDS):
            assert d["seed"] == seed
            assert d["difference"] == pytest.approx(r.mean() - r_ce.mean())
            assert d["ci95"][0] <= d["difference"] <= d["ci95"][1]
        pooled = diffs["pooled"]
        assert pooled["difference"] == pytest.approx(np.mean([d["difference"]
                                                              for d in diffs["per_seed"]]))
        assert pooled["ci95"][0] <= pooled["difference"] <= pooled["ci95"][1]
    json.dumps(s, allow_nan=False)  # plain JSON types only


def test_table_and_verdicts(summary):
    text = summarize.format_summary(summary[0])
    lines = text.splitlines()
    assert lines[0].startswith("old model top-1") and "seeds 1 2 3" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["ce", "fd", "ldi"]
    assert "s1 " in text and "s3 " in text
    assert "fewer pooled flips" in lines[-1]


def test_plot_writes_a_png(summary, tmp_path):
    pytest.importorskip("matplotlib")
    from summary_plot import plot

    out = tmp_path / "summary.png"
    plot(summary[0], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["summary.png"]


def test_analyze_plot_labels():
    pytest.importorskip("matplotlib")
    from pct_pipeline.analyze.plot import _styles, short_names

    assert short_names(["/r/demo/old.zarr", "/r/demo/new_ce_s1/predictions.zarr",
                        "/r/demo/new_fd_s1/predictions.zarr/"]) == ["old", "new_ce_s1",
                                                                     "new_fd_s1"]
    assert short_names(["a.zarr", "b.result"]) == ["a", "b.result"]
    styles = _styles(["new_ce_s1", "new_ce_s2", "new_fd_s1", "other"])
    assert styles[0][0] == styles[1][0] != styles[2][0]  # one colour per method
    assert styles[0][1] == styles[2][1] != styles[1][1]  # one marker per seed

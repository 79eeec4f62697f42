"""`pct analyze` end to end: real prediction stores and .result files, the real console script."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from pct_pipeline.cli import main
from pct_pipeline.store import create_store, shard_bounds, write_unit

PCT = str(Path(sys.executable).with_name("pct"))
CLASSES = ["zero", "one", "two", "three"]
N, C = 60, 4


def make_store(path, logits, labels, kind="predictions", views=1, eval_view=True, units=None):
    """A real §Store holding `logits` [N, C] in every view; `units` limits the shards written."""
    attrs = {"split": "val", "eval_view": eval_view,
             "dataset": {"path": "val.beton", "num_samples": len(labels), "classes": CLASSES}}
    layout = create_store(path, kind=kind, labels=labels, num_classes=logits.shape[1],
                          views=views, attributes=attrs, chunks_per_shard=1)
    for view in range(views):
        for shard in range(layout["num_shards"] if units is None else units):
            lo, hi = shard_bounds(layout, shard)
            write_unit(path, view, shard, logits=logits[lo:hi],
                       crops=np.zeros((hi - lo, 5), np.int32))
    return str(path)


def model(rng, labels, skill):
    logits = rng.standard_normal((len(labels), C)).astype(np.float32)
    logits[np.arange(len(labels)), labels] += skill * (rng.random(len(labels)) < 0.8)
    return logits.astype(np.float16)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, C, N)
    logits = [model(rng, labels, s) for s in (1.0, 2.0, 3.0)]
    paths = [make_store(root / f"{name}.zarr", x, labels)
             for name, x in zip(("old", "new", "new2"), logits)]
    return root, labels, logits, paths


def pct(*args):
    return subprocess.run([PCT, *map(str, args)], capture_output=True, text=True, timeout=120)


def expected(labels, old, new):
    """Independent numpy reference: argmax predictions and flip counts."""
    right_old = np.argmax(old, axis=1) == labels
    right_new = np.argmax(new, axis=1) == labels
    return right_old.mean(), right_new.mean(), int((right_old & ~right_new).sum()), int(
        (~right_old & right_new).sum())


def test_table_and_json(data):
    root, labels, logits, paths = data
    out = root / "report.json"
    run = pct("analyze", *paths, "--json", out, "--bootstrap", 200, "--top-classes", 3)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert {"models", "comparisons", "ensembles", "paired"} <= set(report)
    for m, x in zip(report["models"], logits):
        assert set(m) >= {"path", "n", "top1", "top5", "top1_ci95"} and m["n"] == N
        assert m["top1"] == pytest.approx(np.mean(np.argmax(x, axis=1) == labels))
        assert m["top1_ci95"][0] <= m["top1"] <= m["top1_ci95"][1]
    keys = {"old", "new", "nfr", "pfr", "nfi", "pfi", "relative_nfr", "nfr_frac", "pfr_frac",
            "type1_flips", "type2_flips", "negative_flips", "positive_flips", "nfr_ci95",
            "top_flip_classes"}
    for comp, new, path in zip(report["comparisons"], logits[1:], paths[1:]):
        assert keys <= set(comp) and (comp["old"], comp["new"]) == (paths[0], path)
        acc_old, acc_new, nf, pf = expected(labels, logits[0], new)
        assert (comp["negative_flips"], comp["positive_flips"]) == (nf, pf)
        assert comp["nfr"] == pytest.approx(nf / N) and comp["pfr"] == pytest.approx(pf / N)
        assert comp["relative_nfr"] == pytest.approx((nf / N) / (acc_old * (1 - acc_new)))
        top = comp["top_flip_classes"]
        assert len(top) <= 3 and sum(t["negative_flips"] for t in top) <= nf
        assert all(t["name"] == CLASSES[t["class"]] for t in top)
    ensembles = [e["members"] for e in report["ensembles"]]
    assert ensembles == [paths[:2], [paths[0], paths[2]], paths]
    mean = np.mean([x.astype(np.float32) for x in logits], axis=0)
    assert report["ensembles"][2]["top1"] == pytest.approx(np.mean(mean.argmax(1) == labels))
    (pair,) = report["paired"]
    assert (pair["new_a"], pair["new_b"], pair["bootstrap"]) == (paths[1], paths[2], 200)
    assert pair["difference"] == pair["negative_flips_a"] - pair["negative_flips_b"]
    assert pair["difference_ci95"][0] <= pair["difference"] <= pair["difference_ci95"][1]
    lines = run.stdout.splitlines()
    old_row = next(line for line in lines if line.startswith(paths[0]))
    assert f"{100 * report['models'][0]['top1']:.2f}%" in old_row
    nf_row = next(line for line in lines if line.startswith("negative flips (NF)"))
    assert nf_row.split()[-2:] == [str(c["negative_flips"]) for c in report["comparisons"]]


def test_same_seed_same_numbers_and_no_torch(data):
    _, _, _, paths = data
    code = ("import sys; from pct_pipeline.cli import main; main(sys.argv[1:]); "
            "print('torch imported:', 'torch' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code, "analyze", *paths[:2], "--seed", "7"],
                           capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stdout.rstrip().endswith("torch imported: False")


def test_result_file_equals_store(data, tmp_path):
    torch = pytest.importorskip("torch")
    root, labels, logits, paths = data
    result = tmp_path / "model_best.result"
    outputs = torch.from_numpy(logits[1].astype(np.float32))
    torch.save({"pred": outputs.argmax(1), "gt": torch.from_numpy(labels), "outputs": outputs,
                "features": [], "info": {"top1": torch.tensor(50.0), "top5": torch.tensor(90.0)}},
               result)
    from_store, from_result = tmp_path / "a.json", tmp_path / "b.json"
    assert pct("analyze", paths[0], paths[1], "--json", from_store).returncode == 0
    run = pct("analyze", paths[0], result, "--json", from_result)
    assert run.returncode == 0, run.stderr
    a, b = (json.loads(p.read_text()) for p in (from_store, from_result))
    for key in ("negative_flips", "positive_flips", "nfr", "nfr_ci95", "type2_flips"):
        assert a["comparisons"][0][key] == b["comparisons"][0][key]
    assert a["models"][1]["top1"] == b["models"][1]["top1"]
    assert b["comparisons"][0]["top_flip_classes"][0]["name"] == CLASSES[
        b["comparisons"][0]["top_flip_classes"][0]["class"]]  # names from the old store


def test_eval_view_teacher_cache_is_accepted(data, tmp_path):
    _, labels, logits, paths = data
    cache = make_store(tmp_path / "cache.zarr", logits[0], labels, kind="teacher-cache")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run = pct("analyze", cache, paths[1], "--json", a)
    assert run.returncode == 0, run.stderr
    assert pct("analyze", paths[0], paths[1], "--json", b).returncode == 0
    a, b = json.loads(a.read_text()), json.loads(b.read_text())
    assert a["models"][0]["path"] == cache
    for key in ("models", "comparisons", "ensembles"):
        for x, y in zip(a[key], b[key]):
            assert {k: v for k, v in x.items() if k not in ("path", "old", "members")} == {
                k: v for k, v in y.items() if k not in ("path", "old", "members")}


def refusal_cases(root, labels, logits):
    other = labels.copy()
    other[17] = (other[17] + 1) % C
    foreign = root / "foreign.zarr"
    zarr.create_group(store=str(foreign)).create_array("x", shape=(3,), dtype="int8")
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("hello")
    (root / "notes.txt").write_text("not a result")
    nan = logits[1].copy()
    nan[5, 2] = np.nan
    return {
        "nan": (make_store(root / "n.zarr", nan, labels), "NaN or infinite logit in sample 5"),
        "labels": (make_store(root / "l.zarr", logits[1], other), "labels differ"),
        "count": (make_store(root / "c.zarr", logits[1][:50], labels[:50]),
                  "sample counts differ"),
        "incomplete": (make_store(root / "i.zarr", logits[1], labels, units=0),
                       "incomplete store"),
        "directory": (root / "junk", "not a Zarr store"),
        "foreign": (foreign, "not a pct store"),
        "text file": (root / "notes.txt", "neither a pct store"),
        "training views": (make_store(root / "v.zarr", logits[1], labels, kind="teacher-cache",
                                      views=2, eval_view=False), "2 views"),
    }


def test_refusals_are_one_line(data, tmp_path):
    root, labels, logits, paths = data
    for name, (bad, message) in refusal_cases(tmp_path, labels, logits).items():
        run = pct("analyze", paths[0], bad)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2, (name, run.stderr)
        assert len(lines) == 1 and lines[0].startswith("pct: error:"), (name, run.stderr)
        assert message in lines[0] and str(bad) in lines[0], (name, lines[0])
    differ = pct("analyze", paths[0], tmp_path / "l.zarr")
    assert "first differ at sample 17 (" in differ.stderr
    assert f"has {N}" in pct("analyze", paths[0], tmp_path / "c.zarr").stderr


def test_plot(data, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, _, paths = data
    png = tmp_path / "flips.png"
    run = pct("analyze", *paths, "--plot", png, "--bootstrap", 100)
    assert run.returncode == 0, run.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["flips.png"]  # no temporary left behind


def test_plot_without_matplotlib_is_one_line(data, tmp_path, monkeypatch, capsys):
    _, _, _, paths = data
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", *paths[:2], "--plot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "matplotlib" in err[0]


def test_bootstrap_zero_gives_null_intervals(data, tmp_path):
    _, _, _, paths = data
    out = tmp_path / "r.json"
    main(["analyze", *paths, "--bootstrap", "0", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["models"][0]["top1_ci95"] is None
    assert report["comparisons"][0]["nfr_ci95"] is None
    assert report["paired"][0]["difference_ci95"] is None


def test_existing_json_is_replaced_only_with_overwrite(data, tmp_path):
    _, _, _, paths = data
    out = tmp_path / "report.json"
    out.write_text("an earlier report\n")
    refused = pct("analyze", paths[0], paths[1], "--json", out)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr
    assert out.read_text() == "an earlier report\n"
    replaced = pct("analyze", paths[0], paths[1], "--json", out, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(out.read_text())["models"][1]["path"] == str(paths[1])

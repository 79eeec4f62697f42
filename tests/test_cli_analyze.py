"""`pct analyze` end to end: real prediction stores and .result files, the real console script."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import pct as pct_here
from pct_pipeline.cli import main
from pct_pipeline.store import Contents, create_store, shard_bounds, write_unit

PCT = str(Path(sys.executable).with_name("pct"))
CLASSES = ["zero", "one", "two", "three"]
N, C = 60, 4


def make_store(path, logits, labels, kind="predictions", views=1, eval_view=True, units=None,
               classes=CLASSES, images_sha256=None):
    """A real §Store holding `logits` [N, C] in every view; `units` limits the shards written;
    `classes` and `images_sha256` go into its dataset attribute (None: not recorded)."""
    dataset = {"path": "val.beton", "num_samples": len(labels), "classes": classes}
    if images_sha256 is not None:
        dataset["images_sha256"] = images_sha256
    attrs = {"split": "val", "eval_view": eval_view, "dataset": dataset}
    contents = Contents(views=views, num_classes=logits.shape[1], dtype=logits.dtype.name,
                        chunks_per_shard=1)
    layout = create_store(path, kind, labels, contents, attrs)
    for view in range(views):
        for shard in range(layout["num_shards"] if units is None else units):
            lo, hi = shard_bounds(layout, shard)
            write_unit(path, view, shard, {"logits": logits[lo:hi],
                                           "crops": np.zeros((hi - lo, 5), np.int32)})
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


def expected_per_class(labels, old, new):
    """Per-class rows computed here from argmaxes, most negative flips first."""
    right_old, right_new = np.argmax(old, 1) == labels, np.argmax(new, 1) == labels
    rows = []
    for k in range(C):
        at = labels == k
        nf, pf = int(np.sum(at & right_old & ~right_new)), int(np.sum(at & ~right_old & right_new))
        rows.append({"class": k, "name": CLASSES[k], "count": int(at.sum()),
                     "old_top1": right_old[at].mean(), "top1": right_new[at].mean(),
                     "negative_flips": nf, "positive_flips": pf, "nfr": nf / at.sum(),
                     "pfr": pf / at.sum()})
    rows.sort(key=lambda r: (-r["negative_flips"], r["class"]))
    return [{k: pytest.approx(v) if isinstance(v, float) else v for k, v in r.items()}
            for r in rows]


def expected_transitions(labels, old, new):
    """(true -> new prediction) counts of the negative flips, most frequent first."""
    from collections import Counter

    pred_old, pred_new = np.argmax(old, 1), np.argmax(new, 1)
    flips = Counter((int(t), int(p)) for t, o, p in zip(labels, pred_old, pred_new)
                    if o == t and p != t)
    return [{"true": t, "true_name": CLASSES[t], "new": p, "new_name": CLASSES[p],
             "negative_flips": k} for (t, p), k in sorted(flips.items(),
                                                          key=lambda x: (-x[1], x[0]))]


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
            "negative_flips_ci95", "per_class", "transitions"}
    for comp, new, path in zip(report["comparisons"], logits[1:], paths[1:]):
        assert keys <= set(comp) and (comp["old"], comp["new"]) == (paths[0], path)
        acc_old, acc_new, nf, pf = expected(labels, logits[0], new)
        assert (comp["negative_flips"], comp["positive_flips"]) == (nf, pf)
        assert comp["nfr"] == pytest.approx(nf / N) and comp["pfr"] == pytest.approx(pf / N)
        assert comp["relative_nfr"] == pytest.approx((nf / N) / (acc_old * (1 - acc_new)))
        assert comp["negative_flips_ci95"] == pytest.approx([N * x for x in comp["nfr_ci95"]])
        assert comp["per_class"] == expected_per_class(labels, logits[0], new)
        assert comp["transitions"] == expected_transitions(labels, logits[0], new)[:3]
    assert set(report["legend"]) >= {"top1", "nfr", "nfi", "relative_nfr", "nfr_frac",
                                     "type1_flips", "type2_flips", "per class", "transitions"}
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
    comp = report["comparisons"][0]
    at = lines.index(next(line for line in lines if line.startswith(f"per class, {paths[1]}")))
    for row, line in zip(comp["per_class"][:3], lines[at + 2:at + 5]):  # header, rule, rows
        assert line.split() == [row["name"], str(row["count"]), f"{100 * row['old_top1']:.2f}%",
                                f"{100 * row['top1']:.2f}%", str(row["negative_flips"]),
                                str(row["positive_flips"]), f"{100 * row['nfr']:.2f}%"]
    legend = lines.index("legend:")
    assert legend > at and lines[legend + 1].startswith("  top1: ")


def test_same_seed_same_numbers_and_no_torch(data):
    _, _, _, paths = data
    code = ("import sys; from pct_pipeline.cli import main; main(sys.argv[1:]); "
            "print('torch imported:', 'torch' in sys.modules, "
            "'pct_pipeline.dataset' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code, "analyze", *paths[:2], "--seed", "7"],
                           capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stdout.rstrip().endswith("torch imported: False False")


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
    assert [r["name"] for r in b["comparisons"][0]["per_class"]] == [
        CLASSES[r["class"]] for r in b["comparisons"][0]["per_class"]]  # the old store's names
    assert b["notes"] == [f"cannot check that the inputs hold the same images: {paths[0]}, "
                          f"{result} record no image digest",
                          f"class names unknown for {result}: compared by label index, read as "
                          f"the classes of {paths[0]}"]
    assert run.stdout.startswith("\n".join(f"note: {x}" for x in b["notes"]) + "\n\n")


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


def test_plot_writes_the_format_its_extension_names(data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _, labels, logits, paths = data
    pdf, svg = tmp_path / "flips.pdf", tmp_path / "flips.SVG"
    for out in (pdf, svg):  # the same NEW store twice: two coinciding points
        code, _, err = pct_here(capsys, "analyze", *paths[:2], paths[1], "--plot", out)
        assert code == 0, err
    assert pdf.read_bytes()[:5] == b"%PDF-"
    text = svg.read_text()
    assert text.startswith("<?xml") and "<svg" in text
    # SVG keeps its text: the names of the classes with negative flips on the per-class axis
    flipped = (np.argmax(logits[0], 1) == labels) & (np.argmax(logits[1], 1) != labels)
    for k, name in enumerate(CLASSES):
        assert (f">{name}</text>" in text) == bool(np.any(flipped & (labels == k))), name
    assert "coinciding models drawn slightly apart" in text


def test_plot_axes_cover_the_data_within_0_to_100():
    from pct_pipeline.analyze.plot import axis_range, spread

    assert axis_range([0.0, 0.0]) == pytest.approx((0.0, 0.56))  # 1-point span, 6% margin
    assert axis_range([98.0, 100.0]) == pytest.approx((97.88, 100.0))
    assert axis_range([20.0, 30.0]) == pytest.approx((19.4, 30.6))
    offsets = spread([(1.0, 2.0), (1.0, 2.0), (5.0, 5.0), (1.05, 2.05)], (10.0, 10.0))
    assert offsets[0] == pytest.approx((0.15, 0.0))
    assert offsets[1] == pytest.approx((-0.075, 0.13), abs=1e-3)  # a third of the circle on
    assert offsets[3] == pytest.approx((-0.075, -0.13), abs=1e-3)
    assert offsets[2] == (0.0, 0.0)


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


def test_stores_of_other_images_are_refused_unless_allowed(data, tmp_path, capsys):
    _, labels, logits, _ = data
    a, b, same = (make_store(tmp_path / f"{name}.zarr", x, labels, images_sha256=digest)
                  for name, x, digest in (("a", logits[0], "a" * 64), ("b", logits[1], "b" * 64),
                                          ("same", logits[2], "a" * 64)))
    code, out, err = pct_here(capsys, "analyze", a, b)
    assert (code, out) == (2, "")
    assert err == (f"pct: error: image digests differ: {a} (images_sha256 aaaaaaaaaaaa) and {b} "
                   f"(bbbbbbbbbbbb) were made from other images; --allow-different-images "
                   f"compares them sample by sample anyway\n")
    code, out, err = pct_here(capsys, "analyze", a, b, "--allow-different-images")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == (f"note: the images of {b} differ from those of {a} "
                                   f"(--allow-different-images): samples are matched by index "
                                   f"only, and sample i need not be the same image in each")
    code, out, _ = pct_here(capsys, "analyze", a, same)
    assert code == 0 and "note:" not in out


def test_class_names_must_agree(data, tmp_path, capsys):
    _, labels, logits, paths = data
    other = make_store(tmp_path / "o.zarr", logits[1], labels, classes=["zero", "one", "deux",
                                                                        "three"])
    code, out, err = pct_here(capsys, "analyze", paths[0], other)
    assert (code, out) == (2, "")
    assert err == (f"pct: error: class names differ: label 2 is 'two' in {paths[0]} and 'deux' "
                   f"in {other}\n")
    unnamed = make_store(tmp_path / "u.zarr", logits[1], labels, classes=None)
    out_json = tmp_path / "r.json"
    code, out, _ = pct_here(capsys, "analyze", paths[0], unnamed, paths[2], "--json", out_json)
    assert code == 0
    note = (f"note: class names unknown for {unnamed}: compared by label index, read as the "
            f"classes of {paths[0]}")
    assert out.count("class names unknown") == 1 and note in out.splitlines()
    assert json.loads(out_json.read_text())["classes"] == CLASSES
    old_unnamed = make_store(tmp_path / "ou.zarr", logits[0], labels, classes=None)
    code, out, _ = pct_here(capsys, "analyze", old_unnamed, unnamed, "--json", "-")
    report = json.loads(out)
    assert report["classes"] is None and report["notes"][-1] == (
        "no input records class names: classes are shown by label number")
    assert {r["name"] for r in report["comparisons"][0]["per_class"]} == {None}


def test_top_classes_sets_the_rows_of_both_tables(data, capsys):
    _, _, _, paths = data
    code, out, _ = pct_here(capsys, "analyze", *paths[:2], "--top-classes", 2)
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("per class, "))
    assert lines[at].startswith(f"per class, {paths[1]} (top 2 of {C} by NF)")
    assert lines[at + 4] == ""  # header, rule, two rows
    code, out, _ = pct_here(capsys, "analyze", *paths[:2], "--top-classes", 0)
    assert code == 0 and "per class, " not in out and "transitions" not in out.split("legend:")[0]

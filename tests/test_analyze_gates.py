"""`pct analyze --gate`: the grammar, and the exit status of the real CLI on real stores whose
numbers are fixed by construction (each model's top-1 prediction is chosen per sample)."""
import json

import numpy as np
import pytest

from conftest import pct
from pct_pipeline.analyze import gates
from pct_pipeline.errors import PctError
from test_cli_analyze import make_store

CLASSES = ["t-shirt_top", "sandal", "bag"]
N, C = 200, 3
LABELS = np.arange(N) % C
OLD_WRONG = np.arange(160, 200)            # old: 160 of 200 right (80%)
NEGATIVE = np.array([0, 3, 6, 9, 1, 4])     # class 0: 4 flips, class 1: 2, class 2: 0
POSITIVE = np.arange(160, 176)              # 16 positive flips: new 170 of 200 right (85%)


def predictions(wrong):
    """Logits [N, C] float32 whose argmax is the label except on the rows `wrong`, where it is
    the next class."""
    predicted = LABELS.copy()
    predicted[wrong] = (LABELS[wrong] + 1) % C
    logits = np.zeros((N, C), np.float32)
    logits[np.arange(N), predicted] = 4.0
    return logits


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("gates")
    new_wrong = np.setdiff1d(np.union1d(OLD_WRONG, NEGATIVE), POSITIVE)
    better_wrong = np.setdiff1d(OLD_WRONG, POSITIVE)  # the same positive flips, no negative
    return {name: make_store(root / f"{name}.zarr", predictions(wrong), LABELS, classes=CLASSES)
            for name, wrong in (("old", OLD_WRONG), ("new", new_wrong),
                                ("better", better_wrong))}


def gate_lines(text):
    """{(gate, store): the words of its line} of a text report's gate table."""
    lines = text[text.index("\ngate "):].strip().splitlines()[2:-1]
    return {(line.split()[0], line.split()[1]): line.split()[2:] for line in lines}


def test_passing_gates_exit_0_with_one_line_each(capsys, stores):
    passing = ["nfr<=3%", "nf<=6", "nf==6", "top1>=old", "top1>=old+5%", "top1>old+4.9%",
               "pfr>=nfr", "pf>=nf+10", "nfi<=20%", "class:sandal.nf<=2",
               "class:t-shirt_top.nfr<=6%", "class:bag.top1>=old", "nfr.ci95_high<=10%",
               "top1.ci95_low>=old.top1-10%", "relative_nfr<=1"]
    code, out, err = pct(capsys, "analyze", stores["old"], stores["new"], "--bootstrap", 200,
                         *[x for g in passing for x in ("--gate", g)])
    assert code == 0, err
    lines = gate_lines(out)
    assert set(lines) == {(g, stores["new"]) for g in passing}
    pinned = {"nfr<=3%": ["3.000%", "<=", "3.000%", "PASS"],  # 6 / 200, at its bound
              "nf<=6": ["6", "<=", "6", "PASS"],
              "top1>=old+5%": ["85.000%", ">=", "85.000%", "PASS"],  # 170/200 vs 160/200 + 5%
              "pfr>=nfr": ["8.000%", ">=", "3.000%", "PASS"],
              "pf>=nf+10": ["16", ">=", "16", "PASS"],
              "nfi<=20%": ["20.000%", "<=", "20.000%", "PASS"],  # 6 of 30 new errors
              "class:sandal.nf<=2": ["2", "<=", "2", "PASS"],
              "class:t-shirt_top.nfr<=6%": ["5.970%", "<=", "6.000%", "PASS"],  # 4 of 67
              "class:bag.top1>=old": ["87.879%", ">=", "80.303%", "PASS"]}  # 58/66, 53/66
    for text, words in pinned.items():
        assert lines[(text, stores["new"])] == words, text
    assert out.rstrip().endswith(f"gates: {len(passing)} of {len(passing)} passed: PASS")


def test_a_failing_gate_exits_1_with_its_line(capsys, stores):
    code, out, err = pct(capsys, "analyze", stores["old"], stores["new"], "--gate", "nf<5",
                         "--gate", "top1>=old", "--gate", "class:t-shirt_top.nf<=3")
    assert code == 1 and err == ""
    lines = gate_lines(out)
    assert lines[("nf<5", stores["new"])] == ["6", "<", "5", "FAIL"]
    assert lines[("top1>=old", stores["new"])] == ["85.000%", ">=", "80.000%", "PASS"]
    assert lines[("class:t-shirt_top.nf<=3", stores["new"])] == ["4", "<=", "3", "FAIL"]
    assert out.rstrip().endswith("gates: 1 of 3 passed: FAIL")


def test_every_new_store_is_gated_and_named(capsys, stores, tmp_path):
    report = tmp_path / "r.json"
    code, out, _ = pct(capsys, "analyze", stores["old"], stores["new"], stores["better"],
                       "--gate", "nf<=3", "--gate", "top1>=old", "--json", report)
    assert code == 1
    lines = gate_lines(out)
    assert lines[("nf<=3", stores["new"])][-1] == "FAIL"
    assert lines[("nf<=3", stores["better"])] == ["0", "<=", "3", "PASS"]
    assert lines[("top1>=old", stores["better"])] == ["88.000%", ">=", "80.000%", "PASS"]
    recorded = json.loads(report.read_text())
    assert recorded["gates_passed"] is False
    assert [(g["new"], g["gate"], g["value"], g["bound"], g["passed"])
            for g in recorded["gates"]] == [
        (stores["new"], "nf<=3", 6, 3.0, False), (stores["new"], "top1>=old", 0.85, 0.8, True),
        (stores["better"], "nf<=3", 0, 3.0, True),
        (stores["better"], "top1>=old", 0.88, 0.8, True)]
    code, _, _ = pct(capsys, "analyze", stores["old"], stores["better"], "--gate", "nf<=3")
    assert code == 0


def test_json_to_stdout_moves_the_table_to_stderr(capsys, stores, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = pct(capsys, "analyze", stores["old"], stores["new"], "--json", "-",
                         "--gate", "nfr<=2%")
    assert code == 1
    report = json.loads(out)
    assert report["comparisons"][0]["negative_flips"] == 6
    assert report["gates"][0]["passed"] is False and report["gates_passed"] is False
    assert "negative flips (NF)" in err and "gates: 0 of 1 passed: FAIL" in err
    assert list(tmp_path.iterdir()) == []  # no file named "-"


@pytest.mark.parametrize("text, message", [
    ("nfr<=", "malformed gate 'nfr<='"),
    ("nfr <= 1% extra", "malformed gate 'nfr <= 1% extra'"),
    ("nfr=1%", "malformed gate 'nfr=1%'"),
    ("class:.nf<=1", "malformed gate 'class:.nf<=1'"),
    ("foo<=1", "unknown metric 'foo'"),
    ("nfr.ci99_high<=1%", "unknown statistic 'ci99_high' of nfr"),
    ("top5.ci95_high<=1%", "top5 has no bootstrap interval"),
    ("top1.<=1%", "unknown statistic '' of top1"),
    ("type1<=1%", "type1 counts samples; bound it by a number of samples, not '1%'"),
    ("class:bag.nfr.ci95_high<=1%", "per-class values have no bootstrap interval"),
    ("class:bag.nfi<=1%", "nfi has no per-class value"),
    ("nf<=old", "'old' has no nf"),
    ("nfr<=nf", "nfr is a fraction and nf a count"),
    ("nf<=old.nf", "'old' has no nf"),
    ("nf<=1%", "nf counts samples; bound it by a number of samples, not '1%' (or bound nfr, "
               "its rate)"),
    ("nfr<=2", "more than 1 (write 2% for a percentage)"),
    ("nfr<=nan", "'nan' is not a finite number"),
    ("top1>=old-1e400%", "'1e400%' is not a finite number"),
])
def test_malformed_gates_name_themselves(text, message):
    with pytest.raises(PctError) as error:
        gates.parse(text)
    assert message in str(error.value) and f"{text!r}" in str(error.value)


def test_the_grammar():
    parse = gates.parse
    Term, Gate = gates.Term, gates.Gate
    assert parse("nfr<=1.5%") == Gate("nfr<=1.5%", "<=", Term("nfr"), None, pytest.approx(0.015))
    assert parse(" top1 >= old - 0.2% ") == Gate(
        " top1 >= old - 0.2% ", ">=", Term("top1"), Term("top1", old=True), pytest.approx(-0.002))
    assert parse("nfr.ci95_high<=2%").left == Term("nfr", "ci95_high")
    assert parse("top1.ci95_low>=old").right == Term("top1", "ci95_low", old=True)
    assert parse("top1.ci95_low>=old.top1").right == Term("top1", None, old=True)
    assert parse("pfr>=nfr").right == Term("nfr")
    assert parse("negative_flips<=3").left == Term("nf")  # the JSON's names are aliases
    assert parse("nf<=1e2").offset == 100 and parse("nfr<=.5").offset == 0.5
    g = parse("class:t-shirt_top.nf<=10")
    assert (g.klass, g.left, g.offset) == ("t-shirt_top", Term("nf"), 10)
    assert parse("class:a.b c.nfr<=3%").klass == "a.b c"  # names may hold dots and spaces
    assert parse("class:3.top1>=old").right == Term("top1", old=True)
    assert gates.resolve_class(parse("class:sandal.nf<=1"), CLASSES, 3) == 1
    assert gates.resolve_class(parse("class:2.nf<=1"), None, 3) == 2
    with pytest.raises(PctError, match="unknown class 'sandle'; did you mean sandal"):
        gates.resolve_class(parse("class:sandle.nf<=1"), CLASSES, 3)
    with pytest.raises(PctError, match="use a label number from 0 to 2"):
        gates.resolve_class(parse("class:3.nf<=1"), None, 3)


def test_unknown_class_and_malformed_gate_exit_2_before_any_output(capsys, stores):
    for text, message in (("class:sandle.nfr<=3%", "unknown class 'sandle'; did you mean "
                                                    "sandal?"),
                          ("nfr<<1%", "malformed gate 'nfr<<1%'")):
        code, out, err = pct(capsys, "analyze", stores["old"], stores["new"], "--gate", text)
        assert (code, out) == (2, "") and err.count("\n") == 1 and message in err, err

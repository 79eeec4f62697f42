"""Bad input to `pct analyze`: one line naming the problem and the bad value, a non-zero exit,
every existing file byte-identical (tests/faults.py runs the cases)."""
from faults import (C, NOSPACE, analyze, assert_nothing_left, case_tests)


CASES = [
    C("analyze", "OLD missing", lambda w: analyze(w, w.pred, old=w.root / "old.zarr"),
      lambda w: ["not found", f"{w.root / 'old.zarr'}"]),
    C("analyze", "NEW is another project's Zarr", lambda w: analyze(w, w.foreign),
      lambda w: ["not a pct store", f"{w.foreign}"]),
    C("analyze", "NEW incomplete", lambda w: analyze(w, w.incomplete),
      lambda w: [f"incomplete store {w.incomplete}"]),
    C("analyze", "NEW whose creation was cut short", lambda w: analyze(w, w.stub),
      lambda w: [f"store {w.stub} lacks array"]),
    C("analyze", "NEW is a 2-view teacher cache", lambda w: analyze(w, w.val_cache),
      lambda w: [f"{w.val_cache} is a teacher-cache store with 2 views"]),
    C("analyze", "NEW with a corrupted chunk", lambda w: analyze(w, w.corrupt_pred),
      lambda w: [f"store {w.corrupt_pred}: array 'logits' is unreadable or corrupted"]),
    C("analyze", "NEW of another data set", lambda w: analyze(w, w.pred_train),
      lambda w: ["sample counts differ", f"{w.pred} has 80", f"{w.pred_train} has 120"]),
    C("analyze", "NEW with 7 classes", lambda w: analyze(w, w.pred7),
      lambda w: ["class counts differ", f"{w.pred7} has 7"]),
    C("analyze", "NEW unreadable", lambda w: analyze(w, w.secret_store),
      lambda w: [f"{w.secret_store}", "is not readable"], unprivileged=True),
    C("analyze", "NEW is an empty file", lambda w: analyze(w, w.empty_pt),
      lambda w: ["neither a pct store", f"{w.empty_pt}"]),
    C("analyze", "NEW is a truncated .result", lambda w: analyze(w, w.trunc_pt),
      lambda w: ["unreadable .result file", f"{w.trunc_pt}"]),
    C("analyze", "NEW is a checkpoint, not a .result", lambda w: analyze(w, w.teacher),
      lambda w: [f"{w.teacher} is not a .result file"]),
    C("analyze", "--json in a missing folder",
      lambda w: analyze(w, w.pred, "--json", w.root / "nowhere" / "r.json"),
      lambda w: ["output folder does not exist", f"{w.root / 'nowhere'}"]),
    C("analyze", "--json is a folder", lambda w: analyze(w, w.pred, "--json", w.folder),
      lambda w: ["--json", f"{w.folder}", "is a directory"]),
    C("analyze", "--json folder not writable",
      lambda w: analyze(w, w.pred, "--json", w.place / "r.json"),
      lambda w: ["cannot write", f"{w.place / 'r.json'}"], where="readonly"),
    C("analyze", "disk full when writing --json",
      lambda w: analyze(w, w.pred, "--json", w.place / "r.json"),
      lambda w: ["cannot write", f"{w.place / 'r.json'}", NOSPACE], where="filled",
      after=lambda w, forks: assert_nothing_left(w.place, but=["filler"])),
    C("analyze", "--json names an existing file", lambda w: analyze(w, w.pred, "--json", w.teacher),
      lambda w: ["--json", f"{w.teacher}", "exists", "--overwrite"]),
    C("analyze", "--plot names an existing file", lambda w: analyze(w, w.pred, "--plot", w.teacher),
      lambda w: ["--plot", f"{w.teacher}", "exists", "--overwrite"]),
    C("analyze", "--bootstrap -1", lambda w: analyze(w, w.pred, "--bootstrap", -1),
      lambda w: ["--bootstrap", "-1 is not in the range x>=0"]),

]


test_bad_input_is_one_line_and_damages_nothing, test_a_plain_process_prints_the_same_line = \
    case_tests(CASES, 'analyze: NEW of another data set')

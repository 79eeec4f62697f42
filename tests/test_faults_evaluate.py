"""Bad input to `pct evaluate`: one line naming the problem and the bad value, a non-zero exit,
every existing file byte-identical (tests/faults.py runs the cases)."""
from faults import (C, NOSPACE, assert_nothing_left, evaluate, case_tests)


CASES = [
    C("evaluate", "--checkpoint missing", lambda w: evaluate(w, checkpoint=w.missing_pt),
      lambda w: ["checkpoint not found", f"{w.missing_pt}"]),
    C("evaluate", "--checkpoint is a folder", lambda w: evaluate(w, checkpoint=w.folder_pt),
      lambda w: ["checkpoint is a folder", f"{w.folder_pt}"]),
    C("evaluate", "--checkpoint empty", lambda w: evaluate(w, checkpoint=w.empty_pt),
      lambda w: ["unreadable checkpoint", f"{w.empty_pt}"]),
    C("evaluate", "--checkpoint truncated", lambda w: evaluate(w, checkpoint=w.trunc_pt),
      lambda w: ["unreadable checkpoint", f"{w.trunc_pt}"]),
    C("evaluate", "--checkpoint unreadable", lambda w: evaluate(w, checkpoint=w.secret_pt),
      lambda w: [f"{w.secret_pt}", "is not readable"], unprivileged=True),
    C("evaluate", "--checkpoint without its architecture",
      lambda w: evaluate(w, checkpoint=w.bare_pt),
      lambda w: [f"{w.bare_pt} does not name its architecture", "give --arch"]),
    C("evaluate", "--arch contradicting the checkpoint's",
      lambda w: evaluate(w, "--arch", "cnn_wide"),
      lambda w: [f"--arch cnn_wide contradicts checkpoint {w.teacher}", "cnn_small model"]),
    C("evaluate", "--arch of a bare state dict that does not fit it",
      lambda w: evaluate(w, "--arch", "cnn_wide", "--allow-unnamed-classes", checkpoint=w.bare_pt),
      lambda w: [f"checkpoint {w.bare_pt} does not fit cnn_wide"]),
    C("evaluate", "--checkpoint whose weights are of another architecture",
      lambda w: evaluate(w, checkpoint=w.lying_pt),
      lambda w: [f"checkpoint {w.lying_pt} does not fit cnn_small"]),
    C("evaluate", "--checkpoint with 7 classes, data with 10",
      lambda w: evaluate(w, checkpoint=w.seven_pt),
      lambda w: [f"checkpoint {w.seven_pt} has 7 classes, the data {w.val} has 10"]),
    C("evaluate", "--checkpoint with NaN weights", lambda w: evaluate(w, checkpoint=w.nan_pt),
      lambda w: [f"checkpoint {w.nan_pt} gives NaN/inf logits for sample 0 of {w.val}"]),
    C("evaluate", "--data truncated .beton", lambda w: evaluate(w, data=w.trunc_beton),
      lambda w: [f"truncated .beton file: {w.trunc_beton}"]),
    C("evaluate", "--data missing", lambda w: evaluate(w, data=w.missing),
      lambda w: ["dataset file not found", f"{w.missing}"]),
    C("evaluate", "--out is an existing store", lambda w: evaluate(w, out=w.pred),
      lambda w: [f"{w.pred} exists (use --overwrite to replace it)"]),
    C("evaluate", "--out is another project's Zarr", lambda w: evaluate(w, out=w.foreign),
      lambda w: [f"{w.foreign} exists (use --overwrite to replace it)"]),
    C("evaluate", "--out folder not writable", lambda w: evaluate(w, out=w.place / "p.zarr"),
      lambda w: ["cannot write", f"{w.place / 'p.zarr'}"], where="readonly"),
    C("evaluate", "disk full", lambda w: evaluate(w, out=w.place / "p.zarr"),
      lambda w: ["cannot write", f"{w.place / 'p.zarr'}", NOSPACE], where="filled",
      after=lambda w, forks: assert_nothing_left(w.place, but=["filler"])),
    C("evaluate", "--batch-size 0", lambda w: evaluate(w, "-b", 0),
      lambda w: ["--batch-size", "0 is not in the range x>=1"]),

]


test_bad_input_is_one_line_and_damages_nothing, test_a_plain_process_prints_the_same_line = \
    case_tests(CASES, 'evaluate: --checkpoint without its architecture')

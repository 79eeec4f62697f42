"""Bad input to `pct analyze`: one line naming the problem and the bad value, a non-zero exit,
every existing file byte-identical (tests/faults.py runs the cases)."""
import shutil

import pytest

from faults import C, NOSPACE, assert_nothing_left, case_tests


def analyze(w, new, *extra, old=None):
    return ["analyze", old or w.pred, new, "--bootstrap", 100, *extra]


@pytest.fixture(scope="module", autouse=True)
def other_data(world):
    """Copies of the validation predictions that record other images or other class names
    (label 3 and 4 swapped), and an existing figure file."""
    import zarr

    swapped = [str(c) for c in range(10)]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    for name, change in (("pred_other_images", {"images_sha256": "0" * 64}),
                         ("pred_other_classes", {"classes": swapped})):
        path = world.root / f"{name}.zarr"
        if not path.exists():
            shutil.copytree(world.pred, path)
            group = zarr.open_group(str(path), mode="r+")
            group.attrs["dataset"] = {**group.attrs["dataset"], **change}
    (world.root / "existing.png").write_bytes(b"an earlier figure\n")


def gate(w, text, *extra):
    return analyze(w, w.pred, "--gate", text, *extra)


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
      lambda w: [f"store {w.corrupt_pred}: array 'logits', view 0, rows 0-31: object "
                 f"logits/c/0/0/0 was altered after it was written"]),
    C("analyze", "NEW with a deleted chunk", lambda w: analyze(w, w.deleted_pred),
      lambda w: [f"store {w.deleted_pred}: array 'logits', view 0, rows 32-63: object "
                 f"logits/c/0/1/0 is missing"]),
    C("analyze", "OLD whose labels chunk is deleted", lambda w: analyze(w, w.pred, old=w.no_labels),
      lambda w: [f"store {w.no_labels}: array 'labels': object labels/c/0 is missing"]),
    C("analyze", "NEW of another data set", lambda w: analyze(w, w.pred_train),
      lambda w: ["sample counts differ", f"{w.pred} has 80", f"{w.pred_train} has 120"]),
    C("analyze", "NEW with 7 classes", lambda w: analyze(w, w.pred7),
      lambda w: ["class counts differ", f"{w.pred7} has 7"]),
    C("analyze", "NEW of other images (same labels)",
      lambda w: analyze(w, w.root / "pred_other_images.zarr"),
      lambda w: ["image digests differ", f"{w.pred} (images_sha256 ",
                 f"{w.root / 'pred_other_images.zarr'} (000000000000)",
                 "--allow-different-images"]),
    C("analyze", "NEW whose class names differ",
      lambda w: analyze(w, w.root / "pred_other_classes.zarr"),
      lambda w: ["class names differ: label 3 is '3' in", f"{w.pred} and '4' in "
                 f"{w.root / 'pred_other_classes.zarr'}"]),
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
    C("analyze", "--plot names an existing file",
      lambda w: analyze(w, w.pred, "--plot", w.root / "existing.png"),
      lambda w: ["--plot", f"{w.root / 'existing.png'}", "exists", "--overwrite"]),
    C("analyze", "--plot of an unknown format",
      lambda w: analyze(w, w.pred, "--plot", w.root / "report.jpg"),
      lambda w: [f"--plot {w.root / 'report.jpg'}: unknown figure format '.jpg'",
                 ".png, .pdf, .svg"]),
    C("analyze", "--bootstrap -1", lambda w: analyze(w, w.pred, "--bootstrap", -1),
      lambda w: ["--bootstrap -1: use 0 (no intervals) or at least 100 resamples"]),
    C("analyze", "--bootstrap 1 (an interval of one resample)",
      lambda w: analyze(w, w.pred, "--bootstrap", 1),
      lambda w: ["--bootstrap 1: use 0 (no intervals) or at least 100 resamples"]),
    C("analyze", "--type1-max nan", lambda w: analyze(w, w.pred, "--type1-max", "nan"),
      lambda w: ["--type1-max", "'nan' is not a finite number"]),
    C("analyze", "--type2-min inf", lambda w: analyze(w, w.pred, "--type2-min", "inf"),
      lambda w: ["--type2-min", "'inf' is not a finite number"]),
    C("analyze", "--type1-max above 1", lambda w: analyze(w, w.pred, "--type1-max", "1.5"),
      lambda w: ["--type1-max must be a probability change in [0, 1], got 1.5"]),
    C("analyze", "a gate without a bound", lambda w: gate(w, "nfr<="),
      lambda w: ["malformed gate 'nfr<='", "METRIC OP BOUND"]),
    C("analyze", "a gate with a reversed operator", lambda w: gate(w, "nfr=<1%"),
      lambda w: ["malformed gate 'nfr=<1%'"]),
    C("analyze", "a gate on an unknown metric", lambda w: gate(w, "nrf<=1%"),
      lambda w: ["gate 'nrf<=1%': unknown metric 'nrf'"]),
    C("analyze", "a gate on an unknown class", lambda w: gate(w, "class:sandal.nfr<=3%"),
      lambda w: ["gate 'class:sandal.nfr<=3%': unknown class 'sandal'"]),
    C("analyze", "a gate bounding a count by a percentage", lambda w: gate(w, "nf<=2%"),
      lambda w: ["gate 'nf<=2%'", "nf counts samples", "'2%'"]),
    C("analyze", "a gate bounding a fraction by 1.5", lambda w: gate(w, "nfr<=1.5"),
      lambda w: ["gate 'nfr<=1.5'", "more than 1", "write 1.5%"]),
    C("analyze", "a gate bound of nan", lambda w: gate(w, "nfr<=nan"),
      lambda w: ["gate 'nfr<=nan': 'nan' is not a finite number"]),
    C("analyze", "a gate bound of 1e999%", lambda w: gate(w, "nfr<=1e999%"),
      lambda w: ["gate 'nfr<=1e999%': '1e999%' is not a finite number"]),
    C("analyze", "a gate on OLD's negative flips", lambda w: gate(w, "nf<=old"),
      lambda w: ["gate 'nf<=old': 'old' has no nf"]),
    C("analyze", "an interval gate with --bootstrap 0",
      lambda w: gate(w, "nfr.ci95_high<=2%", "--bootstrap", 0),
      lambda w: ["gate 'nfr.ci95_high<=2%' needs bootstrap intervals: --bootstrap 0"]),
    C("analyze", "--gallery without --images",
      lambda w: analyze(w, w.pred, "--gallery", w.root / "g.png"),
      lambda w: ["--gallery and --images go together"]),
    C("analyze", "--gallery from a .beton of other images",
      lambda w: analyze(w, w.pred_train, "--images", w.train_other, "--gallery",
                        w.root / "g.png", old=w.pred_train),
      lambda w: ["image digests differ", f"{w.pred_train} (images_sha256 ",
                 f"{w.train_other} ("]),
    C("analyze", "--gallery from a .beton whose class names differ",
      lambda w: analyze(w, w.pred, "--images", w.val_shifted, "--gallery", w.root / "g.png"),
      lambda w: ["class names differ: label 3 is '3' in", f"'other3' in {w.val_shifted}"]),
    C("analyze", "--gallery from a .beton of another data set",
      lambda w: analyze(w, w.pred, "--images", w.train, "--gallery", w.root / "g.png"),
      lambda w: ["sample counts differ", f"{w.pred} has 80", f"{w.train} has 120"]),
    C("analyze", "--images is not a .beton",
      lambda w: analyze(w, w.pred, "--images", w.text_beton, "--gallery", w.root / "g.png"),
      lambda w: ["not a readable .beton file", f"{w.text_beton}"]),
]


test_bad_input_is_one_line_and_damages_nothing, test_a_plain_process_prints_the_same_line = \
    case_tests(CASES, 'analyze: NEW of another data set')

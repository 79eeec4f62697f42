"""Bad input to `pct write-dataset`: one line naming the problem and the bad value, a non-zero
exit, every existing file byte-identical (tests/faults.py runs the cases)."""
from faults import (C, NOSPACE, assert_nothing_left, write_dataset, case_tests)


CASES = [
    C("write-dataset", "an image too thin for --max-resolution (3000 x 2 px)",
      lambda w: write_dataset(w.thin_tree, w.root / "o.beton"),
      lambda w: [f"cannot store image {w.thin_tree}/0/thin.png", "3000x2 px is too thin",
                 "--skip-bad"]),
    C("write-dataset", "a decompression bomb (15000 x 12000 px PNG)",
      lambda w: write_dataset(w.bomb_tree, w.root / "o.beton"),
      lambda w: [f"cannot store image {w.bomb_tree}/0/big.png", "180000000 pixels"]),
    C("write-dataset", "float pixels outside 0-1 (a TIFF of 3.5)",
      lambda w: write_dataset(w.hot_tree, w.root / "o.beton"),
      lambda w: [f"cannot store image {w.hot_tree}/0/hot.tiff",
                 "float pixels from 3.5 to 3.5: only the range 0-1 is known"]),
    C("write-dataset", "one class folder",
      lambda w: write_dataset(w.one_tree, w.root / "o.beton"),
      lambda w: [f"{w.one_tree} holds one class folder (0)", "at least two"]),
    C("write-dataset", "source folder missing",
      lambda w: write_dataset(w.root / "no_such_folder", w.root / "o.beton"),
      lambda w: ["dataset folder not found", f"{w.root / 'no_such_folder'}"]),
    C("write-dataset", "source is a file",
      lambda w: write_dataset(w.train, w.root / "o.beton"),
      lambda w: ["dataset source is not a folder", f"{w.train}"]),
    C("write-dataset", "source folder unreadable",
      lambda w: write_dataset(w.secret_tree, w.root / "o.beton"),
      lambda w: [f"{w.secret_tree}", "is not readable"], unprivileged=True),
    C("write-dataset", "output folder missing",
      lambda w: write_dataset(w.tree, w.root / "nowhere" / "o.beton"),
      lambda w: ["output folder does not exist", f"{w.root / 'nowhere'}"]),
    C("write-dataset", "output is a folder",
      lambda w: write_dataset(w.tree, w.folder),
      lambda w: ["output is a folder", f"{w.folder}"]),
    C("write-dataset", "output exists",
      lambda w: write_dataset(w.tree, w.train),
      lambda w: [f"{w.train} exists (use --overwrite to replace it)"]),
    C("write-dataset", "output folder not writable",
      lambda w: write_dataset(w.tree, w.place / "o.beton"),
      lambda w: ["cannot write", f"{w.place / 'o.beton'}"], where="readonly"),
    C("write-dataset", "disk full during the write",
      lambda w: write_dataset(w.tree, w.place / "o.beton"),
      lambda w: ["cannot write", f"{w.place / 'o.beton'}", NOSPACE], where="full",
      after=lambda w, forks: assert_nothing_left(w.place)),
    C("write-dataset", "--max-resolution 0",
      lambda w: write_dataset(w.tree, w.root / "o.beton", "--max-resolution", 0),
      lambda w: ["--max-resolution", "0 is not in the range 8<=x<=65535"]),
    C("write-dataset", "--jpeg-quality 101",
      lambda w: write_dataset(w.tree, w.root / "o.beton", "--jpeg-quality", 101),
      lambda w: ["--jpeg-quality", "101 is not in the range 1<=x<=100"]),
    C("write-dataset", "unknown option",
      lambda w: write_dataset(w.tree, w.root / "o.beton", "--quality", 3),
      lambda w: ["No such option '--quality'"]),

]


test_bad_input_is_one_line_and_damages_nothing, test_a_plain_process_prints_the_same_line = \
    case_tests(CASES, 'write-dataset: output is a folder')

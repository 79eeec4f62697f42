"""What makes inputs comparable sample by sample, checked before any number is computed.

Every input says what data it holds: its labels, and (stores written by this package) the
digest of the encoded images (`attrs["dataset"]["images_sha256"]`) and the class names in
label order (`attrs["dataset"]["classes"]`). Inputs whose sample counts, class counts, labels,
image digests or class names differ are refused in one line naming the first difference;
`--allow-different-images` lets differing image digests through. Where an input records no
digest or no names, the comparison goes on and says, once, what it could not check: those
notes are returned, to be printed with the report (nothing is printed before every check
has passed, so that a refusal is the only line).
"""
from typing import NamedTuple

import numpy as np

from ..errors import PctError


class Record(NamedTuple):
    """What an input says about its data: a path, the image digest and the class names
    (None where it records none)."""
    path: str
    images_sha256: str | None
    classes: list | None


def check_aligned(models):
    """Refuse inputs (run.Predictions) that cannot be compared sample by sample."""
    first = models[0]
    n, c = first.logits.shape
    if n == 0:
        raise PctError(f"{first.path} holds no samples")
    bad = np.flatnonzero((first.labels < 0) | (first.labels >= c))
    if bad.size:
        raise PctError(f"{first.path}: label {first.labels[bad[0]]} of sample {bad[0]} is "
                       f"outside [0, {c})")
    for m in models[1:]:
        check_count(first, m.path, m.labels)
        if m.logits.shape[1] != c:
            raise PctError(f"class counts differ: {first.path} has {c}, {m.path} has "
                           f"{m.logits.shape[1]}")


def check_count(first, path, labels):
    """Refuse `labels` (int64 [N], of the input at `path`) of another length than `first`'s."""
    if len(labels) != len(first.labels):
        raise PctError(f"sample counts differ: {first.path} has {len(first.labels)}, {path} "
                       f"has {len(labels)}")


def check_labels(first, path, labels):
    """Refuse `labels` (int64 [N], of the input at `path`) unless equal to `first`'s."""
    check_count(first, path, labels)
    differ = np.flatnonzero(labels != first.labels)
    if differ.size:
        i = differ[0]
        raise PctError(f"labels differ: {first.path} and {path} first differ at sample "
                       f"{i} ({first.labels[i]} vs {labels[i]})")


def check_images(records, allow_different):
    """Notes (list of str) on the images the `records` were made from; PctError naming the
    first two inputs whose image digests differ, unless `allow_different`."""
    known = [r for r in records if r.images_sha256]
    other = [r for r in known[1:] if r.images_sha256 != known[0].images_sha256]
    if other and not allow_different:
        a, b = known[0], other[0]
        raise PctError(f"image digests differ: {a.path} (images_sha256 {a.images_sha256[:12]}) "
                       f"and {b.path} ({b.images_sha256[:12]}) were made from other images; "
                       f"--allow-different-images compares them sample by sample anyway")
    notes = []
    if other:
        notes.append(f"the images of {', '.join(r.path for r in other)} differ from those of "
                     f"{known[0].path} (--allow-different-images): samples are matched by "
                     f"index only, and sample i need not be the same image in each")
    unknown = [r.path for r in records if not r.images_sha256]
    if unknown:
        notes.append(f"cannot check that the inputs hold the same images: "
                     f"{', '.join(unknown)} record{'s' if len(unknown) == 1 else ''} no "
                     f"image digest")
    return notes


def check_classes(records, num_classes):
    """(class names in label order or None, notes): the names the records agree on. PctError
    naming the first label whose names differ, or a record whose names do not fit
    `num_classes`."""
    for r in records:
        if r.classes is not None and len(r.classes) != num_classes:
            raise PctError(f"{r.path} records {len(r.classes)} class names for "
                           f"{num_classes} classes")
    named = [r for r in records if r.classes is not None]
    if not named:
        return None, ["no input records class names: classes are shown by label number"]
    first = named[0]
    for r in named[1:]:
        differ = [k for k, (a, b) in enumerate(zip(first.classes, r.classes)) if a != b]
        if differ:
            k = differ[0]
            raise PctError(f"class names differ: label {k} is {first.classes[k]!r} in "
                           f"{first.path} and {r.classes[k]!r} in {r.path}")
    unnamed = [r.path for r in records if r.classes is None]
    notes = [f"class names unknown for {', '.join(unnamed)}: compared by label index, read "
             f"as the classes of {first.path}"] if unnamed else []
    return list(first.classes), notes

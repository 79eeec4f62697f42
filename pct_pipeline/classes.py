"""Class names, in label order: the one check that two artifacts mean the same classes by the
same labels (a data set, a store, a checkpoint)."""
from .errors import PctError


def first_difference(ours, theirs):
    """(label, our name, their name) of the first label the two lists of class names name
    differently (a list shorter than the other has None there), or None when they agree or
    either side has no names."""
    if not ours or not theirs:
        return None
    for label in range(max(len(ours), len(theirs))):
        a = ours[label] if label < len(ours) else None
        b = theirs[label] if label < len(theirs) else None
        if a != b:
            return label, a, b
    return None


def check_same(ours, theirs, what_ours, what_theirs):
    """PctError naming the first differing label and both names unless the two lists agree
    (see `first_difference`): the labels of one would not mean the classes of the other."""
    found = first_difference(ours, theirs)
    if found is not None:
        label, a, b = found
        raise PctError(f"{what_theirs} has class {b!r} at label {label} where {what_ours} has "
                       f"{a!r}: the labels would not mean the same classes")

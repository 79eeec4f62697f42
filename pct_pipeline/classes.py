"""Class names, in label order: the one check that two artifacts mean the same classes by the
same labels (a data set, a store, a checkpoint)."""
from .errors import PctError


def first_difference(ours, theirs):
    """(label, our name, their name) of the first label the two lists of class names name
    differently, or None when they agree on every label both have (how many classes each
    has is the class counts' check) or either side has no names."""
    if not ours or not theirs:
        return None
    for label, (a, b) in enumerate(zip(ours, theirs)):
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

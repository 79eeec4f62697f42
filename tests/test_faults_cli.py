"""Bad input to the `pct` group itself and `pct models`: one line naming the problem and the bad
value, a non-zero exit, every existing file byte-identical (tests/faults.py runs the cases)."""
from faults import (C, case_tests)


CASES = [
    C("models", "unknown architecture", lambda w: ["models", "cnn_tiny"],
      lambda w: ["unknown architecture 'cnn_tiny'"]),
    C("pct", "misspelt command", lambda w: ["trian"], lambda w: ["No such command 'trian'"]),
]


test_bad_input_is_one_line_and_damages_nothing, _ = case_tests(CASES)

"""Bad input to the `pct` group itself and `pct models`: one line naming the problem and the bad value, a non-zero exit,
every existing file byte-identical (tests/faults.py runs the cases)."""
import pytest

from faults import (C, run_case)


CASES = [
    C("models", "unknown architecture", lambda w: ["models", "cnn_tiny"],
      lambda w: ["unknown architecture 'cnn_tiny'"]),
    C("pct", "misspelt command", lambda w: ["trian"], lambda w: ["No such command 'trian'"]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_and_damages_nothing(case, world, forks):
    run_case(case, world, forks)

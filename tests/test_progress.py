"""The progress object: lines on a stream that is not a terminal, rank 0 only, counts of every
process through `counter`; a bad PCT_PROGRESS_SECONDS is one line naming it."""
import io
import re

import pytest

from pct_pipeline.errors import PctError
from pct_pipeline.progress import Progress, clock

LINE = re.compile(r"^step: (\d+)/(\d+) images \((\d+\.\d)%\), \d+ images/s, ETA ((\d+:)?\d\d:\d\d|\?)$")


def test_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.setenv("PCT_PROGRESS_SECONDS", "0")
    stream = io.StringIO()
    with Progress(10, "step", stream=stream) as progress:
        for _ in range(5):
            progress.update(2)
    lines = stream.getvalue().splitlines()
    assert [LINE.match(line).group(1, 2) for line in lines] == [
        ("2", "10"), ("4", "10"), ("6", "10"), ("8", "10"), ("10", "10")]
    assert lines[-1].startswith("step: 10/10 images (100.0%), ") and lines[-1].endswith(
        "ETA 00:00")


def test_lines_are_spaced_by_the_interval(monkeypatch):
    monkeypatch.setenv("PCT_PROGRESS_SECONDS", "3600")
    stream = io.StringIO()
    with Progress(10, "step", stream=stream) as progress:
        progress.update(10)
    assert stream.getvalue() == "" and progress.own == 10


def test_only_the_enabled_process_prints_and_counter_speaks_for_all(monkeypatch):
    monkeypatch.setenv("PCT_PROGRESS_SECONDS", "0")
    quiet, loud = io.StringIO(), io.StringIO()
    Progress(8, "step", enabled=False, stream=quiet).update(3)
    with Progress(20, "step", counter=lambda own: own + 7, stream=loud) as progress:
        progress.update(3)
    assert quiet.getvalue() == ""
    assert loud.getvalue().startswith("step: 10/20 images (50.0%), ")


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_interval_is_named(monkeypatch, value):
    monkeypatch.setenv("PCT_PROGRESS_SECONDS", value)
    with pytest.raises(PctError, match=f"PCT_PROGRESS_SECONDS must be a number of seconds >= 0, "
                                       f"got '{value}'"):
        Progress(1, "step", stream=io.StringIO())


def test_clock():
    assert (clock(None), clock(float("inf")), clock(0), clock(59.6), clock(3725)) == (
        "?", "?", "00:00", "00:59", "1:02:05")

"""Every `pct` command line written in README.md and docs/*.md names a real command and
real options of it, so the documentation cannot drift from the command line unnoticed (the
recipes/ files are checked by the config loader itself, which refuses unknown keys)."""
import re
import shlex
from pathlib import Path

import click
import pytest

from pct_pipeline import cli
from pct_pipeline.options import option_name

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(?:bash|sh)?\n(.*?)```", re.S)
START = re.compile(r"(?:^|\s)(?:pct|-m pct_pipeline)\s+([a-z-]+)(.*)")


def command_lines(text):
    """(command, [tokens]) of every pct invocation in the fenced shell blocks of `text`."""
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
            match = START.search(line)
            if match and match.group(1) in cli.COMMANDS:
                tokens = shlex.split(match.group(2), comments=True)
                ends = [i for i, t in enumerate(tokens) if t in {"|", "&&", ";", ">", "2>&1"}]
                yield match.group(1), tokens[:ends[0]] if ends else tokens


def known_options(name):
    command = cli.LazyGroup().get_command(None, name)
    names = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts + param.secondary_opts)
    return names


CASES = [(path.name, cmd, tokens) for path in DOCS for cmd, tokens in command_lines(path.read_text())]


def test_the_docs_hold_commands_of_every_stage():
    assert {cmd for _, cmd, _ in CASES} >= {"write-dataset", "precompute-teachers", "train",
                                            "evaluate", "analyze"}


@pytest.mark.parametrize("doc,command,tokens", CASES,
                         ids=[f"{d}:{c}:{i}" for i, (d, c, _) in enumerate(CASES)])
def test_documented_options_exist(doc, command, tokens):
    options = known_options(command)
    for token in tokens:
        if token.startswith("--"):
            flag = "--" + option_name(token[2:].split("=", 1)[0])
            assert flag in options, f"{doc}: pct {command} has no option {token}"

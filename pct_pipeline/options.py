"""Option spellings and values shared by the commands; imports click only (no torch).

`option_name` is the group's token normaliser: `--kd_alpha` is read as `--kd-alpha`, so every
option is declared once, with dashes, and the original underscore spellings still work.
`parse_arch_path` reads the ARCH=CHECKPOINT values of --teacher, --online-teacher and
--bct-old-model; `Finite` is a float option that refuses NaN and infinities; `parse_kwargs`
reads KEY=VALUE constructor arguments. `with_config` gives a command --config FILE (option
values from YAML, checked by the options' own types, overridden by the command line) and
--print-config; yaml is imported only when a file is read or printed.
"""
import ast
import math
import re

import click

from .errors import PctError

# What an architecture name looks like (torchvision's and this package's; timm's as timm:NAME,
# where a mistaken pretrained tag ".TAG" still reads as a name, to be refused by name): the part
# before the first "=" of a value is an architecture only if it looks like one.
ARCH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|timm:[A-Za-z0-9_.-]+")


def option_name(token):
    """click's token_normalize_func: an option name (its `--` already removed) with
    underscores read as dashes. click also passes Choice values through it; `Choice` below
    opts out of that, so choice values keep their exact spelling."""
    return token.replace("_", "-")


class Choice(click.Choice):
    """A click.Choice matched and shown with its own spelling (`all_pass`), untouched by
    the group's option-name normalisation."""

    def normalize_choice(self, choice, ctx):
        return super().normalize_choice(choice, None)


class Finite(click.FloatRange):
    """A float option within [min, max] (either open with min_open / max_open) that refuses
    NaN and infinities, which would pass a plain range check (NaN compares false)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def allow_unnamed_classes(command):
    """The --allow-unnamed-classes flag of the commands that load checkpoints of old models."""
    return click.option(
        "--allow-unnamed-classes", is_flag=True,
        help="Accept checkpoints that record no class names (bare state dicts, the original "
        "research code's, timm's), taking label i to mean the data's class i; without it they "
        "are refused, since a different class order would go unnoticed.")(command)


def parse_kwargs(values, option="--model-kwargs"):
    """((key, value), ...) of KEY=VALUE strings; a value is read as a Python literal (int,
    float, bool, None, str, tuple, list) where it is one ("16", "true", "(32, 32)"), else kept
    as the string."""
    words = {"true": True, "false": False, "none": None}
    out = []
    for value in values:
        key, sep, raw = (part.strip() for part in str(value).partition("="))
        if not sep or not key.isidentifier():
            raise PctError(f"{option} expects KEY=VALUE, got {value!r}")
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            parsed = words.get(raw.lower(), raw)
        out.append((key, parsed))
    return tuple(out)


def parse_arch_path(value, option, require_arch=True):
    """(arch, path) of an `ARCH=PATH` value of `option` (e.g. "--teacher"), split at the first
    "=" with whitespace stripped: "resnet18=/runs/lr=0.1/c.pt" -> ("resnet18",
    "/runs/lr=0.1/c.pt").

    With `require_arch=False` a bare PATH is accepted too and gives (None, PATH); so is a path
    that holds "=" itself ("/runs/lr=0.1/c.pt"), recognised because the part before its first
    "=" is not an architecture name (a name is letters, digits and underscores, or timm:NAME:
    ARCH_NAME). A missing or malformed part raises a one-line PctError naming `option` and
    `value`.
    """
    form = "ARCH=CHECKPOINT" if require_arch else "[ARCH=]CHECKPOINT"
    text = str(value).strip()
    arch, sep, path = (part.strip() for part in text.partition("="))
    if sep and ARCH_NAME.fullmatch(arch):
        if not path:
            raise PctError(f"{option} expects {form}, got {value!r} (no checkpoint after '=')")
        return arch, path
    if not require_arch and text and not text.startswith("="):
        return None, text
    raise PctError(f"{option} expects {form}, got {value!r}")


# Refusals a command can give before it imports torch or ffcv (seconds): input files that are
# missing or folders, with the words of the check that would find them later (BetonInfo,
# models.load_file), which tests/test_answers.py holds them to.
INPUTS = {"dataset": "a .beton file", "checkpoint": "a file written by torch.save"}


def check_input(kind, path):
    """PctError for an input file of `kind` (dataset, checkpoint) that is a folder or
    missing; None for anything else, which the full check reads later."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise PctError(f"{kind} is a folder: {path} (expected {INPUTS[kind]})")
    if not path.is_file():
        raise PctError(f"{kind} file not found: {path}" if kind == "dataset" else
                       f"{kind} not found: {path}")

"""The `pct` command line: a click group whose commands live beside their stages.

Each command parses its options into a frozen config and calls the stage's ``run(cfg)``.
Commands are imported only when invoked, so `pct analyze` never pays for torch or ffcv.
User mistakes (PctError, click usage errors) end as one line on stderr and exit status 2; a
command may end with another status through ctx.exit (`pct analyze`: 1 when a gate fails).
Ctrl-C and SIGTERM end as one line too (status 130 and 143).
Option names are read with underscores as dashes (`--kd_alpha` is `--kd-alpha`, the original
research code's spelling), so each option is declared, and listed in --help, once.
Every command also takes --config FILE (option values from a YAML file, overridden by the
command line) and --print-config (config_files.with_config).
"""
import importlib
import signal
import sys
import threading

import click

from . import __version__
from .errors import PctError
from .config_files import with_config
from .options import option_name

# name: (where the command lives, its line in `pct --help`). `pct --help` prints these lines
# without importing any command, so it never pays for torch or ffcv either.
COMMANDS = {
    "write-dataset": ("pct_pipeline.dataset.command:write_dataset",
                      "Convert an ImageFolder tree into an FFCV .beton."),
    "precompute-teachers": ("pct_pipeline.precompute.command:precompute_teachers",
                            "Run the old model(s) over V views; store their logits."),
    "train": ("pct_pipeline.train.command:train",
              "Train a new model, optionally distilling from teachers."),
    "evaluate": ("pct_pipeline.evaluate.command:evaluate",
                 "Write a checkpoint's predictions for `pct analyze`."),
    "analyze": ("pct_pipeline.analyze.command:analyze",
                "Accuracy and negative flips of NEW models vs the OLD."),
    "cache-fidelity": ("pct_pipeline.fidelity.command:cache_fidelity",
                       "How closely a teacher cache matches exact logits."),
    "models": ("pct_pipeline.models.command:models",
               "List architectures, their sizes and feature widths."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, summary = COMMANDS[name]
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        command.short_help = summary
        return with_config(command)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                               "token_normalize_func": option_name})
@click.version_option(__version__, prog_name="pct")
def cli():
    """Positive-congruent training: precompute teacher logits once, train against them,
    analyze negative flips."""


class Terminated(BaseException):
    """SIGTERM (a scheduler's stop, `kill`): ends a command as Ctrl-C does. A BaseException,
    as KeyboardInterrupt is, so that no `except Exception` on the way takes it for an error
    (and click, which turns KeyboardInterrupt into its Abort, lets it through)."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None):
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        # A command that ends with ctx.exit(status) (`pct analyze` when a --gate fails: 1)
        # makes click return that status here; commands themselves return None.
        status = cli.main(args=argv, prog_name="pct", standalone_mode=False)
    except PctError as exc:
        click.echo(f"pct: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt, Terminated) as exc:
        # An object the interrupt left half-built can fail in __del__ when it is collected (an
        # ffcv EpochIterator stopped inside its __init__ has no memory_context to close); after
        # Ctrl-C or SIGTERM the one line below is all that is printed.
        sys.unraisablehook = lambda unraisable: None
        terminated = isinstance(exc, Terminated)
        click.echo(f"pct: {'terminated' if terminated else 'interrupted'}", err=True)
        sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
    except click.ClickException as exc:
        click.echo(f"pct: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    if type(status) is int and status:
        sys.exit(status)

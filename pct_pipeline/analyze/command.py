"""`pct analyze OLD NEW [NEW2 ...]`. Imports no torch unless a `.result` file or --gallery is
given."""
import math

import click

from .config import GALLERY_FLIPS, MIN_BOOTSTRAP, AnalyzeConfig

GATE_FAILED = 1  # the exit status when a --gate fails (2 stays for usage errors)


class FiniteFloat(click.ParamType):
    """A float option that refuses NaN and infinities (float() reads 'nan' and 'inf')."""
    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _figure(help_text):
    return dict(type=click.Path(dir_okay=False), default=None,
                help=help_text + " The extension names the format: .png, .pdf or .svg.")


@click.command("analyze")
@click.argument("old", type=click.Path())
@click.argument("new", nargs=-1, required=True, type=click.Path())
@click.option("--gate", "gates", multiple=True, metavar="EXPR",
              help="Bound a metric of every NEW model against OLD, e.g. 'nfr<=1.5%', 'nf<=120', "
                   "'top1>=old-0.2%', 'nfr.ci95_high<=2%', 'pfr>=nfr', 'class:cat.nfr<=3%' "
                   "(repeatable; grammar and metrics: docs/analyze.md). Exit status 1 when a "
                   "gate fails.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write every number as JSON here (fractions in [0, 1]; null = "
                   "undefined); '-' writes it to stdout and the text report to stderr.")
@click.option("--plot", "plot_out", **_figure(
    "Draw top-1 vs NFR with 95% CIs, and negative flips per class (needs matplotlib)."))
@click.option("--images", type=click.Path(dir_okay=False), default=None,
              help="The validation .beton the stores were made from: the gallery's pictures.")
@click.option("--gallery", **_figure(
    "Draw the flips as thumbnails labelled true / old / new class (needs --images)."))
@click.option("--gallery-max", type=int, default=AnalyzeConfig.gallery_max, show_default=True,
              help="Thumbnails per NEW model and kind of flip (most confident old-right first).")
@click.option("--gallery-flips", type=click.Choice(GALLERY_FLIPS),
              default=AnalyzeConfig.gallery_flips, show_default=True,
              help="Which flips the gallery draws.")
@click.option("--allow-different-images", is_flag=True,
              help="Compare inputs whose recorded image digests differ, matching samples by "
                   "index only (refused otherwise).")
@click.option("--bootstrap", type=int, default=AnalyzeConfig.bootstrap, show_default=True,
              help=f"Bootstrap resamples for the 95% intervals: 0 (none) or at least "
                   f"{MIN_BOOTSTRAP} (a 95% percentile interval cuts 2.5% of them off each "
                   f"end; with fewer, under 3 resamples lie beyond each end).")
@click.option("--seed", type=int, default=AnalyzeConfig.seed, show_default=True,
              help="Seed of the bootstrap.")
@click.option("--top-classes", type=click.IntRange(min=0), default=AnalyzeConfig.top_classes,
              show_default=True,
              help="Rows of the per-class and negative-flip transition tables.")
@click.option("--type1-max", type=FiniteFloat(), default=AnalyzeConfig.type1_max,
              show_default=True,
              help="A negative flip is type-I when its label probability changed by at most "
                   "this.")
@click.option("--type2-min", type=FiniteFloat(), default=AnalyzeConfig.type2_min,
              show_default=True,
              help="A negative flip is type-II when its label probability changed by at least "
                   "this.")
@click.option("--overwrite", is_flag=True,
              help="Replace existing --json / --plot / --gallery files (refused otherwise).")
def analyze(**options):
    """Compare NEW models with the OLD one: top-1/top-5, negative and positive flips (NFR, PFR,
    NFI, PFI, relative NFR, NFR_frac, PFR_frac, type-I/II flips), per class and by
    transition, bootstrap intervals, logit-mean ensembles and, for several NEW models, a
    paired bootstrap of their negative-flip difference; a legend of every metric follows the
    tables.

    OLD and NEW are prediction stores (`pct evaluate`, or precompute-teachers --eval-view), as
    paths or URLs (s3://…, gs://…), or the original research code's .result files; all must
    hold the same labels in the same order, and the same images and class names where they
    record them.
    Argmax ties go to the lowest class index (top-5 ranks ties the same way). A ratio whose
    denominator is 0 is null in the JSON and n/a in the table.

    Exit status: 0 when every --gate passes (or none is given), 1 when a gate fails, 2 for a
    usage error (a bad option or gate, inputs that cannot be compared).
    """
    from .run import run

    options["gates"] = tuple(options["gates"])
    report = run(AnalyzeConfig(**options))
    if report["gates_passed"] is False:
        # A verdict, not an error: click hands this status to cli.main, which exits with it.
        click.get_current_context().exit(GATE_FAILED)

"""`pct analyze OLD NEW [NEW2 ...]`. Imports no torch unless a `.result` file is given."""
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class AnalyzeConfig:
    old: str
    new: tuple
    json_out: str | None = None
    plot_out: str | None = None
    bootstrap: int = 1000
    seed: int = 0
    top_classes: int = 10
    overwrite: bool = False


@click.command("analyze")
@click.argument("old", type=click.Path())
@click.argument("new", nargs=-1, required=True, type=click.Path())
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write every number as JSON here (fractions in [0, 1]; null = undefined).")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: top-1 vs NFR with 95% CIs, and negative flips per class "
                   "(needs matplotlib: the 'plot' extra).")
@click.option("--bootstrap", type=click.IntRange(min=0), default=AnalyzeConfig.bootstrap,
              show_default=True, help="Bootstrap resamples for the 95% intervals (0: none).")
@click.option("--seed", type=int, default=AnalyzeConfig.seed, show_default=True,
              help="Seed of the bootstrap.")
@click.option("--top-classes", type=click.IntRange(min=0), default=AnalyzeConfig.top_classes,
              show_default=True, help="How many classes with most negative flips to list.")
@click.option("--overwrite", is_flag=True,
              help="Replace existing --json / --plot files (refused otherwise).")
def analyze(**options):
    """Compare NEW models with the OLD one: top-1/top-5, negative and positive flips (NFR, PFR,
    NFI, PFI, relative NFR, NFR_frac, PFR_frac, type-I/II flips), bootstrap intervals, logit-mean
    ensembles and, for several NEW models, a paired bootstrap of their negative-flip difference.

    OLD and NEW are prediction stores (`pct evaluate`, or precompute-teachers --eval-view), as
    paths or URLs (s3://…, gs://…), or the original research code's .result files; all must
    hold the same labels in the same order.
    Argmax ties go to the lowest class index (top-5 ranks ties the same way). A ratio whose
    denominator is 0 is null in the JSON and n/a in the table: NFI when the new model makes no
    error, PFI when it is never right, relative NFR when the old model is never right or the new
    one never wrong; with --bootstrap 0 every interval is null.
    """
    from .run import run

    run(AnalyzeConfig(**options))

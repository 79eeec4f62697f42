"""`pct cache-fidelity CACHE [--exact EXACT] [--student ARCH=CKPT] ...`."""
import click

from ..options import Choice, Finite, parse_arch_path
from .config import FidelityConfig


@click.command("cache-fidelity")
@click.argument("cache", type=click.Path())
@click.option("--exact", type=click.Path(), default=None, help="A plain-logits (float16 or "
              "float32) cache of the same views to compare with [default: the exact reference "
              "rows CACHE keeps, those of its recorded `fidelity`].")
@click.option("--temperature", "temperatures", type=Finite(min=0, min_open=True),
              multiple=True, help="kl temperature (repeatable) [default: 1 4 100; a sample:K@T "
              "cache: T].")
@click.option("--mode", type=Choice(["kl", "l2", "li"]), default="kl", show_default=True,
              help="Distillation distance measured (li: --li-p, --li-margin, label excluded).")
@click.option("--rows", type=click.IntRange(min=1), default=FidelityConfig.rows,
              show_default=True, help="Rows of view 0 compared (spread over the data set).")
@click.option("--student", default=None, metavar="ARCH=CKPT", help="Student whose logits the "
              "gradients are taken at, run on the same views [default: the exact teacher logits "
              "+ N(0, 1) noise].")
@click.option("--data", type=click.Path(), default=None, help="The training .beton, for "
              "--student [default: the path recorded in CACHE].")
@click.option("--li-p", type=Finite(min=1), default=FidelityConfig.li_p, show_default=True)
@click.option("--li-margin", type=Finite(min=0), default=FidelityConfig.li_margin,
              show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write every figure as JSON here.")
@click.option("--trust-checkpoint", is_flag=True, help="Unpickle the --student file fully "
              "(runs whatever code it holds).")
def cache_fidelity(**options):
    """Per-sample loss relative error, gradient cosine and relative norm error (w.r.t. the
    student's logits), and top-1 agreement of CACHE's stored targets against exact logits."""
    from .run import run

    student = options.pop("student")
    run(FidelityConfig(student=parse_arch_path(student, "--student") if student else None,
                       temperatures=tuple(options.pop("temperatures")), **options))



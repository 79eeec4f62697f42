"""`pct models`: the architectures `--arch` and `--teacher ARCH=CKPT` accept.

For each: parameter count as built for 1000 classes (auxiliary heads included), feature width
(the input of the final classifier: what --store-features, CNA and BCT use), the smallest
input side it accepts (exact for ViT / MaxViT and timm's fixed-size models; Inception v3 needs
more to train its auxiliary head), and whether `--pretrained` applies. `describe` builds the
model with its parameters on the meta device: no memory, no initialisation.

This package's own names (torchvision's, the ResNet variants, the small CNNs) are answered from
table.py, `describe`'s rows computed once for the torchvision release it names, so the command
imports neither torch nor torchvision; under another torchvision they are computed here (8 s
for all of them). A `timm:NAME` is described on request (importing timm); `--timm` lists
timm's names.
"""
import importlib.metadata
import json

import click

from ..errors import PctError
from . import table
from .timm_models import is_timm

TIMM_WEIGHTS = ("timm models: --pretrained does not apply; start one from a local weights file "
                "with --model-kwargs pretrained_file=PATH")


def describe(arch):
    """{name, params, feature_dim, min_input, min_train_input, exact_input, pretrained}."""
    from .. import models

    model = models.shape_only_model(arch, 1000)
    lo, exact = models.input_requirement(arch, model)
    return {"name": arch, "params": sum(p.numel() for p in model.parameters()),
            "feature_dim": models.feature_dim(model), "min_input": lo,
            "min_train_input": models.INCEPTION_AUX_MIN if arch == "inception_v3" else lo,
            "exact_input": exact is not None,
            "pretrained": arch not in models.LOCAL_MODELS and not is_timm(arch)}


def own_rows():
    """{name: describe(name)} for this package's own names, from table.py when it was computed
    for the installed torchvision, else None (then each is computed on request)."""
    if importlib.metadata.version("torchvision") != table.TORCHVISION:
        return None
    return {row[0]: dict(zip(table.FIELDS, row)) for row in table.ROWS}


def rows_for(names):
    """describe()'s rows for `names` (all of this package's own names when empty)."""
    known = own_rows()
    if known is None:
        from . import available_models

        known = dict.fromkeys(available_models())
    for name in names:
        if name not in known and not is_timm(name):
            raise PctError(f"unknown architecture {name!r} (run `pct models` for the list)")
    return [known.get(name) or describe(name) for name in (names or known)]


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--timm", "list_timm", is_flag=True,
              help="List timm's architectures (as timm:NAME; needs the timm extra).")
@click.argument("names", nargs=-1)
def models(as_json, list_timm, names):
    """List the architectures (or only NAMES, e.g. resnet18 timm:convnext_atto) with parameter
    count, feature width and input size."""
    if list_timm:
        if names:
            raise PctError("--timm lists timm's names; describe some with `pct models "
                           "timm:NAME ...`, without --timm")
        from .timm_models import timm_names

        click.echo(json.dumps(list(timm_names()), indent=1) if as_json else
                   "\n".join(timm_names()))
        return
    rows = rows_for(names)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'architecture':34} {'params':>12} {'features':>8} {'input px':>9}  pretrained")
    for r in rows:
        side = f"={r['min_input']}" if r["exact_input"] else f">={r['min_input']}"
        click.echo(f"{r['name']:34} {r['params']:>12,} {r['feature_dim']:>8} {side:>9}  "
                   f"{'yes' if r['pretrained'] else 'no'}")
    for r in rows:
        if r["min_train_input"] != r["min_input"]:
            click.echo(f"{r['name']} trains with its auxiliary head from {r['min_train_input']} "
                       f"px (or pass --model-kwargs aux_logits=false)")
    if any(is_timm(r["name"]) for r in rows):
        click.echo(TIMM_WEIGHTS)

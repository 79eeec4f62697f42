"""`pct models`: the architectures `--arch` and `--teacher ARCH=CKPT` accept.

For each: parameter count as built for 1000 classes (auxiliary heads included), feature width
(the input of the final classifier: what --store-features, CNA and BCT use), the smallest
input side it accepts (exact for ViT / MaxViT; Inception v3 needs more to train its auxiliary
head), and whether `--pretrained` applies. Parameters are allocated on the meta device: no
memory, no initialisation.
"""
import json

import click


def describe(arch):
    """{name, params, feature_dim, min_input, min_train_input, exact_input, pretrained}."""
    from . import models

    model = models.shape_only_model(arch, 1000)
    lo, exact = models.input_requirement(arch, model)
    return {"name": arch, "params": sum(p.numel() for p in model.parameters()),
            "feature_dim": models.feature_dim(model), "min_input": lo,
            "min_train_input": models.INCEPTION_AUX_MIN if arch == "inception_v3" else lo,
            "exact_input": exact is not None, "pretrained": arch not in models.LOCAL_MODELS}


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.argument("names", nargs=-1)
def models(as_json, names):
    """List the architectures (or only NAMES) with parameter count, feature width and input
    size."""
    from .errors import PctError
    from .models import available_models

    known = available_models()
    for name in names:
        if name not in known:
            raise PctError(f"unknown architecture {name!r} (run `pct models` for the list)")
    rows = [describe(arch) for arch in (names or known)]
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

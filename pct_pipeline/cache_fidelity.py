"""`pct cache-fidelity CACHE [--exact EXACT]`: how faithfully a teacher cache's codec serves the
distillation losses, measured on a sample of view 0's rows (fidelity.py).

The reference is EXACT, a plain-logits cache of the same views (same data, teachers, view seed,
resolution and augmentation), or, without it, the exact logits a compact cache keeps of its
reference rows (from which precompute-teachers recorded its `fidelity` attribute). The student
is a checkpoint run on the same views (--student), or the exact logits + N(0, 1) noise.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import click

from .errors import PctError
from .files import write_text_atomic
from .options import Choice, parse_arch_path

# What makes two caches hold the same views of the same teacher (precompute.prepare.identity).
SAME_VIEWS = ("dataset size", "dataset num_samples", "dataset labels_sha256", "teachers",
              "view_seed", "resolution", "scale", "ratio", "flip", "eval_view")


@dataclass(frozen=True)
class FidelityConfig:
    """temperatures: () means 1, 4 and 100 (a sampled codec: its own); student: (arch,
    checkpoint) or None for exact + N(0, 1); data: the .beton the student runs on (None: the
    cache's recorded dataset path)."""

    cache: str
    exact: str | None = None
    temperatures: tuple = ()
    mode: str = "kl"
    rows: int = 1000
    student: tuple | None = None
    data: str | None = None
    li_p: float = 2.0
    li_margin: float = 0.5
    json_out: str | None = None
    trust_checkpoint: bool = False


@click.command("cache-fidelity")
@click.argument("cache", type=click.Path())
@click.option("--exact", type=click.Path(), default=None, help="A plain-logits (float16 or "
              "float32) cache of the same views to compare with [default: the exact reference "
              "rows CACHE keeps, those of its recorded `fidelity`].")
@click.option("--temperature", "temperatures", type=click.FloatRange(min=0, min_open=True),
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
@click.option("--li-p", type=click.FloatRange(min=1), default=FidelityConfig.li_p, show_default=True)
@click.option("--li-margin", type=click.FloatRange(min=0), default=FidelityConfig.li_margin,
              show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write every figure as JSON here.")
@click.option("--trust-checkpoint", is_flag=True, help="Unpickle the --student file fully "
              "(runs whatever code it holds).")
def cache_fidelity(**options):
    """Per-sample loss relative error, gradient cosine and relative norm error (w.r.t. the
    student's logits), and top-1 agreement of CACHE's stored targets against exact logits."""
    student = options.pop("student")
    run(FidelityConfig(student=parse_arch_path(student, "--student") if student else None,
                       temperatures=tuple(options.pop("temperatures")), **options))


def run(cfg):
    """Measure, print the table, write the JSON if asked; returns the report dict."""
    from . import codecs, fidelity
    from .store import open_store

    cache = open_store(cfg.cache, kind="teacher-cache")
    codec = codecs.from_attrs(cache.attrs)
    rows, exact, stored, reference = sample(cfg, cache)
    labels = cache.labels[rows]
    if cfg.student is None:
        student, who = fidelity.perturbed(exact, fidelity.STUDENT_NOISE), \
            f"exact teacher logits + N(0, {fidelity.STUDENT_NOISE:g}) noise"
    else:
        student, who = student_logits(cfg, cache, rows), "=".join(cfg.student)
    if cfg.mode == "kl":
        temperatures = cfg.temperatures or ((codec.temperature,) if not codec.dense
                                            else fidelity.RECORDED_TEMPERATURES)
    else:
        temperatures = (None,)
    results = {}
    for t in temperatures:
        results[fidelity.setting_key(cfg.mode, t)] = fidelity.measure_encoded(
            codec, stored, exact, student, cfg.mode, t or 1.0, labels, cfg.li_p, cfg.li_margin)
    report = {"cache": str(cfg.cache), "codec": codec.name, "rows": int(len(rows)),
              "reference": reference, "student": who, "mode": cfg.mode,
              "li": {"p": cfg.li_p, "margin": cfg.li_margin} if cfg.mode == "li" else None,
              "settings": fidelity.json_safe(results),
              "recorded": cache.attrs.get("fidelity")}
    click.echo(f"{cfg.cache}: codec {codec.name}, {len(rows)} rows of view 0 against "
               f"{reference}; student: {who}")
    click.echo("\n".join(fidelity.table(report["settings"])))
    if cfg.json_out:
        write_json(cfg.json_out, report)
    return report


def sample(cfg, cache):
    """(rows int64 [n], exact float32 [n, C], stored {array: [n, width]} of those rows of
    view 0 in CACHE, a description of the reference)."""
    import numpy as np

    from .store import open_store, reference_rows, value_arrays

    names = value_arrays(cache.attrs)
    if cfg.exact is None:
        if "reference_logits" not in cache.group:
            raise PctError(f"{cache.path} keeps no exact reference rows (a plain-logits cache, "
                           f"or one made before codecs): pass --exact EXACT_CACHE")
        rows, exact, stored = cache.reference()
        keep = thin(len(rows), cfg.rows)
        return (rows[keep], exact[keep], {k: v[keep] for k, v in stored.items()},
                "the exact logits CACHE keeps of its reference rows (its recorded fidelity's)")
    exact_store = open_store(cfg.exact, kind="teacher-cache")
    check_same_views(cache, exact_store)
    per_shard = -(-cfg.rows // int(cache.attrs["num_shards"]))
    rows = reference_rows(cache.attrs, per_shard=per_shard)
    rows = rows[thin(len(rows), cfg.rows)]
    stored = {name: cache.rows_at(name, 0, rows) for name in names}
    exact = np.asarray(exact_store.rows_at("logits", 0, rows), np.float32)
    return rows, exact, stored, f"the logits of {cfg.exact}"


def thin(count, wanted):
    """Indices of at most `wanted` of `count` items, evenly spread, in order."""
    import numpy as np

    return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(np.int64))


def check_same_views(cache, exact):
    """PctError unless EXACT holds plain logits of the same views of the same teachers."""
    from .precompute.prepare import identity
    from .store import value_arrays

    if value_arrays(exact.attrs) != ["logits"]:
        raise PctError(f"--exact {exact.path} is itself a compact cache "
                       f"({exact.attrs.get('codec')}); give a float16 or float32 one")
    theirs = dict(identity(exact.attrs))
    for name, here in identity(cache.attrs):
        if name in SAME_VIEWS and theirs.get(name) != here:
            raise PctError(f"--exact {exact.path} holds other views than {cache.path}: {name} "
                           f"is {theirs.get(name)!r} there, {here!r} here")


def student_logits(cfg, cache, rows):
    """float32 [n, C]: the student checkpoint run on view 0 of `rows`, as the cache's teacher
    was (same loader, views and precision: float32)."""
    import numpy as np
    import torch

    from . import models, views
    from .dataset import BetonInfo, ViewLoader
    from .precompute.run import Teacher, forward
    from .train.teachers import open_cache

    data = cfg.data or (cache.attrs.get("dataset") or {}).get("path")
    if not data:
        raise PctError(f"{cache.path} records no dataset path: pass --data TRAIN.beton")
    open_cache(cache.path, BetonInfo(data), cache.num_classes, False)  # the same data?
    arch, path = cfg.student
    model, _ = models.load_model(arch, path, cache.num_classes, trust=cfg.trust_checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale, ratio, flip = views.augmentation_attrs(cache.attrs)
    loader = ViewLoader(data, 256, int(cache.attrs["resolution"]), view_seed=int(
        cache.attrs["view_seed"]), scale=scale, ratio=ratio, flip=flip, order="sequential",
        indices=rows, device=device)
    loader.set_view(0)
    teacher = [Teacher(arch, str(path), model.to(device).eval())]
    out = np.zeros((len(rows), cache.num_classes), np.float32)
    for images, _, indices in loader:  # rows are increasing: searchsorted finds each one
        logits = forward(teacher, images, False, device, exact=True)["members"][0]
        out[np.searchsorted(rows, indices.numpy())] = logits.numpy()
    return out


def write_json(path, report):
    """Write `report` to `path` atomically (temp file + rename)."""
    path = Path(path)
    if not path.resolve().parent.is_dir():
        raise PctError(f"output folder does not exist: {path.parent}")
    write_text_atomic(path, json.dumps(report, indent=1) + "\n")

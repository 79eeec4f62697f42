"""`pct cache-fidelity CACHE [--exact EXACT]`: how faithfully a teacher cache's codec serves the
distillation losses, measured on a sample of view 0's rows (codec_fidelity.py).

The reference is EXACT, a plain-logits cache of the same views (same data, teachers, view seed,
resolution and augmentation), or, without it, the exact logits a compact cache keeps of its
reference rows (from which precompute-teachers recorded its `fidelity` attribute). The student
is a checkpoint run on the same views (--student), or the exact logits + N(0, 1) noise.
"""
import json
from pathlib import Path

import click
import numpy as np
import torch

from .. import codec_fidelity, models
from ..dataset import BetonInfo, ViewLoader
from ..errors import PctError
from ..files import write_text_atomic
from ..store import codecs, identity, open_store, reference_rows, value_arrays
from ..views import ViewSpec

# What makes two caches hold the same views of the same teacher (store.identity).
SAME_VIEWS = ("dataset size", "dataset num_samples", "dataset labels_sha256", "teachers",
              "view_seed", "resolution", "scale", "ratio", "flip", "eval_view")


def run(cfg):
    """Measure, print the table, write the JSON if asked; returns the report dict."""
    cache = open_store(cfg.cache, kind="teacher-cache")
    codec = codecs.from_attrs(cache.attrs)
    rows, exact, stored, reference = sample(cfg, cache)
    labels = cache.labels[rows]
    if cfg.student is None:
        student, who = codec_fidelity.perturbed(exact, codec_fidelity.STUDENT_NOISE), \
            f"exact teacher logits + N(0, {codec_fidelity.STUDENT_NOISE:g}) noise"
    else:
        student, who = student_logits(cfg, cache, rows), "=".join(cfg.student)
    if cfg.mode == "kl":
        temperatures = cfg.temperatures or ((codec.temperature,) if not codec.dense
                                            else codec_fidelity.RECORDED_TEMPERATURES)
    else:
        temperatures = (None,)
    results = {}
    for t in temperatures:
        setting = codec_fidelity.Setting(cfg.mode, t or 1.0, cfg.li_p, cfg.li_margin)
        results[codec_fidelity.setting_key(cfg.mode, t)] = codec_fidelity.measure_encoded(
            codec, stored, exact, student, setting, labels)
    report = {"cache": str(cfg.cache), "codec": codec.name, "rows": int(len(rows)),
              "reference": reference, "student": who, "mode": cfg.mode,
              "li": {"p": cfg.li_p, "margin": cfg.li_margin} if cfg.mode == "li" else None,
              "settings": codec_fidelity.json_safe(results),
              "recorded": cache.attrs.get("fidelity")}
    click.echo(f"{cfg.cache}: codec {codec.name}, {len(rows)} rows of view 0 against "
               f"{reference}; student: {who}")
    click.echo("\n".join(codec_fidelity.table(report["settings"])))
    if cfg.json_out:
        write_json(cfg.json_out, report)
    return report


def sample(cfg, cache):
    """(rows int64 [n], exact float32 [n, C], stored {array: [n, width]} of those rows of
    view 0 in CACHE, a description of the reference)."""
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
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(np.int64))


def check_same_views(cache, exact):
    """PctError unless EXACT holds plain logits of the same views of the same teachers."""
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
    data = cfg.data or (cache.attrs.get("dataset") or {}).get("path")
    if not data:
        raise PctError(f"{cache.path} records no dataset path: pass --data TRAIN.beton")
    info = BetonInfo(data)
    cache.check_data(info.identity(), info.path)
    arch, path = cfg.student
    model, _ = models.load_model(arch, path, cache.num_classes, trust=cfg.trust_checkpoint)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    loader = ViewLoader(data, ViewSpec.from_attrs(cache.attrs), 256, indices=rows, device=device)
    loader.set_view(0)
    out = np.zeros((len(rows), cache.num_classes), np.float32)
    with torch.inference_mode():
        for images, _, indices in loader:  # rows are increasing: searchsorted finds each one
            logits = models.main_logits(model(images.to(device))).float()
            out[np.searchsorted(rows, indices.numpy())] = logits.cpu().numpy()
    return out


def write_json(path, report):
    """Write `report` to `path` atomically (temp file + rename)."""
    path = Path(path)
    if not path.resolve().parent.is_dir():
        raise PctError(f"output folder does not exist: {path.parent}")
    write_text_atomic(path, json.dumps(report, indent=1) + "\n")

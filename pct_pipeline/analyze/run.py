"""`pct analyze`: load prediction stores (or upstream `.result` files), check, compute, report.

Inputs are §Stores, local directories or URLs (a `predictions` store, or a `teacher-cache` made
with `--eval-view`: one eval view) read as `logits[0]` and `labels`, or the research code's
`.result` files (torch-saved dicts with `gt` and `outputs` logits; `pred` is ignored and
recomputed from `outputs` with our tie rule). The first input is the old model; every input
must hold the same samples (checks.py). torch is imported only for a `.result` file, the
dataset package (and ffcv) only for --gallery, matplotlib only for --plot and --gallery.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from ..errors import PctError
from ..files import write_text_atomic
from ..store import Location, open_store
from . import gates as gate_grammar
from . import metrics
from .checks import (Record, check_aligned, check_classes, check_count, check_images,
                     check_labels)
from .report import build_report
from .text import format_report

TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # torch.save: a zip archive, or a legacy pickle


@dataclass(frozen=True)
class Predictions:
    """One model's validation outputs: logits [N, C] (float16/float32), labels int64 [N], the
    class names in label order and the digest of the encoded images (None: not recorded)."""
    path: str
    logits: np.ndarray
    labels: np.ndarray
    classes: list | None
    images_sha256: str | None = None


def run(cfg):
    """Analyze cfg.old against each of cfg.new: check the inputs, compute the report and the
    gates, write the --json / --plot / --gallery files, then print the table (stderr when
    the JSON goes to stdout). Returns the report; report["gates_passed"] is False when a gate
    failed (the command turns that into exit status 1)."""
    gates = [gate_grammar.parse(text) for text in cfg.gates]
    _check_outputs(cfg)
    models, images, names, notes = _inputs(cfg)
    labels_of = {g: gate_grammar.resolve_class(g, names, models[0].logits.shape[1])
                 for g in gates if g.klass is not None}
    try:
        report, scores = build_report(models, names, cfg.bootstrap, cfg.seed,
                                      cfg.top_classes, (cfg.type1_max, cfg.type2_min))
    except metrics.NonFiniteLogits as exc:
        raise PctError(f"{models[exc.model].path}: NaN or infinite logit in sample "
                       f"{exc.row}") from None
    report["notes"] = notes
    report["gates"] = gate_grammar.evaluate(gates, report, labels_of)
    report["gates_passed"] = all(g["passed"] for g in report["gates"]) if gates else None
    _write_outputs(cfg, report, models, scores, images)
    click.echo(format_report(report), err=cfg.json_out == "-")
    if cfg.json_out == "-":
        click.echo(json.dumps(report, indent=1, allow_nan=False))
    return report


def _inputs(cfg):
    """(models: Predictions [OLD, *NEW], the --images Images or None, the class names or None,
    notes): every input loaded and checked against the first (checks.py)."""
    models = [load(path) for path in (cfg.old, *cfg.new)]
    check_aligned(models)
    records = [Record(m.path, m.images_sha256, m.classes) for m in models]
    images = _gallery().open_images(cfg.images) if cfg.gallery else None
    if images:
        check_count(models[0], images.record.path, images.labels)
        records.append(images.record)
    notes = check_images(records, cfg.allow_different_images)
    names, unnamed = check_classes(records, models[0].logits.shape[1])
    for other in models[1:]:
        check_labels(models[0], other.path, other.labels)
    if images:
        check_labels(models[0], images.record.path, images.labels)
    return models, images, names, notes + unnamed


def _gallery():
    from . import gallery  # only with --gallery: it reads images through the dataset package

    return gallery


def _check_outputs(cfg):
    """Refuse output files that cannot be written or would replace a file unasked."""
    if cfg.plot_out or cfg.gallery:
        _require_matplotlib("--plot" if cfg.plot_out else "--gallery")
    for option, out in (("--json", cfg.json_out), ("--plot", cfg.plot_out),
                        ("--gallery", cfg.gallery)):
        if not out or out == "-" and option == "--json":
            continue
        if not Path(out).resolve().parent.is_dir():
            raise PctError(f"output folder does not exist: {Path(out).parent}")
        if Path(out).exists() and not cfg.overwrite:
            raise PctError(f"{option} {out} exists (use --overwrite to replace it)")


def _write_outputs(cfg, report, models, scores, images):
    """The --gallery choice (in the report) and its images, then the files: the images are
    read before any file is written, so that a bad image leaves no file behind."""
    pictures = None
    if cfg.gallery:
        gallery = _gallery()
        report["gallery"] = gallery.select(report, models, scores, cfg)
        pictures = gallery.read(images, report["gallery"])
    if cfg.json_out and cfg.json_out != "-":
        write_json_atomic(cfg.json_out, report)
    if cfg.plot_out:
        from .plot import plot
        plot(report, cfg.plot_out)
    if cfg.gallery:
        gallery.draw(report, pictures, cfg.gallery)


def load(path):
    """Predictions from a store (a directory or a URL) or a local `.result` file; PctError for
    anything else."""
    p = Location(path).path
    if p is None or p.is_dir():
        return _load_store(path)
    if not p.exists():
        raise PctError(f"not found: {path}")
    with open(p, "rb") as f:
        head = f.read(4)
    if not head.startswith(TORCH_MAGIC):
        raise PctError(f"neither a pct store (a Zarr directory) nor a .result file: {path}")
    return _load_result(path)


def _load_store(path):
    store = open_store(path)
    eval_view = bool(store.attrs.get("eval_view"))
    if store.views != 1 or (store.kind == "teacher-cache" and not eval_view):
        raise PctError(f"{path} is a {store.kind} store with {store.views} views "
                       f"(eval_view={eval_view}); analyze needs predictions or a teacher cache "
                       f"made with --eval-view (1 view)")
    logits = store.logits(0)
    dataset = store.attrs.get("dataset") or {}
    classes = dataset.get("classes")
    if classes is not None and not (isinstance(classes, list)
                                    and all(isinstance(x, str) for x in classes)):
        raise PctError(f"{path}: attribute dataset.classes is not a list of class names")
    return Predictions(str(path), logits, np.asarray(store.labels, np.int64), classes,
                       dataset.get("images_sha256") or None)


def _load_result(path):
    import pickle
    import zipfile

    import torch

    try:
        result = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError,
            zipfile.BadZipFile) as exc:
        raise PctError(f"unreadable .result file {path} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(result, dict) or not {"gt", "outputs"} <= set(result):
        keys = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise PctError(f"{path} is not a .result file: expected a dict with 'gt' and "
                       f"'outputs', got {keys}")
    outputs, gt = result["outputs"], result["gt"]
    if not (torch.is_tensor(outputs) and torch.is_tensor(gt) and outputs.ndim == 2
            and gt.ndim == 1 and len(gt) == len(outputs)):
        raise PctError(f"{path}: 'outputs' must be a [N, C] tensor and 'gt' a [N] tensor")
    logits = outputs.detach().float().numpy()
    return Predictions(str(path), logits, gt.detach().long().numpy(), None)




def write_json_atomic(path, report):
    """Write to a temporary file beside `path`, then rename: `path` is whole or untouched."""
    write_text_atomic(path, json.dumps(report, indent=1, allow_nan=False) + "\n")


def _require_matplotlib(option):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PctError(f"{option} needs the matplotlib package: pip install "
                       f"'pct_pipeline[plot]'") from None

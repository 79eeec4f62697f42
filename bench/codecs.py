"""Teacher-cache codecs: bytes per row, encode/decode speed, and loss/gradient fidelity.

    .venv/bin/python bench/codecs.py [--classes 1000] [--rows 20000] [--repeats 3] [--quick]
                                     [--json OUT]

Logits with real structure, scaled to ImageNet's class count (construction, all seeded):
  1. Two MLPs 64 -> 64 -> 10 (ReLU) are trained with plain torch (SGD, full batch) on
     scikit-learn's bundled 8x8 digits (1,797 images; 540 random ones, seed 0, held out for
     validation): the teacher for 100 steps, the student (another seed) for 20 steps. Their
     validation logits [540, 10] and 64-d penultimate features are used.
  2. C classes: the first 10 are the digits, with logits a * (l - mean(l)); the other C - 10
     form a long tail, logits = h @ W, W a fixed N(0, 1) [64, C - 10] map of the model's
     features h, rescaled so the tail's standard deviation over all rows and classes is 2
     (a chosen spread). One W serves both models, so the student's tail is a different random
     function of its own features: a far student.
  3. a is set (bisection) so the teacher's median top-1 softmax probability over the C classes
     is 0.75, ImageNet-like: mostly confident rows, some uncertain ones, and a long tail of
     small probabilities (the run prints the 10th/50th/90th percentiles); the student uses a.
Students for the gradient figures: "noise1" = teacher logits + N(0, 1) (a close student) and
"model" = the second network (a far student). Labels are the digits' labels.

For each codec: bytes per (view, sample) row at C classes, encode and decode throughput over
ROWS rows (the 540 teacher rows tiled; median and range over repeats), and pct_pipeline.fidelity
figures for kl at T = 1, 4, 100 and for l2 and li (p 2, margin 0.5, label excluded) where the
codec serves them. Sampled codecs are measured on a single draw (their average over draws
converges to the exact gradient; tests/test_codecs.py checks that). Checks: int8 <= 1,010 B with
a per-sample kl gradient cosine >= 0.999 (5th percentile over samples, close student) at every T;
topk:10 <= 64 B.
"""
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import torch

from pct_pipeline import codec_fidelity as fidelity
from pct_pipeline.store import codecs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TEMPERATURES = (1.0, 4.0, 100.0)
CODECS = ("float16", "int8", "topk:5", "topk:10", "sample:20@{T}", "sample:128@{T}")
TAIL_STD, TOP1_MEDIAN = 2.0, 0.75


def digits_split():
    """(x_train, y_train, x_val, y_val): digits pixels / 16 as float32 [n, 64], int64 labels.

    Read from scikit-learn's bundled file without importing scikit-learn (seconds of start-up);
    the same 1,797 images and labels as sklearn.datasets.load_digits().
    """
    folder = Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "data"
    table = np.loadtxt(folder / "digits.csv.gz", delimiter=",", dtype=np.float32)
    x, y = table[:, :64] / 16, table[:, 64].astype(np.int64)
    val = np.random.default_rng(0).permutation(len(x))[:540]
    train = np.setdiff1d(np.arange(len(x)), val)
    return x[train], y[train], x[val], y[val]


def train_mlp(x, y, steps, seed):
    """A 64 -> 64 -> 10 ReLU MLP trained full-batch by SGD (momentum 0.9, lr 0.5), written
    out by hand: torch.optim's first use imports torch._dynamo, seconds on a busy machine."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()),
                                torch.nn.Linear(64, 10))
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, v, g in zip(params, velocity, grads):
                p -= 0.5 * v.mul_(0.9).add_(g)
    return model.eval()


def logits_and_features(model, x):
    with torch.no_grad():
        features = model[0](torch.from_numpy(x))
        return model[1](features).numpy(), features.numpy()


def widen(logits, features, tail_map, scale):
    """[n, 10] digit logits + [n, 64] features -> [n, C] float32 (see the module docstring)."""
    head = scale * (logits - logits.mean(axis=1, keepdims=True))
    return np.concatenate([head, features @ tail_map], axis=1).astype(np.float32)


def median_top1(logits):
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return float(np.median(1 / p.sum(axis=1)))


def realistic_logits(classes, seed=0):
    """(teacher [540, C], model student [540, C], labels [540]) float32/int64."""
    x_train, y_train, x_val, y_val = digits_split()
    teacher, student = train_mlp(x_train, y_train, 100, seed), train_mlp(x_train, y_train, 20,
                                                                         seed + 1)
    (lt, ft), (ls, fs) = logits_and_features(teacher, x_val), logits_and_features(student, x_val)
    tail_map = np.random.default_rng(seed).standard_normal((64, classes - 10))
    tail_map *= TAIL_STD / (ft @ tail_map).std()
    lo, hi = 0.0, 10.0
    for _ in range(50):  # the head scale giving the teacher's target median top-1 probability
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if median_top1(widen(lt, ft, tail_map, mid)) < TOP1_MEDIAN else (lo, mid)
    return widen(lt, ft, tail_map, lo), widen(ls, fs, tail_map, lo), y_val, lo


def throughput(codec, rows, classes, repeats):
    """Encode and decode rows/s of one codec per repeat (decode None for sampled codecs)."""
    encode, decode = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = codec.encode(rows)
        encode.append(len(rows) / (time.perf_counter() - start))
        if codec.dense:
            start = time.perf_counter()
            codec.decode(encoded, classes)
            decode.append(len(rows) / (time.perf_counter() - start))
    return encode, decode


def settings(codec):
    """(mode, temperature) pairs the codec serves."""
    modes = [("kl", t) for t in TEMPERATURES]
    return modes + ([("l2", None), ("li", None)] if codec.dense else [])


def codec_for(name, temperature):
    return codecs.parse(name.format(T=f"{temperature:g}"))


def fidelity_rows(names, teacher, students, labels):
    """{student: {codec name: {setting: fidelity.measure dict}}}."""
    out = {}
    for student_name, student in students.items():
        out[student_name] = {}
        for name in names:
            for mode, t in settings(codec_for(name, 1.0)):
                codec = codec_for(name, t or 1.0)
                measured = fidelity.measure(codec, teacher, student,
                                            fidelity.Setting(mode, t or 1.0), labels)
                key = f"{mode}@{t:g}" if t else mode
                out[student_name].setdefault(name.replace("{T}", "T"), {})[key] = measured
    return out


def print_fidelity(rows):
    for student, by_codec in rows.items():
        print(f"fidelity against student '{student}' (gradient cosine per sample: median / 5th "
              f"percentile; whole batch; loss rel. error per sample: median / p95; "
              f"top-1 agreement)")
        for name, by_setting in by_codec.items():
            for key, m in by_setting.items():
                g, loss = m["gradient"], m["loss_rel_error"]
                print(f"  {name:<14} {key:<7} cos {g['cosine']['median']:8.5f} / "
                      f"{g['cosine']['p5']:8.5f}  batch {g['batch']['cosine']:8.5f}  grad err "
                      f"{g['rel_error']['median']:7.4f}  loss err {loss['median']:9.4g} / "
                      f"{loss['p95']:9.4g}  top-1 {m['top1_agreement']:.3f}")


def checks_for(fidelity_by_student, classes):
    int8, topk = codecs.parse("int8"), codecs.parse("topk:10")
    out = [common.check(f"codecs: int8 bytes per row at C={classes}", int8.bytes_per_row(classes),
                        [], "<=", 1010, " B"),
           common.check(f"codecs: topk:10 bytes per row at C={classes}",
                        topk.bytes_per_row(classes), [], "<=", 64, " B")]
    for t in TEMPERATURES:
        m = fidelity_by_student["noise1"]["int8"][f"kl@{t:g}"]["gradient"]["cosine"]
        out.append(common.check(f"codecs: int8 kl T={t:g} gradient cosine, p5 over samples "
                                f"(student noise1)", m["p5"], [], ">=", 0.999))
    return out


def speeds(names, teacher, rows, repeats):
    """({codec: bytes per row}, {figure name: figure}) with the teacher rows tiled to `rows`."""
    classes = teacher.shape[1]
    tiled = np.resize(teacher, (rows, classes))
    sizes, figures = {}, {}
    for name in names:
        codec, key = codec_for(name, 4.0), name.replace("{T}", "T")
        sizes[key] = codec.bytes_per_row(classes)
        encode, decode = throughput(codec, tiled, classes, repeats)
        figures[f"{key} encode rows/s"] = common.figure(encode)
        if decode:
            figures[f"{key} decode rows/s"] = common.figure(decode)
    return sizes, figures


def describe(teacher, model_student, labels, scale):
    """Statistics of the constructed logits, for the result's setup."""
    top1 = 1 / np.exp(teacher - teacher.max(axis=1, keepdims=True)).sum(axis=1)
    return {"head_scale": scale, "tail_std": TAIL_STD,
            "teacher_top1_prob": {q: float(np.quantile(top1, v))
                                  for q, v in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))},
            "teacher_accuracy": float((teacher.argmax(axis=1) == labels).mean()),
            "model_student_accuracy": float((model_student.argmax(axis=1) == labels).mean())}


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--classes", default=1000, show_default=True)
@click.option("--rows", default=20_000, show_default=True, help="Rows timed per encode/decode.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--quick", is_flag=True, help="A few seconds: 2,000 rows, 1 repeat, 128 fidelity "
              "rows, 4 codecs, the close student only.")
@click.option("--json", default=None, help="Also write the result dict here.")
def main(**options):
    args = SimpleNamespace(**options)
    if args.quick:
        args.rows, args.repeats = 2_000, 1
    names = ("float16", "int8", "topk:10", "sample:20@{T}") if args.quick else CODECS
    torch.set_num_threads(1)  # the codecs are single-threaded numpy; two threads on a busy
    start = time.perf_counter()  # machine made the small autograd passes ~3x slower
    teacher, model_student, labels, scale = realistic_logits(args.classes)
    fit = slice(0, 128) if args.quick else slice(None)
    students = {"noise1": fidelity.perturbed(teacher, 1.0, seed=1)[fit]}
    if not args.quick:
        students["model"] = model_student
    setup = dict({k: v for k, v in vars(args).items() if k != "json"},
                 fidelity_rows=len(teacher[fit]), **describe(teacher, model_student, labels, scale))
    print(f"codecs at C={args.classes}: teacher top-1 prob p10/median/p90 "
          f"{'/'.join(f'{v:.2f}' for v in setup['teacher_top1_prob'].values())}, accuracy "
          f"{setup['teacher_accuracy']:.3f}; model student accuracy "
          f"{setup['model_student_accuracy']:.3f}")
    sizes, figures = speeds(names, teacher, args.rows, args.repeats)
    for key, size in sizes.items():
        print(f"  {key:<14} {size:6d} B/row")
    common.print_figures(figures, unit="rows/s")
    by_student = fidelity_rows(names, teacher[fit], students, labels[fit])
    print_fidelity(by_student)
    checks = checks_for(by_student, args.classes)
    common.print_checks(checks)
    print(f"total {time.perf_counter() - start:.1f} s")
    result = {"name": "codecs", "setup": setup, "bytes_per_row": sizes, "figures": figures,
              "fidelity": by_student, "checks": checks}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

"""How faithfully a teacher-cache codec serves the distillation losses: pure measurements.

For rows of exact teacher logits x [n, C] (float32) and student logits s [n, C] (a real model's,
or `perturbed` teacher logits), compare the loss d_i and its gradient g_i = dd_i/ds_i of a kd
mode computed from the codec's targets against the same from the exact logits, using the loss
functions of `losses` (kl at temperature T, l2, li = logit difference inhibition).
Dense codecs are decoded; the sampled codec uses its own unbiased `kl_loss`, optionally
averaged over `draws` independent draws per row (to check that the average converges).
Results are plain dicts of floats. `record` gives the `fidelity` attribute that
precompute-teachers stores in a compact cache (measured on the cache's reference rows).
"""
from dataclasses import dataclass

import numpy as np
import torch

from .errors import PctError
from .losses import kl_distill, l2_distill, ldi

MAX_ELEMENTS = 1 << 24  # rows x draws x classes per autograd pass
# Recorded in every compact cache: T = 1, and the README recipes' temperatures (4 in the
# digits demo, 100 in the ImageNet focal-distillation recipe).
RECORDED_TEMPERATURES = (1.0, 4.0, 100.0)
STUDENT_NOISE = 1.0  # the default stand-in student: exact teacher logits + N(0, 1)
LI_DEFAULTS = {"p": 2.0, "margin": 0.5}


def perturbed(logits, std, seed=0):
    """Teacher logits + N(0, std^2) noise: a stand-in student, float32 [n, C]."""
    noise = np.random.default_rng(seed).normal(0.0, std, np.shape(logits))
    return (np.asarray(logits, np.float64) + noise).astype(np.float32)


@dataclass(frozen=True)
class Setting:
    """A distillation loss setting measured: kd `mode` (kl, l2, li), the kl `temperature`, and
    li's exponent `li_p` and `li_margin` (the defaults of `pct train`)."""

    mode: str = "kl"
    temperature: float = 1.0
    li_p: float = LI_DEFAULTS["p"]
    li_margin: float = LI_DEFAULTS["margin"]


def distances(setting, student, teacher, labels=None):
    """d_i of `setting` from dense teacher logits: float32 [n] (tensor inputs [n, C])."""
    if setting.mode == "kl":
        return kl_distill(student, teacher, setting.temperature)
    if setting.mode == "l2":
        return l2_distill(student, teacher)
    if setting.mode == "li":
        if labels is None:
            raise PctError("kd loss mode li needs labels (their class is excluded)")
        return ldi(student, teacher, labels, p=setting.li_p, margin=setting.li_margin)
    raise PctError(f"fidelity measures kd loss modes kl, l2 and li, not {setting.mode!r}")


def _loss_and_grad(codec, encoded, student, setting, labels):
    """(d float32 [m], dd/ds float32 [m, C]) from the codec's encoded rows (numpy); codec None:
    `encoded` is the exact teacher logits."""
    s = torch.from_numpy(np.array(student, np.float32)).requires_grad_(True)
    if codec is None or codec.dense:
        teacher = encoded if codec is None else codec.decode(encoded, student.shape[1])
        teacher = np.ascontiguousarray(teacher, np.float32)
        d = distances(setting, s, torch.from_numpy(teacher), labels)
    else:
        d = codec.kl_loss(s, {k: torch.from_numpy(v) for k, v in encoded.items()},
                          setting.temperature)
    d.sum().backward()  # d_i depends on row i only: the gradient rows are per sample
    return d.detach().numpy(), s.grad.numpy()


def _labels(labels):
    return None if labels is None else torch.as_tensor(labels, dtype=torch.int64)


def codec_loss_and_grad(codec, exact, student, setting, labels=None, draws=1, seed=0):
    """(d float32 [n], g float32 [n, C]) of `codec`'s targets for exact teacher logits [n, C].

    Sampled codecs: averaged over `draws` independent draws per row (row i's draw j uses row
    id j*n + i in view `seed`); dense codecs are deterministic and ignore draws.
    """
    codec.require(setting.mode, setting.temperature)
    n, c = exact.shape
    if codec.dense or draws == 1:
        encoded = codec.encode(exact, np.arange(n), view=seed)
        return _loss_and_grad(codec, encoded, student, setting, _labels(labels))
    d, g = np.zeros(n, np.float64), np.zeros((n, c), np.float64)
    per_pass = max(1, MAX_ELEMENTS // max(1, n * c))
    for first in range(0, draws, per_pass):
        count = min(per_pass, draws - first)
        ids = (first + np.arange(count))[:, None] * n + np.arange(n)[None, :]
        encoded = codec.encode(np.tile(exact, (count, 1)), ids.ravel(), view=seed)
        dj, gj = _loss_and_grad(codec, encoded, np.tile(student, (count, 1)), setting, None)
        d += dj.reshape(count, n).sum(axis=0)
        g += gj.reshape(count, n, c).sum(axis=0)
    return (d / draws).astype(np.float32), (g / draws).astype(np.float32)


def exact_loss_and_grad(exact, student, setting, labels=None):
    """(d float32 [n], g float32 [n, C]) from the exact teacher logits."""
    return _loss_and_grad(None, np.asarray(exact, np.float32), student, setting, _labels(labels))


def _cosine(a, b):
    """Row-wise cosine of float [.., C] arrays (NaN where either is zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (a * b).sum(axis=-1) / norms, np.nan)


def _relative(error, reference):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(reference > 0, error / reference, np.nan)


def _quantiles(values, **named):
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {key: None for key in named}
    return {key: float(np.quantile(values, q)) for key, q in named.items()}


def gradient_agreement(g, g_exact):
    """Cosine and relative norm error of gradients g vs g_exact [n, C]: per sample
    (median and tails, rows with a zero exact gradient skipped), of the whole batch's gradient
    flattened ("batch"), and of the batch-summed gradient sum_i g_i [C] ("batch_sum")."""
    g, g_exact = np.asarray(g, np.float64), np.asarray(g_exact, np.float64)
    rel = _relative(np.linalg.norm(g - g_exact, axis=1), np.linalg.norm(g_exact, axis=1))
    out = {"cosine": _quantiles(_cosine(g, g_exact), median=0.5, p5=0.05, min=0.0),
           "rel_error": _quantiles(rel, median=0.5, p95=0.95, max=1.0)}
    for key, (a, b) in {"batch": (g.ravel(), g_exact.ravel()),
                        "batch_sum": (g.sum(axis=0), g_exact.sum(axis=0))}.items():
        out[key] = {"cosine": float(_cosine(a, b)),
                    "rel_error": float(_relative(np.linalg.norm(a - b), np.linalg.norm(b)))}
    return out


def top1_agreement(codec, encoded, exact):
    """Fraction of rows whose decoded top-1 class (the most often drawn class for sampled
    codecs, lowest index on ties) is the exact teacher's."""
    n, c = exact.shape
    if codec.dense:
        top = codec.decode(encoded, c).argmax(axis=1)
    else:
        drawn = encoded["indices"].astype(np.int64)
        flat = (np.arange(n)[:, None] * c + drawn).ravel()
        top = np.bincount(flat, minlength=n * c).reshape(n, c).argmax(axis=1)
    return float((top == exact.argmax(axis=1)).mean()) if n else None


def _result(codec, setting, draws, ours, exact, top1):
    """The `measure` dict of (d, g) `ours` against (d, g) `exact` of the same rows."""
    (d, g), (d_exact, g_exact) = ours, exact
    rel = _relative(np.abs(d.astype(np.float64) - d_exact), np.abs(d_exact))
    return {"codec": codec.name, "mode": setting.mode,
            "temperature": setting.temperature if setting.mode == "kl" else None,
            "rows": int(len(d)), "draws": draws if not codec.dense else 1,
            "loss_rel_error": _quantiles(rel, median=0.5, p95=0.95),
            "batch_loss_rel_error": float(_relative(abs(d.sum(dtype=np.float64) - d_exact.sum(
                dtype=np.float64)), abs(d_exact.sum(dtype=np.float64)))),
            "gradient": gradient_agreement(g, g_exact),
            "top1_agreement": top1}


def _pair(exact, student):
    exact = np.asarray(exact, np.float32)
    student = np.asarray(student, np.float32)
    if exact.shape != student.shape or exact.ndim != 2:
        raise PctError(f"exact teacher logits {exact.shape} and student logits {student.shape} "
                       f"must both be [n, C]")
    return exact, student


def measure_encoded(codec, encoded, exact, student, setting=Setting(), labels=None):
    """`measure` of rows already encoded (e.g. read from a compact cache): encoded
    {array name: [n, width]} against the exact teacher logits [n, C] of the same rows."""
    exact, student = _pair(exact, student)
    codec.require(setting.mode, setting.temperature)
    encoded = {name: np.asarray(encoded[name]) for name in codec.arrays(exact.shape[1])}
    ours = _loss_and_grad(codec, encoded, student, setting, _labels(labels))
    return _result(codec, setting, 1, ours, exact_loss_and_grad(exact, student, setting, labels),
                   top1_agreement(codec, encoded, exact))


def setting_key(mode, temperature=None):
    """'kl@4', 'l2', 'li': the key of a loss setting in a `record`."""
    return f"{mode}@{float(temperature):g}" if mode == "kl" else mode


def served_settings(codec, temperatures=RECORDED_TEMPERATURES):
    """[Setting] measured for `codec`: kl at each temperature, l2 and li for dense codecs; a
    sampled codec serves kl at its own temperature only."""
    if not codec.dense:
        return [Setting("kl", codec.temperature)]
    return [Setting("kl", float(t)) for t in temperatures] + [Setting("l2"), Setting("li")]


def against_stand_in(codec, encoded, exact, labels, setting):
    """`measure_encoded` against the stand-in student exact + N(0, STUDENT_NOISE^2)."""
    return measure_encoded(codec, encoded, exact, perturbed(exact, STUDENT_NOISE), setting,
                           labels)


def record(codec, exact, labels, temperatures=RECORDED_TEMPERATURES, encoded=None):
    """The `fidelity` attribute of a compact cache: {codec, rows, student, li, settings: {key:
    `measure` dict}} of `codec` on rows of exact teacher logits [n, C] (float32) with their
    labels [n], against the stand-in student exact + N(0, STUDENT_NOISE^2). `encoded`: the
    rows as stored (default: encoded here, view 0). NaN figures become None (JSON)."""
    exact = np.asarray(exact, np.float32)
    if encoded is None:
        encoded = codec.encode(exact, np.arange(len(exact)))
    out = {setting_key(s.mode, s.temperature): against_stand_in(codec, encoded, exact, labels, s)
           for s in served_settings(codec, temperatures)}
    return json_safe({"codec": codec.name, "rows": int(len(exact)), "li": dict(LI_DEFAULTS),
                       "student": f"exact teacher logits + N(0, {STUDENT_NOISE:g}) noise",
                       "settings": out})


def json_safe(value):
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def measure(codec, exact, student, setting=Setting(), labels=None, draws=1, seed=0):
    """Fidelity of `codec` for the loss `setting` (a Setting) on rows of exact teacher logits,
    as a plain dict.

    exact, student: float32 [n, C]; labels: int64 [n] (needed for li). Reports the per-sample
    loss relative error |d - d_exact| / d_exact (median, p95), the relative error of the batch
    mean loss, gradient agreement (see `gradient_agreement`) and top-1 agreement. draws > 1
    averages a sampled codec's loss and gradient over that many independent draws.
    """
    exact, student = _pair(exact, student)
    ours = codec_loss_and_grad(codec, exact, student, setting, labels, draws, seed)
    return _result(codec, setting, draws, ours,
                   exact_loss_and_grad(exact, student, setting, labels),
                   top1_agreement(codec, codec.encode(exact, view=seed), exact))


def table(results):
    """Lines of a human table of {setting key: `measure` dict}: loss relative error per sample
    (median / p95), gradient cosine per sample (median / p5) and relative norm error (median
    / p95), top-1 agreement. Missing figures print as n/a."""
    def cell(value, spec):
        return "n/a" if value is None else format(value, spec)

    lines = [f"  {'setting':<8} {'loss rel. err (med / p95)':>26} {'grad cosine (med / p5)':>24} "
             f"{'grad rel. err (med / p95)':>26} {'top-1 agree':>11}"]
    for key, m in results.items():
        loss, g = m["loss_rel_error"], m["gradient"]
        lines.append(
            f"  {key:<8} {cell(loss['median'], '.2e'):>12} / {cell(loss['p95'], '.2e'):<11} "
            f"{cell(g['cosine']['median'], '.5f'):>11} / {cell(g['cosine']['p5'], '.5f'):<10} "
            f"{cell(g['rel_error']['median'], '.2e'):>12} / {cell(g['rel_error']['p95'], '.2e'):<11} "
            f"{cell(m['top1_agreement'], '.4f'):>11}")
    return lines

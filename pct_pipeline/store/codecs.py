"""Teacher-cache codecs: how one (view, sample) row of C teacher logits is stored.

A codec describes the per-row arrays of its encoded form (`arrays(C)`: name -> (width, dtype)),
encodes float32 logits [n, C] into them and, where meaningful, decodes them back to dense
float32 logits [n, C]. Encoding and decoding are vectorised numpy over blocks of rows, so a whole
view (N up to ~1.3 M rows) can be converted in a background thread.

    float16      exact baseline: the logits in float16 (2C bytes; 2,000 B at C = 1,000).
    int8         per-row affine quantisation: 256 levels between the row's min and max,
                 codes uint8 + offset and step float32 (C + 8 bytes). Error <= step / 2.
    topk:K       TinyViT's sparse teacher: the K most probable classes (their log-softmax at
                 T = 1 in float16, int16 indices) + the row's logsumexp (float32): 4K + 4 bytes.
    sample:K@T   unbiased sparse targets (after "Sparse Logit Sampling", ACL 2025): K classes
                 drawn with replacement from softmax(logits / T), int16 indices, + the row's
                 sum_c p_c log p_c (float32): 2K + 4 bytes. Serves the kl loss at T only.

Store attributes of a codec are `codec` (its name) and `codec_params` (`params`);
`from_attrs` rebuilds it. A store without them holds plain logits (float16 unless its array's
dtype says float32), for which `from_attrs` gives the float16 codec.
"""
import math
import numbers
import re

import numpy as np

from ..errors import PctError, first_nonfinite_row
from ..views import splitmix64_array

BLOCK_ROWS = 4096  # bounds the float64 temporaries of a block to a few tens of MiB at C = 1,000
MAX_INT16_CLASSES = 32768
FORMS = "float16, int8, topk:K (e.g. topk:10), sample:K@T (e.g. sample:32@4)"


def _log_softmax(x):
    """float32 [n, C] -> (log-softmax [n, C], logsumexp [n, 1]), both float32."""
    top = x.max(axis=1, keepdims=True)
    shifted = x - top
    log_total = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted - log_total, top + log_total


def _finite_rows(block, row_ids):
    """The block as float32 [n, C]; PctError naming the first row with NaN/inf."""
    block = np.asarray(block, np.float32)
    bad = first_nonfinite_row(block)
    if bad is not None:
        raise PctError(f"teacher logits have NaN/inf in row {row_ids[bad]}")
    return block


def _check_int16(name, num_classes):
    if num_classes > MAX_INT16_CLASSES:
        raise PctError(f"codec {name} stores int16 class indices, which cannot address "
                       f"{num_classes} classes (at most {MAX_INT16_CLASSES})")


class _Codec:
    """Shared driver: validation and blocking; subclasses give `arrays`, `_encode`, `_decode`."""

    dense = True  # decode() gives dense logits that every loss mode can use

    def bytes_per_row(self, num_classes):
        """Bytes one (view, sample) row takes in the store, before compression."""
        return sum(w * np.dtype(d).itemsize for w, d in self.arrays(num_classes).values())

    def attrs(self):
        """The store attributes that describe this codec (see `from_attrs`)."""
        return {"codec": self.name, "codec_params": dict(self.params)}

    def require(self, mode, temperature):
        """PctError when this codec cannot serve kd loss `mode` at `temperature`."""

    def encode(self, logits, row_ids=None, view=0):
        """float32 logits [n, C] -> {array name: ndarray [n, width]} (see `arrays`).

        row_ids: int64 [n] sample indices (default 0..n-1) and view: the view index; random
        codecs draw from (seed, view, row id), so a row encodes alike in any block or order.
        NaN/inf logits raise PctError naming the row.
        """
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[1] < 1:
            raise PctError(f"codec {self.name} encodes logits of shape [n, C], got "
                           f"{logits.shape}")
        n, c = logits.shape
        row_ids = np.arange(n, dtype=np.int64) if row_ids is None else np.asarray(row_ids)
        if row_ids.shape != (n,):
            raise ValueError(f"{row_ids.shape} row ids for {n} rows of logits")
        out = {name: np.empty((n, w), d) for name, (w, d) in self.arrays(c).items()}
        for lo in range(0, n, BLOCK_ROWS):
            hi = min(n, lo + BLOCK_ROWS)
            block = _finite_rows(logits[lo:hi], row_ids[lo:hi])
            for name, value in self._encode(block, row_ids[lo:hi], view).items():
                out[name][lo:hi] = value
        return out

    def decode(self, encoded, num_classes):
        """{array name: [n, width]} -> dense float32 logits [n, num_classes]."""
        expected = self.arrays(num_classes)
        n = len(next(iter(encoded.values()))) if encoded else 0
        for name, (width, _) in expected.items():
            shape = np.shape(encoded.get(name))
            if shape != (n, width):
                raise PctError(f"codec {self.name}: encoded array '{name}' has shape {shape}, "
                               f"expected ({n}, {width})")
        out = np.empty((n, num_classes), np.float32)
        for lo in range(0, n, BLOCK_ROWS):
            block = {name: np.asarray(encoded[name][lo:lo + BLOCK_ROWS]) for name in expected}
            out[lo:lo + BLOCK_ROWS] = self._decode(block, num_classes)
        return out


class Float16(_Codec):
    """The exact baseline: logits rounded to float16 (relative error <= 2^-11)."""

    name = "float16"
    params = {"kind": "float16"}

    def arrays(self, num_classes):
        return {"logits": (num_classes, np.float16)}

    def _encode(self, block, row_ids, view):
        too_large = np.abs(block).max(axis=1) > np.finfo(np.float16).max
        if too_large.any():
            raise PctError(f"teacher logits of row {row_ids[np.flatnonzero(too_large)[0]]} "
                           f"exceed the float16 range (+-65504)")
        return {"logits": block.astype(np.float16)}

    def _decode(self, block, num_classes):
        return block["logits"].astype(np.float32)


class Int8(_Codec):
    """Per-row affine quantisation: code = round((x - min) / step), step = (max - min) / 255.

    Decoded x' = min + code * step, so |x' - x| <= step / 2 (plus float32 rounding); a constant
    row has step 0 and decodes exactly. Codes are uint8 (256 levels).
    """

    name = "int8"
    params = {"kind": "int8"}
    LEVELS = 256

    def arrays(self, num_classes):
        return {"codes": (num_classes, np.uint8), "offset": (1, np.float32),
                "step": (1, np.float32)}

    def _encode(self, block, row_ids, view):
        lo = block.min(axis=1, keepdims=True)
        step = (block.max(axis=1, keepdims=True) - lo) / np.float32(self.LEVELS - 1)
        bad = first_nonfinite_row(step)
        if bad is not None:
            raise PctError(f"teacher logits of row {row_ids[bad]} span more than the float32 "
                           f"range")
        codes = np.rint((block - lo) / np.where(step > 0, step, np.float32(1)))
        return {"codes": codes.clip(0, self.LEVELS - 1).astype(np.uint8), "offset": lo,
                "step": step}

    def _decode(self, block, num_classes):
        return block["codes"].astype(np.float32) * block["step"] + block["offset"]


class TopK(_Codec):
    """TinyViT's stored distribution: the K most probable classes + a uniform remainder.

    Stored per row: log p_c = x_c - lse (T = 1) of the K kept classes in float16 (descending),
    their int16 indices, and lse = logsumexp(x) in float32. Log-probabilities rather than raw
    logits or probabilities keep float16's relative precision where it matters: |error of
    log p| <= 2^-11 |log p|, whereas a raw logit near 20 rounds by up to 2^-7, and a float16
    probability near 1 leaves the remainder 1 - sum p with an error of up to 2^-12.
    Decoding gives the kept classes x_c' = lse + log p_c and every other class the logit
    lse + log(r / (C - K)), r = 1 - sum_kept p_c, so that softmax(x') at T = 1 is exactly
    TinyViT's: the kept probabilities, and the remaining mass r spread uniformly over the
    C - K others (logsumexp(x') = lse, so absolute kept logits are preserved too).
    At T != 1, softmax(x' / T) is *not* TinyViT's distribution (TinyViT keeps probabilities
    at its training temperature): the C - K classes stay tied, but the kept/rest ratio
    changes with T. At high T the true softmax is nearly flat and depends on every logit;
    the tied remainder then biases the kl gradient (see fidelity).
    """

    def __init__(self, k):
        if not (isinstance(k, numbers.Integral) and k >= 1):
            raise PctError(f"codec topk needs K >= 1 kept classes, got {k!r}")
        self.k = k = int(k)
        self.name = f"topk:{k}"
        self.params = {"kind": "topk", "k": k}

    def arrays(self, num_classes):
        if self.k > num_classes:
            raise PctError(f"codec {self.name} keeps more classes than the {num_classes} there are")
        _check_int16(self.name, num_classes)
        return {"logprobs": (self.k, np.float16), "indices": (self.k, np.int16),
                "lse": (1, np.float32)}

    def _encode(self, block, row_ids, view):
        logp, lse = _log_softmax(block)
        kept = np.argpartition(-block, self.k - 1, axis=1)[:, :self.k]
        kept_logp = np.take_along_axis(logp, kept, axis=1)
        order = np.argsort(-kept_logp, axis=1, kind="stable")
        kept, kept_logp = (np.take_along_axis(a, order, axis=1) for a in (kept, kept_logp))
        fp16_min = np.finfo(np.float16).min  # log p below it is a probability of exactly 0
        return {"logprobs": kept_logp.clip(fp16_min, 0).astype(np.float16),
                "indices": kept.astype(np.int16), "lse": lse}

    def _decode(self, block, num_classes):
        logp = block["logprobs"].astype(np.float32)
        lse = block["lse"].astype(np.float32)
        rest = num_classes - self.k
        remaining = 1 - np.exp(logp).sum(axis=1, keepdims=True, dtype=np.float64)
        # A remainder lost to rounding still gets the smallest normal mass, not log(0).
        remaining = np.maximum(remaining, np.finfo(np.float32).tiny)
        fill = (lse + np.log(remaining / max(rest, 1))).astype(np.float32)
        out = np.repeat(fill, num_classes, axis=1)
        np.put_along_axis(out, block["indices"].astype(np.intp), lse + logp, axis=1)
        return out


def _uniforms(seed, view, row_ids, count):
    """float64 [n, count] in [0, 1): a pure function of (seed, view, row id, draw)."""
    base = splitmix64_array(np.array([seed], np.uint64)) ^ np.array([view], np.uint64)
    keys = splitmix64_array(splitmix64_array(base) ^ np.asarray(row_ids).astype(np.uint64))
    draws = splitmix64_array(np.arange(count, dtype=np.uint64))
    bits = splitmix64_array(keys[:, None] ^ draws[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class Sample(_Codec):
    """Unbiased sparse kl targets: K classes drawn with replacement from p = softmax(x / T).

    Stored per row: the K drawn class indices (int16) and h = sum_c p_c log p_c (float32).
    `kl_loss` estimates d = T^2 (h - sum_c p_c log q_c), q the student's softmax at T, by
    T^2 (h - mean_k log q_{c_k}): its value and its gradient T (q - p_hat), p_hat the
    empirical distribution of the draws, are unbiased estimates of `kl_distill`'s at T
    (E p_hat = p). Their variance grows with T^2 C / K: at T = 100 a single row's estimate
    is dominated by sampling noise, which only averaging over rows and epochs removes.
    Draws are a pure function of (seed, view, row id) through a counter-based hash.
    """

    dense = False

    def __init__(self, k, temperature, seed=0):
        if not (isinstance(k, numbers.Integral) and k >= 1):
            raise PctError(f"codec sample needs K >= 1 draws, got {k!r}")
        if not (isinstance(temperature, numbers.Real) and 0 < temperature < math.inf):
            raise PctError(f"codec sample needs a positive temperature, got {temperature!r}")
        self.k, self.temperature, self.seed = int(k), float(temperature), int(seed)
        k = self.k
        self.name = f"sample:{k}@{self.temperature:g}"
        self.params = {"kind": "sample", "k": k, "temperature": self.temperature,
                       "seed": self.seed}

    def arrays(self, num_classes):
        _check_int16(self.name, num_classes)
        return {"indices": (self.k, np.int16), "neg_entropy": (1, np.float32)}

    def require(self, mode, temperature):
        if mode in ("l2", "li"):
            raise PctError(f"teacher cache codec {self.name} stores sampled classes, not "
                           f"logits: kd loss mode {mode} needs every class's logit; use kl")
        if mode == "kl" and float(temperature) != self.temperature:
            raise PctError(f"teacher cache codec {self.name} drew its classes at temperature "
                           f"{self.temperature:g}; it cannot serve kd temperature {temperature:g}")

    def _encode(self, block, row_ids, view):
        logp, _ = _log_softmax(block / np.float32(self.temperature))
        p = np.exp(logp)
        n, c = block.shape
        cdf = np.cumsum(p, axis=1, dtype=np.float64)
        # One searchsorted for the whole block: row r's cdf (ending near 1) is shifted by 2r.
        shift = 2.0 * np.arange(n)[:, None]
        u = _uniforms(self.seed, view, row_ids, self.k) * cdf[:, -1:] + shift
        flat = np.searchsorted((cdf + shift).ravel(), u.ravel(), side="right")
        drawn = flat.reshape(n, self.k) - c * np.arange(n)[:, None]
        return {"indices": drawn.clip(0, c - 1).astype(np.int16),
                "neg_entropy": (p * logp).sum(axis=1, keepdims=True)}

    def decode(self, encoded, num_classes):
        raise PctError(f"teacher cache codec {self.name} stores sampled classes, which do not "
                       f"decode to logits; use its kl_loss")

    def kl_loss(self, student_logits, encoded, temperature):
        """Unbiased estimate of kl_distill(student, teacher, T): float32 [B].

        student_logits: [B, C] any float dtype (gradient flows); encoded: {'indices': int16
        or int64 [B, K], 'neg_entropy': float32 [B, 1]} torch tensors of this codec's rows.
        """
        import torch.nn.functional as F

        self.require("kl", temperature)
        drawn = encoded["indices"].to(student_logits.device).long()
        neg_entropy = encoded["neg_entropy"].to(student_logits.device).float().reshape(-1)
        if drawn.shape != (student_logits.shape[0], self.k):
            raise PctError(f"codec {self.name}: {tuple(drawn.shape)} drawn classes for student "
                           f"logits of shape {tuple(student_logits.shape)}")
        log_q = F.log_softmax(student_logits.float() / self.temperature, dim=1)
        cross = log_q.gather(1, drawn).mean(dim=1)
        return self.temperature ** 2 * (neg_entropy - cross)


_PATTERNS = (
    (re.compile(r"float16"), lambda m: Float16()),
    (re.compile(r"int8"), lambda m: Int8()),
    (re.compile(r"topk:(\d+)"), lambda m: TopK(int(m[1]))),
    (re.compile(r"sample:(\d+)@(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"),
     lambda m: Sample(int(m[1]), float(m[2]))),
)


def parse(name):
    """'float16' | 'int8' | 'topk:K' | 'sample:K@T' -> codec object; PctError otherwise."""
    for pattern, build in _PATTERNS:
        match = pattern.fullmatch(str(name).strip())
        if match:
            return build(match)
    raise PctError(f"unknown teacher cache codec {name!r}; use one of {FORMS}")


def from_attrs(attrs):
    """The codec of a store from its attributes `codec` and `codec_params` (float16 when
    absent: stores written without a codec hold plain logits)."""
    params = attrs.get("codec_params")
    if params is None:
        return parse(attrs.get("codec", "float16"))
    builders = {"float16": lambda: Float16(), "int8": lambda: Int8(),
                "topk": lambda: TopK(params["k"]),
                "sample": lambda: Sample(params["k"], params["temperature"], params["seed"])}
    if params.get("kind") not in builders:
        raise PctError(f"unknown store codec kind {params.get('kind')!r} in {params!r}; "
                       f"known: {', '.join(builders)}")
    try:
        codec = builders[params["kind"]]()
    except KeyError as exc:
        raise PctError(f"store codec parameters {params!r} lack or misname {exc}") from None
    if attrs.get("codec", codec.name) != codec.name:
        raise PctError(f"store codec {attrs['codec']!r} disagrees with its parameters {params!r}")
    return codec

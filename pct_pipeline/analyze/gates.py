"""Release gates: `--gate EXPR` bounds a metric of each NEW model against the OLD one.

Grammar (spaces around the operator and the sign are allowed):

    GATE   := [ "class:" CLASS "." ] TERM OP BOUND
    TERM   := METRIC [ "." STAT ]                  a value of NEW (of CLASS in a class gate)
    OP     := "<=" | "<" | ">=" | ">" | "=="
    BOUND  := NUMBER                               a constant
            | ( "old" [ "." TERM ] | TERM ) [ ("+" | "-") NUMBER ]
    NUMBER := a non-negative decimal, optionally followed by "%" (hundredths)

`old` alone is OLD's value of the left-hand TERM; `old.TERM` another of OLD's values; a bare
TERM on the right is another value of NEW (`pfr>=nfr`). STAT is `ci95_low` or `ci95_high`,
the ends of the 95% bootstrap interval, for the metrics that have one (top1, nf, nfr). A class
gate's terms are that class's values; CLASS is a class name (any characters but `<`, `>` and
`=`) or, where no name matches it, a label number.

Units: fractions (top1, nfr, ...) take a percentage (`1.5%`) or a plain number in [0, 1];
counts (nf, pf, type1, type2) take plain numbers; relative_nfr takes either. Values within
1e-9 of their bound count as equal to it, so `nfr<=1.5%` holds at exactly 1.5%. An undefined
value (e.g. nfi when NEW makes no error) fails its gate.
"""
import difflib
import math
import re
from dataclasses import dataclass

from ..errors import PctError

FRACTION, COUNT, RATIO = "fraction", "count", "ratio"
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Metric:
    """A gateable metric: its key in the report, its unit, whether OLD has a value of it
    (`own`: a property of one model, not of the NEW-OLD pair), its interval's key, and its key
    in a per-class row (None: no per-class value)."""
    key: str
    kind: str
    own: bool = False
    ci: str | None = None
    per_class: str | None = None


METRICS = {
    "top1": Metric("top1", FRACTION, own=True, ci="top1_ci95", per_class="top1"),
    "top5": Metric("top5", FRACTION, own=True),
    "nf": Metric("negative_flips", COUNT, ci="negative_flips_ci95", per_class="negative_flips"),
    "pf": Metric("positive_flips", COUNT, per_class="positive_flips"),
    "nfr": Metric("nfr", FRACTION, ci="nfr_ci95", per_class="nfr"),
    "pfr": Metric("pfr", FRACTION, per_class="pfr"),
    "nfi": Metric("nfi", FRACTION),
    "pfi": Metric("pfi", FRACTION),
    "relative_nfr": Metric("relative_nfr", RATIO),
    "nfr_frac": Metric("nfr_frac", FRACTION),
    "pfr_frac": Metric("pfr_frac", FRACTION),
    "type1": Metric("type1_flips", COUNT),
    "type2": Metric("type2_flips", COUNT),
}
ALIASES = {"negative_flips": "nf", "positive_flips": "pf", "type1_flips": "type1",
           "type2_flips": "type2"}
STATS = ("ci95_low", "ci95_high")
OPS = {"<=": lambda a, b: a <= b + TOLERANCE, "<": lambda a, b: a < b - TOLERANCE,
       ">=": lambda a, b: a >= b - TOLERANCE, ">": lambda a, b: a > b + TOLERANCE,
       "==": lambda a, b: abs(a - b) <= TOLERANCE}
NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?"
NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*"
GATE = re.compile(r"\s*(?P<left>[^<>=]*?)\s*(?P<op><=|>=|==|<|>)\s*(?P<right>[^<>=]*?)\s*")
BOUND = re.compile(rf"(?P<term>{NAME})?\s*(?:(?P<sign>[+-])\s*(?P<number>{NUMBER}))?")
EXAMPLES = "e.g. 'nfr<=1.5%', 'top1>=old-0.2%' or 'class:cat.nf<=10'"


@dataclass(frozen=True)
class Term:
    """A value: `metric` (a METRICS name) with an optional `stat`, of OLD when `old`."""
    metric: str
    stat: str | None = None
    old: bool = False


@dataclass(frozen=True)
class Gate:
    """A parsed gate: `left OP (right + offset)`, or `left OP offset` when right is None.
    `offset` is in the metric's own unit (a fraction, a count)."""
    text: str
    op: str
    left: Term
    right: Term | None
    offset: float
    klass: str | None = None

    @property
    def needs_bootstrap(self):
        return any(t is not None and t.stat for t in (self.left, self.right))


def parse(text):
    """The Gate of `text`; a one-line PctError naming `text` if it is malformed or names an
    unknown metric (class names are checked later, against the data's: `resolve_class`)."""
    match = GATE.fullmatch(text)
    if not match or not match["left"] or not match["right"]:
        raise PctError(f"malformed gate {text!r}: expected METRIC OP BOUND, {EXAMPLES}")
    klass, left = _split_class(match["left"], text)
    left = _term(left, text, klass)
    right, offset = _bound(match["right"], left, text, klass)
    return Gate(text, match["op"], left, right, offset, klass)


def _split_class(left, text):
    """(class name or None, the term text) of a gate's left side."""
    if not left.startswith("class:"):
        return None, left
    head, _, last = left[len("class:"):].rpartition(".")
    if last in STATS:  # class:NAME.METRIC.STAT; the name itself may hold dots
        head, _, metric = head.rpartition(".")
        last = f"{metric}.{last}"
    if not head.strip() or not last.split(".")[0]:
        raise PctError(f"malformed gate {text!r}: a class gate reads class:NAME.METRIC OP "
                       f"BOUND, e.g. 'class:cat.nfr<=3%'")
    return head.strip(), last


def _term(text, gate, klass, old=False):
    """The Term of 'METRIC[.STAT]' (checked: a known metric, a statistic it has, a class value
    in a class gate)."""
    name, dot, stat = text.partition(".")
    if name.lower() in ("nan", "inf", "infinity"):
        raise PctError(f"gate {gate!r}: {text!r} is not a finite number")
    name = ALIASES.get(name, name)
    if name not in METRICS:
        raise PctError(f"gate {gate!r}: unknown metric {text!r} (known: "
                       f"{', '.join(METRICS)})")
    metric = METRICS[name]
    if dot and stat not in STATS:
        raise PctError(f"gate {gate!r}: unknown statistic {stat!r} of {name} (known: "
                       f"{', '.join(STATS)})")
    if stat and (metric.ci is None or klass is not None):
        what = "per-class values have" if klass is not None else f"{name} has"
        raise PctError(f"gate {gate!r}: {what} no bootstrap interval (intervals: top1, nf, "
                       f"nfr of a whole model)")
    if klass is not None and metric.per_class is None:
        raise PctError(f"gate {gate!r}: {name} has no per-class value (per class: "
                       f"{', '.join(m for m, x in METRICS.items() if x.per_class)})")
    if old and not metric.own:
        raise PctError(f"gate {gate!r}: 'old' has no {name}: {name} compares NEW with OLD "
                       f"(bound it by a number)")
    return Term(name, stat or None, old)


def _bound(text, left, gate, klass):
    """(right Term or None, offset) of a gate's right side."""
    if re.fullmatch(NUMBER, text):
        return None, _number(text, left, gate)
    match = BOUND.fullmatch(text)
    if not match or not match["term"]:
        raise PctError(f"malformed gate {gate!r}: the bound {text!r} is not a number, 'old' or "
                       f"a metric (optionally + or - a number), {EXAMPLES}")
    term = match["term"]
    if term == "old":
        right = Term(left.metric, left.stat, old=True)
        _term(left.metric + (f".{left.stat}" if left.stat else ""), gate, klass, old=True)
    elif term.startswith("old."):
        right = _term(term[len("old."):], gate, klass, old=True)
    else:
        right = _term(term, gate, klass)
    if METRICS[right.metric].kind != METRICS[left.metric].kind:
        raise PctError(f"gate {gate!r}: {left.metric} is a {METRICS[left.metric].kind} and "
                       f"{right.metric} a {METRICS[right.metric].kind}: they cannot be compared")
    offset = _number(match["number"], left, gate) if match["number"] else 0.0
    return right, -offset if match["sign"] == "-" else offset


def _number(text, left, gate):
    """A bound's number in `left`'s unit: percentages as fractions, counts as given."""
    kind, percent = METRICS[left.metric].kind, text.endswith("%")
    value = float(text.rstrip("%")) / (100 if percent else 1)
    if not math.isfinite(value):
        raise PctError(f"gate {gate!r}: {text!r} is not a finite number")
    if kind == COUNT and percent:
        rate = f" (or bound {left.metric}r, its rate)" if f"{left.metric}r" in METRICS else ""
        raise PctError(f"gate {gate!r}: {left.metric} counts samples; bound it by a number "
                       f"of samples, not {text!r}{rate}")
    if kind == FRACTION and not percent and value > 1:
        raise PctError(f"gate {gate!r}: {left.metric} is a fraction in [0, 1]; {text!r} is "
                       f"more than 1 (write {text}% for a percentage)")
    return value


def resolve_class(gate, names, num_classes):
    """The label of `gate`'s class: the label whose name it is, else the label number it
    spells; a one-line PctError naming the gate and the class otherwise."""
    if names is not None and gate.klass in names:
        return names.index(gate.klass)
    if gate.klass.isdigit() and int(gate.klass) < num_classes:
        return int(gate.klass)
    if names is None:
        raise PctError(f"gate {gate.text!r}: unknown class {gate.klass!r} (no input records "
                       f"class names: use a label number from 0 to {num_classes - 1})")
    near = difflib.get_close_matches(gate.klass, names, n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise PctError(f"gate {gate.text!r}: unknown class {gate.klass!r}{hint}")


def evaluate(gates, report, labels_of):
    """One result dict per (NEW model, gate), NEW models in report order: {new, gate, metric
    (the left-hand one), value, op, bound, passed}; `labels_of` maps each class gate to its
    label (see resolve_class)."""
    results = []
    for j, comp in enumerate(report["comparisons"], start=1):
        rows = {row["class"]: row for row in comp["per_class"]}
        for gate in gates:
            row = rows[labels_of[gate]] if gate.klass is not None else None
            left = _value(report, j, gate.left, row)
            base = 0.0 if gate.right is None else _value(report, j, gate.right, row)
            bound = None if base is None else base + gate.offset
            passed = left is not None and bound is not None and OPS[gate.op](left, bound)
            results.append({"new": comp["new"], "gate": gate.text, "metric": gate.left.metric,
                            "value": left, "op": gate.op, "bound": bound,
                            "passed": bool(passed)})
    return results


def _value(report, j, term, row=None):
    """A Term's value for NEW model j (models[j], comparisons[j - 1]), or for its per-class
    `row` in a class gate; None when undefined."""
    metric = METRICS[term.metric]
    if row is not None:
        return row[f"old_{metric.per_class}" if term.old else metric.per_class]
    source = (report["models"][0 if term.old else j] if metric.own
              else report["comparisons"][j - 1])
    if term.stat is None:
        return source[metric.key]
    interval = source[metric.ci]
    return None if interval is None else interval[STATS.index(term.stat)]


def format_value(metric, x):
    """A gate's value or bound in its metric's unit."""
    if x is None:
        return "n/a"
    kind = METRICS[metric].kind
    if kind == FRACTION:
        return f"{100 * x:.3f}%"
    if kind == COUNT:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"
    return f"{x:.4f}"

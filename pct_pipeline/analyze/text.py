"""The human-readable report of `pct analyze`: notes, tables, legend, gate lines (percentages
of N; intervals are 95% bootstrap intervals)."""
import textwrap

from .gates import format_value


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _ci(v, scale=100.0, digits=2):
    return "n/a" if v is None else f"[{scale * v[0]:.{digits}f}, {scale * v[1]:.{digits}f}]"


def _class(label, name):
    return str(label) if name is None else name


def _table(header, rows):
    """Aligned text table: first column left-aligned, the others right-aligned."""
    cells = [[str(x) for x in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w)
                       for i, (x, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


COMPARISON_ROWS = [
    ("negative flips (NF)", "negative_flips", str), ("NF 95% CI", "negative_flips_ci95",
                                                     lambda v: _ci(v, 1.0, 1)),
    ("positive flips (PF)", "positive_flips", str), ("NFR = NF / N", "nfr", _pct),
    ("NFR 95% CI", "nfr_ci95", _ci), ("PFR = PF / N", "pfr", _pct),
    ("NFI = NF / new errors", "nfi", _pct), ("PFI = PF / new correct", "pfi", _pct),
    ("relative NFR", "relative_nfr", lambda x: "n/a" if x is None else f"{x:.3f}"),
    ("NFR_frac", "nfr_frac", _pct), ("PFR_frac", "pfr_frac", _pct),
    ("type-I NF", "type1_flips", str), ("type-II NF", "type2_flips", str)]


def format_report(r):
    """The text report of a report dict (run.run): every table, the legend, the gates."""
    comps = r["comparisons"]
    parts = ["\n".join(f"note: {note}" for note in r["notes"])] if r["notes"] else []
    parts.append(_table(["model", "n", "top-1", "top-1 95% CI", "top-5"],
                        [[m["path"], m["n"], _pct(m["top1"]), _ci(m["top1_ci95"]),
                          _pct(m["top5"])] for m in r["models"]]))
    parts.append(_table([f"against {r['models'][0]['path']}", *(c["new"] for c in comps)],
                        [[label, *(fmt(c[key]) for c in comps)]
                         for label, key, fmt in COMPARISON_ROWS]))
    for c in comps if r["top_classes"] else ():  # --top-classes 0: neither table
        parts += [_per_class(c, r["num_classes"], r["top_classes"]), _transitions(c)]
    parts.append(_table(["logit-mean ensemble", "top-1", "top-5", "NF vs old"],
                        [[" + ".join(e["members"]), _pct(e["top1"]), _pct(e["top5"]),
                          e["negative_flips"]] for e in r["ensembles"]]))
    if r["paired"]:
        parts.append(_table([f"paired bootstrap of NF (B={r['bootstrap']})", "NF a", "NF b",
                             "a - b", "95% CI"],
                            [[f"a={p['new_a']} b={p['new_b']}", p["negative_flips_a"],
                              p["negative_flips_b"], p["difference"],
                              _ci(p["difference_ci95"], 1.0, 1)] for p in r["paired"]]))
    if r.get("gallery"):
        parts.append("\n".join(f"gallery {r['gallery']['path']}: {s['new']}: {len(s['shown'])} "
                               f"of {s['total']} {s['flips']} flips"
                               for s in r["gallery"]["sections"]))
    parts.append("legend:\n" + "\n".join(
        textwrap.fill(f"{key}: {text}", 100, initial_indent="  ", subsequent_indent="      ")
        for key, text in r["legend"].items()))
    if r["gates"]:
        parts.append(format_gates(r["gates"]))
    return "\n\n".join(parts)


def _per_class(c, num_classes, k):
    rows = c["per_class"][:k]
    return _table([f"per class, {c['new']} (top {len(rows)} of {num_classes} by NF)", "n",
                   "old top-1", "new top-1", "NF", "PF", "NFR"],
                  [[_class(x["class"], x["name"]), x["count"], _pct(x["old_top1"]),
                    _pct(x["top1"]), x["negative_flips"], x["positive_flips"], _pct(x["nfr"])]
                   for x in rows])


def _transitions(c):
    if not c["transitions"]:
        return f"negative-flip transitions, {c['new']}: none"
    return _table([f"negative-flip transitions, {c['new']}: true (= old prediction)",
                   "new prediction", "NF"],
                  [[_class(t["true"], t["true_name"]), _class(t["new"], t["new_name"]),
                    t["negative_flips"]] for t in c["transitions"]])


def format_gates(results):
    """One line per (NEW model, gate): the gate, the NEW store, its value, the bound, PASS or
    FAIL; then how many passed."""
    rows = [[g["gate"], g["new"], format_value(g["metric"], g["value"]),
             f"{g['op']} {format_value(g['metric'], g['bound'])}",
             "PASS" if g["passed"] else "FAIL"] for g in results]
    passed = sum(g["passed"] for g in results)
    verdict = "PASS" if passed == len(results) else "FAIL"
    return (_table(["gate", "NEW", "value", "bound", "result"], rows)
            + f"\ngates: {passed} of {len(results)} passed: {verdict}")

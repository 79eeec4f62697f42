"""pct_pipeline.analyze.metrics on small hand-counted cases."""
import math

import numpy as np
import pytest

from pct_pipeline.analyze import metrics

# Eight samples, three classes. Each row's argmax is the prediction written beside it.
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1])
OLD = np.array([
    [3.0, 0.0, 0.0],  # 0: pred 0, right
    [0.0, 2.0, 0.0],  # 1: pred 1, right
    [0.0, 0.0, 3.0],  # 2: pred 2, right
    [1.0, 0.9, 0.0],  # 3: pred 0, right
    [2.0, 1.0, 0.0],  # 4: pred 0, wrong (label 1)
    [1.0, 0.0, 0.5],  # 5: pred 0, wrong (label 2)
    [0.0, 2.0, 0.0],  # 6: pred 1, wrong (label 0)
    [0.0, 3.0, 0.0],  # 7: pred 1, right
], np.float32)
NEW = np.array([
    [3.0, 0.0, 0.0],  # 0: pred 0, right
    [0.0, 0.0, 3.0],  # 1: pred 2, wrong  -> negative flip
    [0.0, 0.0, 3.0],  # 2: pred 2, right
    [0.9, 1.0, 0.0],  # 3: pred 1, wrong  -> negative flip
    [0.0, 2.0, 0.0],  # 4: pred 1, right  -> positive flip
    [0.0, 0.0, 1.0],  # 5: pred 2, right  -> positive flip
    [0.0, 1.0, 0.0],  # 6: pred 1, wrong  (wrong in both: no flip)
    [0.0, 3.0, 0.0],  # 7: pred 1, right
], np.float32)
# Old right 5/8, new right 5/8, NF = {1, 3}, PF = {4, 5}, new errors = {1, 3, 6}.


def softmax(row):
    e = [math.exp(x) for x in row]
    return [x / sum(e) for x in e]


def scores(logits, labels=LABELS):
    return metrics.score([logits], labels)[0][0]


def compare(old, new):
    return metrics.compare(*metrics.score([old, new], LABELS)[0])


def correct(logits):
    return scores(logits).rank == 0


def test_hand_counted_comparison():
    r = compare(OLD, NEW)
    assert (r["negative_flips"], r["positive_flips"]) == (2, 2)
    assert r["nfr"] == 2 / 8 and r["pfr"] == 2 / 8
    assert r["nfi"] == pytest.approx(2 / 3)  # NF / new errors
    assert r["pfi"] == pytest.approx(2 / 5)  # PF / new correct
    # NFR / ((1 - err_old) * err_new) = (2/8) / ((5/8) * (3/8)) = 16/15
    assert r["relative_nfr"] == pytest.approx(16 / 15)
    # Sample 1: p_label 0.787 -> 0.045 (|dp| 0.74 >= 0.5: type II);
    # sample 3: 0.440 -> 0.398 (|dp| 0.04 <= 0.1: type I).
    assert (r["type1_flips"], r["type2_flips"]) == (1, 1)
    nfr_frac = sum(max(softmax(NEW[i])) - softmax(NEW[i])[LABELS[i]] for i in (1, 3)) / 8
    pfr_frac = sum(max(softmax(OLD[i])) - softmax(OLD[i])[LABELS[i]] for i in (4, 5)) / 8
    assert r["nfr_frac"] == pytest.approx(nfr_frac, rel=1e-5)
    assert r["pfr_frac"] == pytest.approx(pfr_frac, rel=1e-5)


def test_flip_masks_and_classes():
    nf, pf = metrics.flips(correct(OLD), correct(NEW))
    assert np.flatnonzero(nf).tolist() == [1, 3] and np.flatnonzero(pf).tolist() == [4, 5]
    counts = metrics.per_class(LABELS, correct(OLD), correct(NEW), 3)
    # class 0: samples 0, 3, 6; class 1: 1, 4, 7; class 2: 2, 5 (see the comments above)
    assert {k: v.tolist() for k, v in counts.items()} == {
        "count": [3, 3, 2], "old_correct": [2, 2, 1], "new_correct": [1, 2, 2],
        "negative_flips": [1, 1, 0], "positive_flips": [0, 1, 1]}


def test_transitions_of_negative_flips():
    rows = np.array([1, 3])  # the negative flips: 1 -> predicted 2, 3 -> predicted 1
    predicted = metrics.argmax_rows(NEW, rows)
    assert predicted.tolist() == [2, 1] and predicted.dtype == np.int64
    assert metrics.transitions(LABELS[rows], predicted, 10) == [(0, 1, 1), (1, 2, 1)]
    true, new = np.array([2, 0, 2, 1, 2, 0]), np.array([1, 2, 1, 0, 1, 2])
    assert metrics.transitions(true, new, 2) == [(2, 1, 3), (0, 2, 2)]  # most frequent first
    assert metrics.transitions(np.array([], np.int64), np.array([], np.int64), 3) == []
    assert metrics.argmax_rows(np.array([[1.0, 3.0, 3.0]], np.float16), [0]).tolist() == [1]


def test_model_against_itself_has_no_flips():
    r = compare(NEW, NEW)
    assert r["negative_flips"] == r["positive_flips"] == 0
    assert r["nfr"] == r["nfr_frac"] == r["relative_nfr"] == r["nfi"] == 0


def test_zero_denominators_are_none():
    perfect = np.eye(3, dtype=np.float32)[LABELS] * 5  # always right: no new errors
    r = compare(OLD, perfect)
    assert r["nfi"] is None and r["relative_nfr"] is None and r["pfi"] == pytest.approx(3 / 8)
    hopeless = np.eye(3, dtype=np.float32)[(LABELS + 1) % 3] * 5  # never right
    r = compare(hopeless, NEW)
    assert r["negative_flips"] == 0 and r["relative_nfr"] is None  # 1 - err_old = 0
    assert r["positive_flips"] == 5


def test_argmax_ties_go_to_the_lowest_class():
    logits = np.array([[2, 5, 5, 5]] * 4, np.float16)
    labels = np.array([0, 1, 2, 3])
    # Class 1 wins the tie; label 2 has class 1 above it, label 3 has classes 1 and 2.
    assert metrics.rank_block(logits.astype(np.float32), labels).tolist() == [3, 0, 1, 2]
    ranks = scores(logits, labels).rank
    assert ((ranks == 0) == (np.argmax(logits, axis=1) == labels)).all()
    assert (ranks < 2).tolist() == [False, True, True, False]  # top-2: classes 1 and 2


def test_ranks_match_argmax_and_sorting_across_blocks(monkeypatch):
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 70)  # 7-row blocks of 5 classes (2 arrays)
    rng = np.random.default_rng(1)
    logits = rng.integers(0, 4, (50, 5)).astype(np.float16)  # many ties
    labels = rng.integers(0, 5, 50)
    ranks = scores(logits, labels).rank
    assert ((ranks == 0) == (np.argmax(logits, axis=1) == labels)).all()
    order = np.argsort(-logits.astype(np.float32), axis=1, kind="stable")  # ties: lower first
    assert ranks.tolist() == [int(np.flatnonzero(o == y)[0]) for o, y in zip(order, labels)]


def test_ensemble_is_argmax_of_mean_logits():
    a = np.array([[3.0, 0.0, 2.5], [1.0, 0.0, 0.0]], np.float32)
    b = np.array([[0.0, 3.0, 2.5], [0.0, 3.0, 0.0]], np.float32)
    labels = np.array([2, 1])
    # Row 0: mean [1.5, 1.5, 2.5] -> class 2 though neither member predicts it.
    # Row 1: a = [1, 0, 0] ranks class 0 above label 1 (class 2 ties at a higher index: below);
    # mean [0.5, 1.5, 0] -> class 1.
    singles, (pair,) = metrics.score([a, b], labels, [(0, 1)])
    assert [s.rank.tolist() for s in singles] == [[1, 1], [1, 0]] and pair.tolist() == [0, 0]
    three = metrics.score([a, b, a], labels, [(0, 1, 2)])[1][0]
    mean = (a + b + a) / 3
    assert ((three == 0) == (np.argmax(mean, axis=1) == labels)).all()


def test_non_finite_logits_name_the_first_bad_row(monkeypatch):
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 18)  # 2-row blocks (3 arrays of 3 classes)
    logits = np.zeros((9, 3), np.float16)
    logits[6, 1], logits[8, 0] = np.nan, np.inf
    with pytest.raises(metrics.NonFiniteLogits) as info:
        metrics.score([np.zeros((9, 3)), logits], np.zeros(9, np.int64), [(0, 1)])
    assert (info.value.model, info.value.row) == (1, 6)


def test_softmax_scores_leave_input_unchanged(monkeypatch):
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 27)  # 3-row blocks (3 arrays of 3 classes)
    before = OLD.copy()
    (old, new), (pair,) = metrics.score([OLD, NEW], LABELS, [(0, 1)])
    assert (OLD == before).all()
    for i in (1, 3, 4, 5):  # where exactly one of the two is right
        assert old.p_label[i] == pytest.approx(softmax(OLD[i])[LABELS[i]])
        assert new.p_max[i] == pytest.approx(max(softmax(NEW[i])))
    assert np.isnan(old.p_label[[0, 2, 6, 7]]).all() and np.isnan(new.p_max[[0, 2, 6, 7]]).all()
    mean = (OLD + NEW) / 2
    assert ((pair == 0) == (mean.argmax(1) == LABELS)).all()
    with pytest.raises(ValueError, match="one score"):  # scored apart: no softmax on flips
        metrics.compare(scores(OLD), scores(NEW))


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    right = rng.random(500) < 0.8
    sums = metrics.bootstrap_sums(right[:, None], 1000, seed=3)
    lo, hi = metrics.percentile_ci(sums[:, 0] / 500)
    assert lo < right.mean() < hi and hi - lo < 0.1
    assert (metrics.bootstrap_sums(right[:, None], 1000, seed=3) == sums).all()
    assert not (metrics.bootstrap_sums(right[:, None], 1000, seed=4) == sums).all()


def test_bootstrap_matches_resampling_sample_indices():
    """The multinomial shortcut has the distribution of drawing N row indices with replacement."""
    rng = np.random.default_rng(5)
    x = rng.random((300, 3)) < [0.2, 0.5, 0.9]
    fast = metrics.bootstrap_sums(x, 4000, seed=0)
    idx = np.random.default_rng(1).integers(0, 300, (4000, 300))
    slow = x[idx].sum(axis=1)
    for k in range(3):
        q = [2.5, 25, 50, 75, 97.5]
        assert np.abs(np.percentile(fast[:, k], q) - np.percentile(slow[:, k], q)).max() <= 2
        assert fast[:, k].std() == pytest.approx(slow[:, k].std(), rel=0.08)


def test_paired_difference_is_tighter_than_marginals():
    rng = np.random.default_rng(2)
    n = 1000
    nf_a = rng.random(n) < 0.06
    nf_b = nf_a & (rng.random(n) < 0.7)  # b keeps 70% of a's flips and adds none
    sums = metrics.bootstrap_sums(np.column_stack([nf_a, nf_b]), 1000, seed=0)
    diff = nf_a.sum() - nf_b.sum()
    lo, hi = metrics.percentile_ci(sums[:, 0] - sums[:, 1])
    assert lo <= diff <= hi and lo > 0  # the reduction is significant when paired
    a_lo, a_hi = metrics.percentile_ci(sums[:, 0])
    b_lo, b_hi = metrics.percentile_ci(sums[:, 1])
    assert a_lo < b_hi  # the marginal intervals overlap: unpaired, it looks inconclusive
    assert hi - lo < 0.7 * ((a_hi - a_lo) + (b_hi - b_lo)) / 2


def test_ratio_of_zero_is_none():
    assert metrics.ratio(3, 0) is None and metrics.ratio(0, 4) == 0.0

"""Loss values against hand arithmetic (plain Python math on the SPEC formulas)."""
import math

import pytest
import torch

from pct_pipeline.errors import PctError
from pct_pipeline.losses import (LossConfig, bct, cna, focal_weights, kl_distill,
                                       l2_distill, ldi, pct_loss)


def t(rows, dtype=torch.float32, grad=False):
    return torch.tensor(rows, dtype=dtype, requires_grad=grad)


def labels(values):
    return torch.tensor(values, dtype=torch.int64)


def py_log_softmax(row):
    top = max(row)
    lse = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - lse for x in row]


def py_ce(row, label):
    return -py_log_softmax(row)[label]


def py_kl(new_row, old_row, temp):
    log_new = py_log_softmax([x / temp for x in new_row])
    log_old = py_log_softmax([x / temp for x in old_row])
    return temp ** 2 * sum(math.exp(lo) * (lo - ln) for lo, ln in zip(log_old, log_new))


def close(tensor, expected, tol=1e-5):
    assert tensor.dtype == torch.float32
    assert tensor.tolist() == pytest.approx(expected, abs=tol, rel=tol)


# --- kl / l2 -------------------------------------------------------------------------------

def test_kl_includes_t_squared_and_is_zero_for_equal_logits():
    # T = 2, old = [2 ln 3, 0] -> p_old = softmax([ln 3, 0]) = [3/4, 1/4]; new = [0, 0] ->
    # p_new = [1/2, 1/2]. KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120; times T^2 = 4.
    new = t([[0.0, 0.0], [1.0, -2.0]])
    old = t([[2 * math.log(3), 0.0], [1.0, -2.0]])
    close(kl_distill(new, old, 2.0), [4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)), 0.0])
    assert kl_distill(new, old, 2.0)[0].item() == pytest.approx(0.5232481, abs=1e-6)
    assert kl_distill(old, old, 3.0).tolist() == [0.0, 0.0]


def test_kl_three_classes_against_plain_python():
    new, old = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]], [[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    close(kl_distill(t(new), t(old), 4.0), [py_kl(n, o, 4.0) for n, o in zip(new, old)])


def test_l2_is_mean_squared_difference_over_classes():
    # (1 + 0 + 4) / 3 and (0.25 + 0.25 + 9) / 3
    close(l2_distill(t([[1, 2, 3], [0, 0, 0]]), t([[0, 2, 5], [0.5, -0.5, 3]])),
          [5 / 3, 9.5 / 3])


# --- ldi -----------------------------------------------------------------------------------

LDI_NEW = [[3.0, 0.0, 1.0, -2.0]]
LDI_OLD = [[1.0, 0.2, 1.0, 0.0]]  # |diff| = [2, 0.2, 0, 2]; minus margin 0.5 -> [1.5, 0, 0, 1.5]


def test_ldi_margin_power_and_exclude_gt():
    new, old, y = t(LDI_NEW), t(LDI_OLD), labels([1])
    # p = 2, label 1 excluded: (2.25 + 0 + 2.25) / 3 classes
    close(ldi(new, old, y, p=2, margin=0.5, exclude_gt=True), [1.5])
    # all 4 classes: 4.5 / 4
    close(ldi(new, old, y, p=2, margin=0.5, exclude_gt=False), [1.125])
    # p = 1: (1.5 + 1.5) / 4
    close(ldi(new, old, y, p=1, margin=0.5, exclude_gt=False), [0.75])
    # label 0 excluded, margin 0: (0.04 + 0 + 4) / 3
    close(ldi(new, old, labels([0]), p=2, margin=0.0, exclude_gt=True), [4.04 / 3])


def test_ldi_topk_uses_students_highest_logits_and_drops_label_inside_topk():
    # new = [2, 1, 0, -1, 0.5]: top-3 classes are 0, 1, 4. |diff| = [2, 2, 0, 1, 0.5],
    # margin 0.5 -> [1.5, 1.5, 0, 0.5, 0], squared -> [2.25, 2.25, 0, 0.25, 0].
    new = t([[2.0, 1.0, 0.0, -1.0, 0.5]] * 2)
    old = t([[0.0, 3.0, 0.0, 0.0, 0.0]] * 2)
    y = labels([1, 3])
    # sample 0: label 1 in the top 3 -> classes {0, 4}: (2.25 + 0) / 2 (k - 1 classes)
    # sample 1: label 3 outside -> classes {0, 1, 4}: (2.25 + 2.25 + 0) / 3 (k classes)
    close(ldi(new, old, y, p=2, margin=0.5, exclude_gt=True, topk=3), [1.125, 1.5])
    close(ldi(new, old, y, p=2, margin=0.5, exclude_gt=False, topk=3), [1.5, 1.5])
    # the teacher's ranking (class 1 on top) must not matter: top-1 of new is class 0
    close(ldi(new, old, y, p=2, margin=0.5, exclude_gt=False, topk=1), [2.25, 2.25])
    # top-1 = the label with exclude_gt: no class left, d = 0 by definition
    close(ldi(new, old, labels([0, 0]), exclude_gt=True, topk=1), [0.0, 0.0])


def test_ldi_clamps_at_exactly_zero_inside_margin():
    new = t([[0.3, -0.2, 0.1]], grad=True)
    old = t([[0.0, 0.0, 0.0]])
    d = ldi(new, old, labels([2]), p=1, margin=0.5, exclude_gt=False)
    assert d.tolist() == [0.0]  # a 1e-7 floor would give 1e-7 here
    d.sum().backward()
    assert new.grad.tolist() == [[0.0, 0.0, 0.0]]


def test_ldi_topk_out_of_range_and_bad_p_raise():
    new, old = t(LDI_NEW), t(LDI_OLD)
    with pytest.raises(PctError, match="5"):
        ldi(new, old, labels([0]), topk=5)
    with pytest.raises(PctError, match="0.5"):
        ldi(new, old, labels([0]), p=0.5)


# --- cna -----------------------------------------------------------------------------------

def unit(deg, scale=1.0):
    return [scale * math.cos(math.radians(deg)), scale * math.sin(math.radians(deg))]


# Teacher features at 0, 10, 25 and 90 degrees (scaled: normalisation must undo it).
# Nearest other sample by angle: 0 -> 1 (10 deg), 1 -> 0 (10 < 15), 2 -> 1 (15), 3 -> 2 (65).
OLD_FEATS = [unit(0, 2.0), unit(10), unit(25, 5.0), unit(90, 0.3)]
# Student unit vectors (some scaled): cos(0,2) = 0.6, cos(1,2) = 0.8, every other pair 0.
NEW_FEATS = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 3.0]]
TAU = 0.5  # s = cos / 0.5: s02 = 1.2, s12 = 1.6, other pairs 0


def cna_expected():
    e = math.exp
    return [math.log(1 + e(1.2) + 1) - 0.0,       # others (1, 2, 3), positive 1: s01 = 0
            math.log(1 + e(1.6) + 1) - 0.0,       # others (0, 2, 3), positive 0: s10 = 0
            math.log(e(1.2) + e(1.6) + 1) - 1.6,  # others (0, 1, 3), positive 1: s21 = 1.6
            math.log(3.0) - 0.0]                  # others (0, 1, 2), positive 2: s32 = 0


def test_cna_positive_is_teachers_nearest_neighbour():
    d = cna(t(NEW_FEATS), t(OLD_FEATS), temperature=TAU)
    close(d, cna_expected())
    # the student's own nearest neighbour of sample 0 is 2; it must not be used
    assert d[0].item() != pytest.approx(math.log(2 + math.exp(1.2)) - 1.2)


def test_cna_anchors_equal_rows_of_full_computation():
    new, old = t(NEW_FEATS), t(OLD_FEATS)
    full = cna(new, old, TAU)
    assert torch.equal(cna(new, old, TAU, anchors=slice(2, 4)), full[2:4])
    assert torch.equal(cna(new, old, TAU, anchors=torch.tensor([3, 0])), full[[3, 0]])


def test_cna_exact_under_bf16_autocast():
    new, old = t(NEW_FEATS), t(OLD_FEATS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = cna(new, old, 0.01)
    close(d, cna(new, old, 0.01).tolist(), tol=1e-6)


def test_cna_needs_two_samples():
    with pytest.raises(PctError, match="got 1"):
        cna(t([[1.0, 0.0]]), t([[1.0, 0.0]]))


# --- focal weights, bct --------------------------------------------------------------------

# labels all 0. old: right, right, wrong, wrong; new: right, wrong, right, wrong.
FOCAL_NEW = [[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]]
FOCAL_OLD = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]


@pytest.mark.parametrize("name, expected", [
    ("all_pass", [1.0, 1.0, 1.0, 1.0]),          # w = 1 whatever alpha and beta
    ("old_correct", [6.0, 6.0, 1.0, 1.0]),       # 1 + 5 * [old right]
    ("neg_flip", [1.0, 6.0, 1.0, 1.0]),          # 1 + 5 * [old right and new wrong]
    ("new_incorrect", [1.0, 6.0, 1.0, 6.0]),     # 1 + 5 * [new wrong]
])
def test_focal_weights(name, expected):
    new = t(FOCAL_NEW, grad=True)
    w = focal_weights(new, t(FOCAL_OLD), labels([0, 0, 0, 0]), name, alpha=1.0, beta=5.0)
    close(w, expected)
    assert not w.requires_grad


def test_focal_unknown_filter_names_value_and_choices():
    with pytest.raises(PctError, match="'likelihood'.*old_correct"):
        focal_weights(t(FOCAL_NEW), t(FOCAL_OLD), labels([0, 0, 0, 0]), "likelihood", 1.0, 1.0)


def test_bct_is_ce_of_old_classifier_on_new_features():
    # logits = W f + b = [1, 2, 1 + 2 - 3] = [1, 2, 0]; CE for label 1 = log(e + e^2 + 1) - 2;
    # zero features give the bias [0, 0, -3]; CE for label 2 = log(1 + 1 + e^-3) + 3
    weight, bias = t([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), t([0.0, 0.0, -3.0])
    d = bct(t([[1.0, 2.0], [0.0, 0.0]]), weight, bias, labels([1, 2]))
    close(d, [math.log(math.e + math.e ** 2 + 1) - 2, math.log(2 + math.exp(-3)) + 3])
    close(bct(t([[1.0, 2.0]]), weight, None, labels([2])), [py_ce([1.0, 2.0, 3.0], 2)])


def test_bct_width_mismatch_names_both_widths():
    with pytest.raises(PctError, match="width 3 .* width 2"):
        bct(t([[1.0, 2.0, 3.0]]), t([[1.0, 0.0]]), None, labels([0]))


# --- the total loss ------------------------------------------------------------------------

TOTAL_NEW = [[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]]
TOTAL_OLD = [[2.0, 0.0, 0.0], [1.0, 0.0, 0.0]]    # old right on sample 0 only (labels 0, 1)
TOTAL_FEATS = [[1.0, 2.0], [0.0, 1.0]]
BCT_W, BCT_B = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, -3.0]  # -> [1, 2, 0], [0, 1, -2]


def test_total_formula_with_alpha_weight_and_bct():
    cfg = LossConfig(mode="kl", kd_alpha=0.25, kd_loss_weight=2.0, kd_temperature=2.0,
                     kd_filter="old_correct", filter_base=1.0, filter_scale=3.0,
                     bct_loss_weight=0.5)
    total, parts = pct_loss(cfg, t(TOTAL_NEW), labels([0, 1]), t(TOTAL_OLD),
                            new_features=t(TOTAL_FEATS), bct_head=(t(BCT_W), t(BCT_B)))
    ce = (py_ce(TOTAL_NEW[0], 0) + py_ce(TOTAL_NEW[1], 1)) / 2
    bct_mean = (py_ce([1.0, 2.0, 0.0], 0) + py_ce([0.0, 1.0, -2.0], 1)) / 2
    # w = 1 + 3 * [old right] = [4, 1]
    kl = [py_kl(n, o, 2.0) for n, o in zip(TOTAL_NEW, TOTAL_OLD)]
    fd = (4 * kl[0] + 1 * kl[1]) / 2
    expected = 0.75 * (ce + 0.5 * bct_mean) + 0.25 * 2.0 * fd
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert {k: v.item() for k, v in parts.items()} == pytest.approx(
        {"loss": expected, "ce": ce, "bct": bct_mean, "fd": fd, "focal_weight": 2.5}, rel=1e-5)


def test_no_mode_means_alpha_zero():
    cfg = LossConfig(mode=None, kd_alpha=0.9, bct_loss_weight=0.5)
    total, parts = pct_loss(cfg, t(TOTAL_NEW), labels([0, 1]), t(TOTAL_OLD),
                            new_features=t(TOTAL_FEATS), bct_head=(t(BCT_W), t(BCT_B)))
    ce = (py_ce(TOTAL_NEW[0], 0) + py_ce(TOTAL_NEW[1], 1)) / 2
    bct_mean = (py_ce([1.0, 2.0, 0.0], 0) + py_ce([0.0, 1.0, -2.0], 1)) / 2
    assert total.item() == pytest.approx(ce + 0.5 * bct_mean, rel=1e-5)
    assert parts["fd"].item() == 0.0 and parts["focal_weight"].item() == 0.0


def test_focal_weights_apply_per_sample_not_mean_times_mean():
    # l2: sample 0 diff [1, 1] -> d = 1, old right; sample 1 diff [2, 2] -> d = 4, old wrong.
    # w = 0 + 1 * [old right] = [1, 0]. Per sample: (1*1 + 0*4) / 2 = 0.5;
    # the research code's mean(d) * mean(w) = 2.5 * 0.5 = 1.25.
    cfg = LossConfig(mode="l2", kd_alpha=1.0, kd_filter="old_correct", filter_base=0.0,
                     filter_scale=1.0)
    total, parts = pct_loss(cfg, t([[2.0, 1.0], [2.0, 3.0]]), labels([0, 0]),
                            t([[1.0, 0.0], [0.0, 1.0]]))
    assert parts["fd"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(0.5)  # a = 1: only a * lambda * FD remains


def test_cna_through_pct_loss_with_anchors_and_bct_on_anchor_rows():
    # rows 2, 3 of the "gathered" batch are this process's samples (labels 0, 1).
    local_new, local_old = t([[0.0, 1.0], [3.0, 0.0]]), t([[1.0, 0.0], [1.0, 0.0]])
    cfg = LossConfig(mode="cna", kd_alpha=0.5, kd_loss_weight=1.0, cna_temperature=TAU,
                     kd_filter="old_correct", filter_base=1.0, filter_scale=1.0,
                     bct_loss_weight=1.0)
    weight = t([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # old logits of feature f: f[:2]
    total, parts = pct_loss(cfg, local_new, labels([0, 1]), local_old, t(NEW_FEATS),
                            t(OLD_FEATS), bct_head=(weight, None), cna_anchors=slice(2, 4))
    d = cna_expected()[2:]
    fd = (2 * d[0] + 1 * d[1]) / 2  # old right on the first local sample only
    ce = (py_ce([0.0, 1.0], 0) + py_ce([3.0, 0.0], 1)) / 2
    bct_mean = (py_ce([0.6, 0.8], 0) + py_ce([0.0, 0.0], 1)) / 2  # rows 2, 3 of NEW_FEATS
    assert parts["fd"].item() == pytest.approx(fd, rel=1e-5)
    assert total.item() == pytest.approx(0.5 * (ce + bct_mean) + 0.5 * fd, rel=1e-5)


@pytest.mark.parametrize("mode", ["kl", "l2", "li", "cna"])
def test_gradients_reach_student_only(mode):
    torch.manual_seed(0)
    new_logits, old_logits = (torch.randn(4, 5, requires_grad=True) for _ in range(2))
    new_feats = torch.randn(4, 3, requires_grad=True)
    old_feats = torch.randn(4, 6, requires_grad=True)
    weight, bias = torch.randn(5, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    cfg = LossConfig(mode=mode, kd_alpha=0.5, kd_filter="neg_flip", filter_base=1.0,
                     filter_scale=2.0, li_margin=0.0, bct_loss_weight=1.0)
    total, _ = pct_loss(cfg, new_logits, labels([0, 1, 2, 3]), old_logits, new_feats,
                        old_feats, bct_head=(weight, bias))
    total.backward()
    assert new_logits.grad.abs().sum() > 0 and new_feats.grad.abs().sum() > 0
    assert old_logits.grad is None and old_feats.grad is None
    assert weight.grad is None and bias.grad is None


def test_float16_inputs_give_float32_outputs():
    new16 = t([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]], torch.float16)
    old16 = t([[2.0, 0.0, 0.0], [0.1, 0.3, 0.2]], torch.float16)
    new32, old32, y = new16.float(), old16.float(), labels([0, 1])
    for fn in (lambda n, o: kl_distill(n, o, 2.0), l2_distill, lambda n, o: ldi(n, o, y),
               lambda n, o: focal_weights(n, o, y, "neg_flip", 1.0, 1.0),
               lambda n, o: cna(n, o, 0.1)):
        out = fn(new16, old16)
        assert out.dtype == torch.float32
        assert torch.allclose(out, fn(new32, old32), atol=1e-6)
    out = bct(new16[:, :2], old16[:, :2], None, y)
    assert out.dtype == torch.float32
    total, parts = pct_loss(LossConfig(mode="kl"), new16, y, old16)
    assert total.dtype == torch.float32 and parts["fd"].dtype == torch.float32


# --- user errors ---------------------------------------------------------------------------

def test_unknown_mode_and_filter_name_value_and_choices():
    with pytest.raises(PctError, match="'renyi'.*kl, l2, li, cna"):
        LossConfig(mode="renyi")
    with pytest.raises(PctError, match="'old-correct'.*all_pass, old_correct, neg_flip"):
        LossConfig(kd_filter="old-correct")
    with pytest.raises(PctError, match="1.5"):
        LossConfig(kd_alpha=1.5)
    with pytest.raises(PctError, match="0"):
        LossConfig(li_compute_topk=0)


def test_cna_without_teacher_logits_needs_all_pass():
    feats = t(NEW_FEATS)
    with pytest.raises(PctError, match="neg_flip"):
        pct_loss(LossConfig(mode="cna", kd_filter="neg_flip"), torch.zeros(4, 2),
                 labels([0, 1, 0, 1]), None, feats, t(OLD_FEATS))
    cfg = LossConfig(mode="cna", kd_alpha=1.0, cna_temperature=TAU)
    total, _ = pct_loss(cfg, torch.zeros(4, 2), labels([0, 1, 0, 1]), None, feats, t(OLD_FEATS))
    assert total.item() == pytest.approx(sum(cna_expected()) / 4, rel=1e-5)


def test_missing_or_mismatched_teacher_inputs_raise():
    with pytest.raises(PctError, match="kl needs teacher logits"):
        pct_loss(LossConfig(mode="kl"), t(TOTAL_NEW), labels([0, 1]))
    with pytest.raises(PctError, match=r"\(2, 4\).*\(2, 3\)"):
        pct_loss(LossConfig(mode="li"), t(TOTAL_NEW), labels([0, 1]), torch.zeros(2, 4))
    with pytest.raises(PctError, match="cna needs student and teacher"):
        pct_loss(LossConfig(mode="cna"), t(TOTAL_NEW), labels([0, 1]), t(TOTAL_OLD))
    with pytest.raises(PctError, match="bct loss weight 0.5"):
        pct_loss(LossConfig(bct_loss_weight=0.5), t(TOTAL_NEW), labels([0, 1]))


@pytest.mark.parametrize("field, value", [
    ("kd_loss_weight", -1.0), ("bct_loss_weight", -0.5), ("li_margin", -0.25),
    ("kd_temperature", 0.0), ("cna_temperature", -0.01), ("li_p", 0.5)])
def test_config_rejects_out_of_range_values(field, value):
    with pytest.raises(PctError, match=str(value)):
        LossConfig(**{field: value})

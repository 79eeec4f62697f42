"""Teacher-cache codecs: round trips, byte counts, refusals, and loss/gradient fidelity.

Expected values come from independent arithmetic (float64 softmax, hand-made quantisation
bounds, the multinomial variance of the sampled gradient), never from the codecs' own output.
"""
import numpy as np
import pytest
import torch

from pct_pipeline import codec_fidelity as fidelity
from pct_pipeline.codec_fidelity import Setting
from pct_pipeline.store import codecs
from pct_pipeline.errors import PctError

ALL = ("float16", "int8", "topk:10", "sample:32@4")
DENSE = ("float16", "int8", "topk:10")


def realistic(n, classes, seed=0):
    """float32 [n, C]: N(0, 2^2) logits with one class per row raised by U(8, 14); at C = 1000
    the top-1 softmax probability then ranges ~0.3-0.99 over rows, with a long tail."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, classes))
    x[np.arange(n), rng.integers(0, classes, n)] += rng.uniform(8, 14, n)
    return x.astype(np.float32)


def softmax64(x, temperature=1.0):
    z = np.asarray(x, np.float64) / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name, canonical", [
    ("float16", "float16"), ("int8", "int8"), ("topk:10", "topk:10"), ("topk:5", "topk:5"),
    ("sample:32@4", "sample:32@4"), ("sample:32@4.0", "sample:32@4"),
    ("sample:8@100", "sample:8@100"), ("sample:8@2.5", "sample:8@2.5")])
def test_parse_and_rebuild_from_attrs(name, canonical):
    codec = codecs.parse(name)
    assert codec.name == canonical
    rebuilt = codecs.from_attrs(codec.attrs())
    assert (type(rebuilt), rebuilt.name, rebuilt.params) == (type(codec), codec.name, codec.params)


def test_store_without_codec_is_float16_and_seed_survives():
    assert codecs.from_attrs({}).name == "float16"
    seeded = codecs.Sample(16, 4.0, seed=7)
    assert codecs.from_attrs(seeded.attrs()).seed == 7


@pytest.mark.parametrize("name", ["", "fp16", "int4", "topk", "topk:", "topk:10.5", "sample:32",
                                  "sample:@4", "sample:32@", "top10", "sample:32@-1"])
def test_parse_rejects_unknown_forms(name):
    with pytest.raises(PctError) as info:
        codecs.parse(name)
    message = str(info.value)
    assert repr(name) in message and "topk:K" in message and "sample:K@T" in message
    assert "\n" not in message


@pytest.mark.parametrize("name, words", [("topk:0", "K >= 1"), ("sample:0@4", "K >= 1"),
                                         ("sample:32@0", "positive temperature")])
def test_parse_rejects_bad_values(name, words):
    with pytest.raises(PctError, match=words):
        codecs.parse(name)


def test_from_attrs_rejects_inconsistent_attributes():
    with pytest.raises(PctError, match="disagrees"):
        codecs.from_attrs({"codec": "topk:5", "codec_params": {"kind": "topk", "k": 10}})
    with pytest.raises(PctError, match="lack or misname"):
        codecs.from_attrs({"codec_params": {"kind": "sample", "k": 10}})
    with pytest.raises(PctError, match="unknown store codec kind 'zip'"):
        codecs.from_attrs({"codec_params": {"kind": "zip"}})


def test_bytes_per_row_at_imagenet_scale():
    sizes = {name: codecs.parse(name).bytes_per_row(1000) for name in ALL}
    assert sizes == {"float16": 2000, "int8": 1008, "topk:10": 44, "sample:32@4": 68}
    assert sizes["int8"] <= 1010 and sizes["topk:10"] <= 64


@pytest.mark.parametrize("name", ALL)
def test_encoded_arrays_match_their_description(name):
    codec, x = codecs.parse(name), realistic(9, 300)
    described = codec.arrays(300)
    encoded = codec.encode(x)
    assert set(encoded) == set(described)
    for key, (width, dtype) in described.items():
        assert encoded[key].shape == (9, width) and encoded[key].dtype == dtype
    assert sum(a.nbytes for a in encoded.values()) == 9 * codec.bytes_per_row(300)


def test_float16_is_exact_to_half_precision():
    x = realistic(64, 1000) * 3
    decoded = codecs.Float16().decode(codecs.Float16().encode(x), 1000)
    assert decoded.dtype == np.float32
    assert np.array_equal(decoded, x.astype(np.float16).astype(np.float32))
    assert np.all(np.abs(decoded - x) <= np.abs(x) * 2.0 ** -11)
    with pytest.raises(PctError, match="row 1 exceed the float16 range"):
        codecs.Float16().encode(np.array([[1.0, 2.0], [7e4, 0.0]], np.float32))


def test_int8_error_is_at_most_half_a_step_per_row():
    x = realistic(200, 1000)
    x[:50] *= np.linspace(0.01, 30, 50, dtype=np.float32)[:, None]  # ranges from ~0.2 to ~900
    codec = codecs.Int8()
    encoded = codec.encode(x)
    step = (x.astype(np.float64).max(axis=1) - x.min(axis=1)) / 255
    error = np.abs(codec.decode(encoded, 1000).astype(np.float64) - x).max(axis=1)
    slack = 4 * np.finfo(np.float32).eps * np.abs(x).max(axis=1)  # float32 arithmetic
    assert np.all(error <= step / 2 + slack)
    assert np.all(error >= step / 4)  # the bound is attained, not vacuous
    assert np.all(encoded["codes"].min(axis=1) == 0) and np.all(encoded["codes"].max(axis=1) == 255)


@pytest.mark.parametrize("name", DENSE)
def test_constant_rows_decode_to_themselves(name):
    x = np.full((3, 40), 3.25, np.float32)
    x[1] = -7.5
    decoded = codecs.parse(name).decode(codecs.parse(name).encode(x), 40)
    # topk stores log p = -log 40 in float16; the other two hold these values exactly.
    atol = np.log(40) * 2.0 ** -11 if name.startswith("topk") else 0
    np.testing.assert_allclose(decoded, x, rtol=0, atol=atol + 1e-6)


def test_topk_keeps_the_top_classes_and_spreads_the_rest_uniformly():
    classes, k = 50, 10
    x = realistic(32, classes, seed=3)
    codec = codecs.TopK(k)
    encoded = codec.encode(x)
    decoded = codec.decode(encoded, classes)
    p, kept = softmax64(x), encoded["indices"].astype(np.int64)
    assert np.array_equal(np.sort(kept, axis=1), np.sort(np.argsort(-x, axis=1)[:, :k], axis=1))
    lse = np.log(np.exp(x.astype(np.float64)).sum(axis=1, keepdims=True))
    x_kept = np.take_along_axis(x, kept, axis=1)
    tolerance = np.abs(x_kept - lse) * 2.0 ** -11 + 1e-5 * np.abs(x_kept)
    assert np.all(np.abs(np.take_along_axis(decoded, kept, axis=1) - x_kept) <= tolerance)
    q = softmax64(decoded)
    rest = np.ones_like(q, bool)
    np.put_along_axis(rest, kept, False, axis=1)
    q_rest = q[rest].reshape(32, classes - k)
    np.testing.assert_allclose(q_rest, q_rest[:, :1].repeat(classes - k, axis=1), rtol=1e-5)
    true_rest = 1 - np.take_along_axis(p, kept, axis=1).sum(axis=1)
    kept_error = (np.take_along_axis(p, kept, axis=1) * tolerance).sum(axis=1) * 1.01 + 1e-6
    assert np.all(np.abs(q_rest.sum(axis=1) - true_rest) <= kept_error)
    # Absolute logits survive: the decoded row has the original logsumexp.
    np.testing.assert_allclose(np.log(np.exp(decoded.astype(np.float64)).sum(axis=1)),
                               lse[:, 0], rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_refused_naming_the_row(name, bad):
    x = realistic(5, 20)
    x[3, 7] = bad
    with pytest.raises(PctError, match="NaN/inf in row 103$"):
        codecs.parse(name).encode(x, row_ids=np.arange(100, 105))


@pytest.mark.parametrize("name", ALL)
def test_zero_rows(name):
    codec = codecs.parse(name)
    encoded = codec.encode(np.zeros((0, 1000), np.float32))
    assert {k: v.shape for k, v in encoded.items()} == {
        k: (0, w) for k, (w, _) in codec.arrays(1000).items()}
    if codec.dense:
        assert codec.decode(encoded, 1000).shape == (0, 1000)


@pytest.mark.parametrize("name", ALL)
def test_rows_encode_alike_in_any_block(name, monkeypatch):
    codec, x = codecs.parse(name), realistic(23, 60, seed=5)
    whole = codec.encode(x, np.arange(23), view=2)
    monkeypatch.setattr(codecs, "BLOCK_ROWS", 4)
    order = np.random.default_rng(0).permutation(23)
    parts = codec.encode(x[order], order, view=2)
    for key in whole:
        assert np.array_equal(whole[key][order], parts[key])


def test_sample_draws_depend_on_seed_view_and_row():
    x = realistic(50, 200)
    draws = {label: codecs.Sample(32, 4.0, seed).encode(x, view=view)["indices"]
             for label, seed, view in (("a", 0, 0), ("b", 0, 1), ("c", 1, 0))}
    assert not np.array_equal(draws["a"], draws["b"])
    assert not np.array_equal(draws["a"], draws["c"])
    shifted = codecs.Sample(32, 4.0).encode(x, row_ids=np.arange(1, 51))["indices"]
    assert not np.array_equal(draws["a"], shifted)


def test_sample_draw_frequencies_follow_the_softened_teacher():
    row = np.array([[4.0, 3.0, 1.0, 0.0, -2.0, -30.0]], np.float32)
    temperature, k, rows = 2.0, 4, 20_000
    encoded = codecs.Sample(k, temperature).encode(np.repeat(row, rows, axis=0))
    counts = np.bincount(encoded["indices"].ravel(), minlength=6)
    expected = softmax64(row, temperature)[0] * rows * k
    assert ((counts - expected) ** 2 / expected).sum() < 36  # chi-square, 5 dof, p ~ 1e-6
    p = softmax64(row, temperature)[0]
    np.testing.assert_allclose(encoded["neg_entropy"][:, 0], (p * np.log(p)).sum(), rtol=1e-5)


def test_sample_refuses_what_it_cannot_serve():
    codec = codecs.parse("sample:32@4")
    for mode in ("l2", "li"):
        with pytest.raises(PctError, match=f"mode {mode} needs every class's logit"):
            codec.require(mode, 4.0)
    codec.require("kl", 4.0)
    encoded = codec.encode(realistic(2, 30))
    rows = {k: torch.from_numpy(v) for k, v in encoded.items()}
    with pytest.raises(PctError, match="temperature 4; it cannot serve kd temperature 1"):
        codec.kl_loss(torch.zeros(2, 30), rows, 1.0)
    with pytest.raises(PctError, match="do not decode"):
        codec.decode(encoded, 30)
    with pytest.raises(PctError, match="sampled classes"):
        fidelity.measure(codec, realistic(2, 30), realistic(2, 30, 1), Setting("li"),
                         labels=[0, 1])


def test_sample_kl_loss_and_gradient_by_hand():
    temperature, k = 3.0, 8
    x, s = realistic(4, 12, seed=1), realistic(4, 12, seed=2)
    codec = codecs.Sample(k, temperature)
    encoded = codec.encode(x)
    student = torch.from_numpy(s).requires_grad_(True)
    loss = codec.kl_loss(student, {n: torch.from_numpy(v) for n, v in encoded.items()},
                         temperature)
    loss.sum().backward()
    p, q = softmax64(x, temperature), softmax64(s, temperature)
    drawn = encoded["indices"].astype(np.int64)
    p_hat = np.stack([np.bincount(r, minlength=12) for r in drawn]) / k
    expected = temperature ** 2 * ((p * np.log(p)).sum(axis=1)
                                   - np.take_along_axis(np.log(q), drawn, axis=1).mean(axis=1))
    np.testing.assert_allclose(loss.detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(student.grad.numpy(), temperature * (q - p_hat), atol=1e-5)


@pytest.fixture(scope="module")
def imagenet_like():
    """(teacher [128, 1000], student = teacher + N(0, 1), labels [128]) float32 / int64."""
    teacher = realistic(128, 1000, seed=11)
    labels = teacher.argmax(axis=1)
    return teacher, fidelity.perturbed(teacher, 1.0, seed=12), labels


@pytest.mark.parametrize("mode, temperature", [("kl", 1.0), ("kl", 4.0), ("kl", 100.0),
                                               ("l2", 1.0), ("li", 1.0)])
def test_int8_gradient_matches_the_exact_one(imagenet_like, mode, temperature):
    teacher, student, labels = imagenet_like
    measured = fidelity.measure(codecs.Int8(), teacher, student, Setting(mode, temperature),
                                labels)
    cosine = measured["gradient"]["cosine"]
    assert cosine["p5"] >= 0.999 and measured["gradient"]["batch"]["cosine"] >= 0.999
    assert measured["loss_rel_error"]["p95"] <= 0.05
    exact16 = fidelity.measure(codecs.Float16(), teacher, student, Setting(mode, temperature),
                               labels)
    assert exact16["gradient"]["cosine"]["p5"] >= 0.9999
    assert exact16["top1_agreement"] == 1.0


def test_li_fidelity_needs_labels(imagenet_like):
    teacher, student, _ = imagenet_like
    with pytest.raises(PctError, match="needs labels"):
        fidelity.measure(codecs.Int8(), teacher, student, Setting("li"))


def test_sampled_gradient_converges_to_the_exact_one():
    """Averaged over D independent draws, the sampled kl gradient's error is pure multinomial
    noise: E |g_D - g|^2 = sum_rows T^2 (1 - sum_c p_c^2) / (K D). A bias would leave an error
    that does not shrink with D."""
    temperature, k, classes = 4.0, 32, 100
    teacher = realistic(16, classes, seed=21)
    student = fidelity.perturbed(teacher, 1.0, seed=22)
    codec = codecs.Sample(k, temperature)
    _, g_exact = fidelity.exact_loss_and_grad(teacher, student, Setting("kl", temperature))
    p = softmax64(teacher, temperature)
    noise_per_draw = (temperature ** 2 * (1 - (p ** 2).sum(axis=1)) / k).sum()
    errors = {}
    for draws in (100, 2000):
        _, g = fidelity.codec_loss_and_grad(codec, teacher, student, Setting("kl", temperature),
                                            draws=draws, seed=draws)
        errors[draws] = np.linalg.norm(g - g_exact)
        predicted = np.sqrt(noise_per_draw / draws)
        assert 0.75 <= errors[draws] / predicted <= 1.33
    assert 3.1 <= errors[100] / errors[2000] <= 5.8  # sqrt(20) = 4.47
    cosine = fidelity.gradient_agreement(g, g_exact)["batch"]["cosine"]
    assert cosine >= 0.98 and errors[2000] / np.linalg.norm(g_exact) <= 0.2


def test_sampled_loss_value_is_unbiased():
    temperature, k, draws = 4.0, 32, 2000
    teacher = realistic(16, 100, seed=31)
    student = fidelity.perturbed(teacher, 1.0, seed=32)
    codec = codecs.Sample(k, temperature)
    encoded = codec.encode(np.tile(teacher, (draws, 1)), np.arange(16 * draws))
    d = codec.kl_loss(torch.from_numpy(np.tile(student, (draws, 1))),
                      {n: torch.from_numpy(v) for n, v in encoded.items()}, temperature)
    d = d.numpy().reshape(draws, 16)
    d_exact, _ = fidelity.exact_loss_and_grad(teacher, student, Setting("kl", temperature))
    standard_error = d.std(axis=0) / np.sqrt(draws)
    assert np.all(np.abs(d.mean(axis=0) - d_exact) <= 5 * standard_error)


def test_topk_gradient_is_biased_at_high_temperature(imagenet_like):
    """topk:10 is deterministic: its error is all bias. At T = 1 the uniform remainder holds
    little mass and the gradient is close; at T = 100 the softened teacher is nearly flat and
    depends on every logit, which the tied remainder discards."""
    teacher, student, labels = imagenet_like
    codec = codecs.TopK(10)
    cold = fidelity.measure(codec, teacher, student, Setting("kl", 1.0))
    hot = fidelity.measure(codec, teacher, student, Setting("kl", 100.0))
    assert cold["gradient"]["batch"]["cosine"] >= 0.95
    assert hot["gradient"]["batch"]["cosine"] <= 0.8
    assert hot["gradient"]["rel_error"]["median"] >= 0.5
    assert hot["loss_rel_error"]["median"] >= 0.5
    # Summing over rows does not average the error away, as it would for zero-mean noise.
    assert hot["gradient"]["batch_sum"]["rel_error"] >= 0.5
    assert hot["top1_agreement"] == 1.0

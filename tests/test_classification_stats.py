"""Tests for classification.stats: AUC, bootstrap interval, threshold metrics, Youden, DeLong.

The DeLong test is checked against published values of pROC (X. Robin et al., "pROC: an open-source
package for R and S+ to analyze and compare ROC curves", BMC Bioinformatics 12:77, 2011), on its
``aSAH`` data set (113 patients after aneurysmal subarachnoid haemorrhage; N. Turck et al., Intensive
Care Medicine 36:107, 2010). The expected numbers are those asserted by pROC's own test suite
(github.com/xrobin/pROC, tests/testthat/test-roc.test.R, test-var.R and test-cov.R): roc.test with the
default DeLong method, var() and cov() of the curves r.wfns, r.s100b, r.ndka = roc(aSAH$outcome,
aSAH$<predictor>). The columns below were read from pROC's data/aSAH.RData: outcome, wfns (an ordered
factor 1-5, used as its numeric level by pROC), s100b, ndka. The AUCs 0.8237 (wfns) and 0.7314
(s100b) and "Z = -2.209, p-value = 0.02718" for roc.test(r.s100b, r.wfns) also appear in pROC's
documented examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from classification import stats

ASAH_ROWS = """
    Good,1,0.13,3.01; Good,1,0.14,8.54; Good,1,0.1,8.09; Good,1,0.04,10.42; Poor,3,0.13,17.4;
    Poor,2,0.1,12.75; Good,5,0.47,6; Poor,4,0.16,13.2; Good,1,0.18,15.54; Good,2,0.1,6.01;
    Poor,5,0.12,15.96; Good,2,0.1,17.86; Poor,5,0.44,5.18; Poor,5,0.71,8.9; Good,1,0.04,13.41;
    Good,2,0.08,20.75; Poor,5,0.49,11.6; Good,2,0.04,16.11; Poor,2,0.07,32.37; Poor,5,0.33,54.82;
    Poor,2,0.09,32.41; Good,1,0.09,49.94; Poor,1,0.07,40.34; Good,1,0.11,9.47; Good,1,0.07,6.29;
    Good,2,0.17,12.53; Good,1,0.07,6.54; Good,2,0.11,6.3; Good,1,0.13,80.3; Good,1,0.19,12.8;
    Good,3,0.05,9.8; Good,4,0.16,9.81; Poor,2,0.41,9.85; Good,1,0.14,18.21; Good,4,0.34,5.03;
    Poor,5,0.35,14.04; Poor,4,0.48,21.93; Good,1,0.09,8.02; Poor,4,0.96,7.42; Poor,2,0.25,8.38;
    Good,5,0.5,6.59; Good,5,0.46,9.63; Good,1,0.16,13.12; Good,1,0.07,7.96; Good,2,0.43,14.34;
    Good,4,0.45,41.43; Good,1,0.11,7.63; Good,1,0.08,7.06; Good,2,0.09,12.59; Poor,5,0.86,13.56;
    Poor,5,0.52,3.87; Good,2,0.08,9.44; Good,1,0.06,7.66; Good,2,0.13,12.98; Poor,5,2.07,419.19;
    Good,1,0.1,27.19; Good,2,0.14,22.27; Good,2,0.15,9.95; Poor,2,0.07,21.22; Good,1,0.06,11.73;
    Poor,5,0.77,10.4; Good,1,0.05,58.83; Good,1,0.09,6.39; Poor,2,0.3,11.09; Poor,5,0.03,12.22;
    Poor,2,0.09,13.67; Good,1,0.04,17.21; Poor,4,0.23,22.63; Poor,5,0.7,12.9; Good,2,0.09,9.7;
    Poor,4,0.27,21.57; Poor,4,0.71,8.23; Poor,1,0.08,72.57; Poor,4,0.26,15.54; Good,1,0.08,10.51;
    Good,2,0.16,10.6; Good,1,0.09,14.57; Poor,4,0.13,5.19; Poor,2,0.1,9.63; Good,1,0.08,4.61;
    Poor,2,0.11,21.48; Good,3,0.33,17.3; Good,2,0.11,12.71; Good,4,0.28,9.44; Good,2,0.07,11.07;
    Good,1,0.1,19.46; Good,4,0.32,10.83; Poor,5,0.22,5.37; Good,1,0.07,11.97; Good,1,0.05,7.75;
    Good,5,0.24,9.83; Good,4,0.38,10.55; Good,2,0.1,28.49; Good,2,0.15,8.53; Good,1,0.08,12.57;
    Good,1,0.14,12.9; Good,1,0.1,46.83; Good,3,0.07,11.68; Good,1,0.04,12.67; Good,2,0.19,9.01;
    Poor,5,0.56,9.57; Poor,2,0.14,34.06; Poor,2,0.58,11.72; Poor,5,0.32,14.26; Poor,5,0.82,47.61;
    Poor,5,0.74,11.67; Good,2,0.15,24.58; Good,4,0.47,10.33; Good,4,0.17,13.87; Poor,5,0.44,15.89;
    Good,1,0.15,22.43; Good,1,0.5,6.79; Good,1,0.48,13.45;
"""


def asah() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(outcome: 1 = Poor [113], {"wfns", "s100b", "ndka": float [113]})."""
    rows = [r.strip().split(",") for r in ASAH_ROWS.replace("\n", " ").split(";") if r.strip()]
    assert len(rows) == 113
    outcome = np.array([r[0] == "Poor" for r in rows], dtype=np.int64)
    columns = {
        name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(["wfns", "s100b", "ndka"], 1)
    }
    return outcome, columns


def separable(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n cases, about half positive, scores ~ N(0, 1) + shift * label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, rng.normal(size=n) + shift * y


# ---------------------------------------------------------------------------------------------------
# DeLong against pROC.


def test_asah_data_matches_pROC_summary():
    y, cols = asah()
    assert int(y.sum()) == 41 and len(y) - int(y.sum()) == 72  # 41 Poor, 72 Good outcomes
    assert roc_auc_score(y, cols["wfns"]) == pytest.approx(0.8236789, abs=1e-7)
    assert roc_auc_score(y, cols["s100b"]) == pytest.approx(0.7313686, abs=1e-7)


@pytest.mark.parametrize(
    "a, b, z, p, ci_low, ci_high",
    [  # pROC test-roc.test.R: t1 = roc.test(r.wfns, r.s100b), t2 = (wfns, ndka), t3 = (ndka, s100b)
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    ],
)
def test_delong_equals_pROC_roc_test(a, b, z, p, ci_low, ci_high):
    y, cols = asah()
    result = stats.delong_test(y, cols[a], cols[b])
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.ci_low == pytest.approx(ci_low, rel=1e-9)
    assert result.ci_high == pytest.approx(ci_high, rel=1e-9)
    assert result.auc_a == pytest.approx(roc_auc_score(y, cols[a]), abs=1e-12)
    swapped = stats.delong_test(y, cols[b], cols[a])  # two-sided: same p, opposite z
    assert swapped.p_value == pytest.approx(result.p_value, rel=1e-12)
    assert swapped.z == pytest.approx(-result.z, rel=1e-12)


def test_delong_variances_and_covariances_equal_pROC():
    y, cols = asah()
    aucs, cov = stats.delong_covariance(y, np.stack([cols["wfns"], cols["ndka"], cols["s100b"]]))
    # pROC test-var.R: var(r.wfns), var(r.ndka), var(r.s100b)
    assert np.diag(cov) == pytest.approx(
        [0.00146991470882363, 0.0031908105493913, 0.00266868245717244], rel=1e-9
    )
    # pROC test-cov.R: cov(r.wfns, r.ndka), cov(r.ndka, r.s100b), cov(r.s100b, r.wfns)
    assert cov[0, 1] == pytest.approx(-0.000532967856762438, rel=1e-9)
    assert cov[1, 2] == pytest.approx(-0.000756164938056579, rel=1e-9)
    assert cov[2, 0] == pytest.approx(0.00119615567376754, rel=1e-9)
    assert np.array_equal(cov, cov.T)


def test_delong_model_against_itself_gives_p_one():
    y, cols = asah()
    same = stats.delong_test(y, cols["s100b"], cols["s100b"])
    assert same.p_value == 1.0 and same.z == 0.0 and same.difference == 0.0
    # A monotone transform ranks the cases identically: the same AUC, no evidence of a difference.
    transformed = stats.delong_test(y, cols["s100b"], np.log(cols["s100b"]) * 3 + 1)
    assert transformed.p_value == pytest.approx(1.0, abs=1e-9)
    y2, s2 = separable(400, 1.0, seed=3)
    assert stats.delong_test(y2, s2, s2).p_value == 1.0


def test_delong_detects_a_real_difference_and_not_noise():
    y, good = separable(600, 1.5, seed=5)
    rng = np.random.default_rng(6)
    worse = good + rng.normal(scale=2.0, size=len(y))  # same cases, noisier score: correlated, lower AUC
    assert stats.delong_test(y, good, worse).p_value < 1e-6
    # Two equally good, independent noisy versions: no difference is found at 5% (fixed seed).
    a, b = good + rng.normal(scale=0.3, size=len(y)), good + rng.normal(scale=0.3, size=len(y))
    assert stats.delong_test(y, a, b).p_value > 0.05


# ---------------------------------------------------------------------------------------------------
# Bootstrap.


def test_bootstrap_interval_contains_the_point_auc():
    y, cols = asah()
    for name, scores in cols.items():
        ci = stats.bootstrap_auc_ci(y, scores, n_resamples=2000, seed=0)
        assert ci.auc == pytest.approx(roc_auc_score(y, scores), abs=1e-12), name
        assert ci.low < ci.auc < ci.high, name
        assert (ci.n_resamples, ci.seed, ci.confidence) == (2000, 0, 0.95)
    # pROC's DeLong 95% interval for s100b, ci.auc(r.s100b) = 0.6301-0.8326: the bootstrap agrees.
    ci = stats.bootstrap_auc_ci(y, cols["s100b"], seed=0)
    assert ci.low == pytest.approx(0.6301, abs=0.02) and ci.high == pytest.approx(0.8326, abs=0.02)


def test_bootstrap_interval_narrows_with_more_cases():
    widths = []
    for n in (100, 1000, 10000):
        y, s = separable(n, 1.0, seed=n)
        ci = stats.bootstrap_auc_ci(y, s, n_resamples=500, seed=1)
        assert ci.low < ci.auc < ci.high
        widths.append(ci.high - ci.low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # ~ 1 / sqrt(n): about 3.2x per step


def test_bootstrap_resampled_aucs_equal_sklearn_on_the_same_resamples():
    """The vectorised counting AUC equals roc_auc_score on every resample (ties included)."""
    y, s = separable(300, 0.8, seed=11)
    s = np.round(s, 1)  # many ties
    groups, n_groups = stats._score_groups(s)
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    (draws,) = list(stats._stratified_blocks(y, 2, 50, seed=4))
    fast = stats._resampled_aucs(groups[pos_idx][draws[1]], groups[neg_idx][draws[0]], n_groups)
    for r in range(50):
        idx = np.concatenate([pos_idx[draws[1][r]], neg_idx[draws[0][r]]])
        assert fast[r] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_bootstrap_is_reproducible_and_seeded():
    y, s = separable(500, 1.0, seed=2)
    a = stats.bootstrap_auc_ci(y, s, n_resamples=300, seed=7)
    assert a == stats.bootstrap_auc_ci(y, s, n_resamples=300, seed=7)
    other_seed = stats.bootstrap_auc_ci(y, s, n_resamples=300, seed=8)
    assert (other_seed.low, other_seed.high) != (a.low, a.high) and other_seed.auc == a.auc
    narrower = stats.bootstrap_auc_ci(y, s, n_resamples=300, seed=7, confidence=0.5)
    assert a.low < narrower.low < narrower.high < a.high


def test_auc_inputs_are_checked():
    with pytest.raises(ValueError, match="both classes"):
        stats.bootstrap_auc_ci([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="non-finite"):
        stats.auc([0, 1, 1], [0.1, float("nan"), 0.3])
    with pytest.raises(ValueError, match="shape"):
        stats.auc([0, 1, 1], [0.1, 0.3])
    with pytest.raises(ValueError, match="out of range"):
        stats.auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="n_resamples"):
        stats.bootstrap_auc_ci([0, 1], [0.1, 0.2], n_resamples=0)


def test_one_vs_rest_aucs_match_sklearn_with_joint_macro_interval():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3))
    logits[np.arange(600), y] += np.array([0.5, 1.0, 2.0])[y]  # class 2 easiest
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = stats.one_vs_rest_auc_ci(y, probs, n_resamples=400, seed=0)
    expected = roc_auc_score(y, probs, multi_class="ovr", average=None)
    assert [ci.auc for ci in result.per_class] == pytest.approx(list(expected), abs=1e-12)
    assert result.macro.auc == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    for ci in (*result.per_class, result.macro):
        assert ci.low < ci.auc < ci.high
    assert result.per_class[0].auc < result.per_class[1].auc < result.per_class[2].auc
    # The macro mean averages three AUCs over the same resamples: its spread is at most the mean spread
    # (sd(mean) <= mean(sd)), and it lies within the per-class range.
    assert result.macro.high - result.macro.low < np.mean([ci.high - ci.low for ci in result.per_class])
    assert (
        min(ci.low for ci in result.per_class)
        < result.macro.low
        < result.macro.high
        < max(ci.high for ci in result.per_class)
    )


def test_one_vs_rest_leaves_out_an_absent_class():
    y = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array(
        [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]]
    )
    result = stats.one_vs_rest_auc_ci(y, scores, n_resamples=100)
    assert result.per_class[2] is None
    assert result.macro.auc == pytest.approx(np.mean([result.per_class[0].auc, result.per_class[1].auc]))
    assert result.as_dict(["a", "b", "c"])["per_class"]["c"] is None


# ---------------------------------------------------------------------------------------------------
# Thresholds.

HAND_LABELS = [0, 0, 1, 0, 0, 1, 1, 1]
HAND_SCORES = [0.1, 0.2, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8]


def test_youden_threshold_on_a_hand_example():
    # Thresholds (positive iff score >= t) and J = TPR - FPR:  0.8: .25, 0.7: .5, 0.6: .75 (3/4 positives,
    # no negative), 0.5: .5, 0.4: .25, 0.35: .5, 0.2: .25, 0.1: 0.  The maximum is at 0.6.
    threshold, j = stats.youden_threshold(HAND_LABELS, HAND_SCORES)
    assert threshold == 0.6 and j == pytest.approx(0.75)


def test_youden_ties_take_the_highest_threshold():
    # 0.6 and 0.4 both give J = 0.75 (TPR 3/4, FPR 0 versus TPR 1, FPR 1/4).
    threshold, j = stats.youden_threshold([0, 0, 0, 1, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert threshold == 0.6 and j == pytest.approx(0.75)


def test_metrics_at_threshold_hand_checked():
    m = stats.metrics_at_threshold(HAND_LABELS, HAND_SCORES, 0.3)
    # Called positive: 0.35 0.4 0.5 0.6 0.7 0.8 -> TP 4 (0.35 0.6 0.7 0.8), FP 2 (0.4 0.5); TN 2, FN 0.
    assert (m.tp, m.fp, m.tn, m.fn) == (4, 2, 2, 0)
    assert m.sensitivity == 1.0 and m.specificity == 0.5
    assert m.ppv == pytest.approx(4 / 6) and m.npv == 1.0
    assert m.f1 == pytest.approx(2 * 4 / (2 * 4 + 2 + 0)) and m.accuracy == pytest.approx(6 / 8)
    at_youden = stats.metrics_at_threshold(HAND_LABELS, HAND_SCORES, 0.6)  # the boundary counts as positive
    assert (at_youden.tp, at_youden.fp, at_youden.tn, at_youden.fn) == (3, 0, 4, 1)
    assert at_youden.sensitivity == 0.75 and at_youden.specificity == 1.0 and at_youden.ppv == 1.0


def test_metrics_with_an_empty_denominator_are_none():
    m = stats.metrics_at_threshold(HAND_LABELS, HAND_SCORES, 0.95)  # nothing called positive
    assert m.ppv is None and m.sensitivity == 0.0 and m.specificity == 1.0 and m.f1 == 0.0
    only_negatives = stats.metrics_at_threshold([0, 0, 0], [0.2, 0.6, 0.9], 0.5)
    assert only_negatives.sensitivity is None and only_negatives.specificity == pytest.approx(1 / 3)

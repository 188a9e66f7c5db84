"""Statistics for a classifier's scores on a labelled test set: AUC with a bootstrap confidence interval,
metrics at a threshold, the Youden threshold, and the paired DeLong test of two correlated AUCs.

Conventions
    ``labels``: class indices, ``int [N]``; for two classes 1 is the positive class (``class_names[1]``).
    ``scores``: ``float [N]`` for two classes (higher means more likely positive, e.g. the sigmoid of
    the positive logit), ``float [N, K]`` for K classes (one column per class, e.g. softmax). Scores
    must be finite. A case is called positive at threshold ``t`` iff ``score >= t`` (the convention of
    scikit-learn's ``roc_curve``, whose thresholds are scores from the data).

AUC
    The area under the empirical ROC curve (``sklearn.metrics.roc_auc_score``): the probability that a
    random positive scores higher than a random negative, ties counting one half.

Bootstrap confidence interval (:func:`bootstrap_auc_ci`, :func:`one_vs_rest_auc_ci`)
    Stratified: each resample draws, with replacement, as many cases from every class as the test set
    has, so every resample has both classes and the class balance of the test set (as pROC's default
    ``boot.stratified=TRUE``). The interval is the percentile interval of the resampled AUCs
    (``numpy.quantile``, linear interpolation). Resampled AUCs are computed exactly (ties one half)
    from per-resample counts of each distinct score, vectorised over blocks of resamples, so 2000
    resamples of 10,000 scores take a fraction of a second (``bench/bench_classification_stats.py``).
    The same ``seed`` and data give the same interval; two models scored on the same test set with the
    same seed get the same resamples (a paired bootstrap).

Multi-class
    One-vs-rest: class k's AUC treats class k as positive and all others as negative (its column of
    ``scores``); the macro AUC is the unweighted mean over the classes present in the test set. Their
    bootstrap intervals come from the same stratified resamples, so the macro interval is a proper
    joint one.

DeLong test (:func:`delong_test`)
    No kept library offers it (scipy, scikit-learn and torchmetrics do not; statsmodels is not a
    dependency), so it is written here: the nonparametric covariance of correlated AUCs of DeLong,
    DeLong & Clarke-Pearson (1988, Biometrics 44:837), computed with the midrank algorithm of Sun & Xu
    (2014, IEEE Signal Processing Letters 21:1389). Two-sided ``z = (AUC_a - AUC_b) / SE`` against the
    standard normal; the confidence interval of the difference is ``diff +- z_(1+c)/2 * SE``. Checked
    against pROC's published ``roc.test`` / ``var`` / ``cov`` results on its aSAH data
    (``tests/test_classification_stats.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats
from sklearn import metrics as _skm

__all__ = [
    "AucInterval",
    "DelongResult",
    "MulticlassAuc",
    "ThresholdMetrics",
    "auc",
    "bootstrap_auc_ci",
    "confusion_rates",
    "delong_covariance",
    "delong_test",
    "metrics_at_threshold",
    "one_vs_rest_auc_ci",
    "roc_points",
    "youden_threshold",
]

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
BOOTSTRAP_METHOD = "percentile bootstrap, resampling each class separately (stratified)"
DELONG_METHOD = "paired DeLong test (DeLong et al. 1988), midrank algorithm of Sun & Xu 2014"
# Resamples are processed in blocks of about this many count cells (resamples x distinct scores), which
# bounds memory (a few tens of MB) independently of the number of resamples.
_BLOCK_CELLS = 1 << 21


# ----------------------------------------------------------------------------------------------------
# Input checks.


def _as_labels(labels: Any, n_classes: int | None = None) -> np.ndarray:
    """Class indices as ``int64 [N]`` (booleans accepted); ValueError for anything else."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {list(arr.shape)}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError("labels must be integer class indices")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be class indices >= 0, found {int(arr.min())}")
    if n_classes is not None and arr.size and arr.max() >= n_classes:
        raise ValueError(f"label {int(arr.max())} is out of range for {n_classes} classes")
    return arr


def _as_scores(scores: Any, n: int, ndim: int) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[0] != n:
        want = "[N]" if ndim == 1 else "[N, K]"
        raise ValueError(f"scores must have shape {want} with N = {n} (the labels), got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(arr)))} non-finite values (NaN or inf)")
    return arr


def _binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked two-class input: (labels int64 [N] in {0, 1} with both present, scores float64 [N])."""
    y = _as_labels(labels, n_classes=2)
    s = _as_scores(scores, len(y), 1)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        present = "no cases" if len(y) == 0 else f"only class {int(y[0])} ({len(y)} cases)"
        raise ValueError(f"an AUC needs cases of both classes; the labels have {present}")
    return y, s


def _check_resampling(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


# ----------------------------------------------------------------------------------------------------
# AUC and its bootstrap interval.


@dataclass(frozen=True)
class AucInterval:
    """An AUC with its bootstrap confidence interval ``[low, high]``."""

    auc: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int
    method: str = BOOTSTRAP_METHOD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MulticlassAuc:
    """One-vs-rest AUCs: ``per_class[k]`` (``None`` for a class absent from the labels) and their macro mean."""

    per_class: tuple[AucInterval | None, ...]
    macro: AucInterval

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        names = list(class_names) if class_names is not None else [str(k) for k in range(len(self.per_class))]
        return {
            "per_class": {
                name: (None if ci is None else ci.as_dict()) for name, ci in zip(names, self.per_class)
            },
            "macro": self.macro.as_dict(),
        }


def auc(labels: Any, scores: Any) -> float:
    """Two-class AUC (``sklearn.metrics.roc_auc_score``); labels ``[N]`` in {0, 1}, scores ``[N]``."""
    y, s = _binary(labels, scores)
    return float(_skm.roc_auc_score(y, s))


def _resampled_aucs(pos_groups: np.ndarray, neg_groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Exact AUCs of a block of resamples -> float64 [B].

    ``pos_groups`` int [B, n1] and ``neg_groups`` int [B, n0]: for each resample b, the rank of each
    drawn positive's / negative's score among the ``n_groups`` distinct scores (0 = lowest). Per
    resample, count the drawn positives and negatives at each distinct score; a positive at score u
    beats the negatives strictly below u and ties half of those at u:
    ``AUC = sum_u pos(u) * (2 * neg(< u) + neg(= u)) / (2 * n1 * n0)``, in integers until the division.
    """
    b = pos_groups.shape[0]
    offsets = (np.arange(b, dtype=np.int64) * n_groups)[:, None]  # [B, 1]: one bincount for all resamples

    def counts(groups: np.ndarray) -> np.ndarray:  # [B, n] -> int64 [B, n_groups]
        return np.bincount((groups + offsets).ravel(), minlength=b * n_groups).reshape(b, n_groups)

    pos, neg = counts(pos_groups), counts(neg_groups)
    neg_below = np.cumsum(neg, axis=1) - neg
    twice_wins = 2 * np.einsum("bu,bu->b", pos, neg_below) + np.einsum("bu,bu->b", pos, neg)
    return twice_wins / (2.0 * pos_groups.shape[1] * neg_groups.shape[1])


def _score_groups(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Rank of each score among the distinct scores (int64 [N]) and the number of distinct scores."""
    _, groups = np.unique(scores, return_inverse=True)
    return groups.reshape(-1), int(groups.max()) + 1


def _stratified_blocks(labels: np.ndarray, n_classes: int, n_resamples: int, seed: int):
    """Yield ``{class: int [b, n_class]}`` for consecutive blocks of stratified resamples: row r holds
    the positions (into ``np.flatnonzero(labels == class)``) of the cases resample r draws from that
    class. Absent classes are left out. Block sizes depend only on the data size, so a seed gives the
    same resamples whatever the caller computes from them.
    """
    rng = np.random.default_rng(seed)
    sizes = {k: int(np.sum(labels == k)) for k in range(n_classes)}
    sizes = {k: n for k, n in sizes.items() if n}
    block = max(1, _BLOCK_CELLS // max(1, len(labels)))
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        yield {k: rng.integers(0, n, size=(b, n)) for k, n in sizes.items()}


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_auc_ci(
    labels: Any,
    scores: Any,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> AucInterval:
    """Two-class AUC with a stratified percentile bootstrap interval (see the module docstring).

    Args:
        labels: ``[N]`` in {0, 1}, both present. scores: ``[N]``, finite.
        n_resamples: bootstrap resamples (2000 by default). confidence: e.g. 0.95. seed: numpy seed.
    """
    y, s = _binary(labels, scores)
    _check_resampling(n_resamples, confidence)
    groups, n_groups = _score_groups(s)
    pos, neg = groups[y == 1], groups[y == 0]
    blocks = _stratified_blocks(y, 2, n_resamples, seed)
    aucs = np.concatenate([_resampled_aucs(pos[d[1]], neg[d[0]], n_groups) for d in blocks])
    low, high = _percentile_interval(aucs, confidence)
    return AucInterval(
        auc=float(_skm.roc_auc_score(y, s)),
        low=low,
        high=high,
        confidence=float(confidence),
        n_resamples=int(n_resamples),
        seed=int(seed),
    )


def one_vs_rest_auc_ci(
    labels: Any,
    scores: Any,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> MulticlassAuc:
    """Per-class one-vs-rest AUCs and their macro mean, each with a bootstrap interval.

    Args:
        labels: ``[N]`` class indices in ``[0, K)``; at least two classes present.
        scores: ``[N, K]``, column k the score of class k.
    A class absent from ``labels`` has no AUC (``None``) and is left out of the macro mean.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must have shape [N, K] for one-vs-rest AUCs, got {list(s.shape)}")
    n_classes = s.shape[1]
    y = _as_labels(labels, n_classes=n_classes)
    s = _as_scores(s, len(y), 2)
    _check_resampling(n_resamples, confidence)
    present = [k for k in range(n_classes) if np.any(y == k)]
    if len(present) < 2:
        raise ValueError(f"one-vs-rest AUCs need at least two classes in the labels, found {present}")

    resampled: dict[int, list[np.ndarray]] = {k: [] for k in present}  # class -> float [b] AUC blocks
    column_groups = [_score_groups(s[:, k]) for k in range(n_classes)]
    for draws in _stratified_blocks(y, n_classes, n_resamples, seed):
        for k in present:
            groups, n_groups = column_groups[k]
            drawn = {j: groups[y == j][d] for j, d in draws.items()}  # class j's drawn cases, ranked on k
            rest = np.concatenate([g for j, g in drawn.items() if j != k], axis=1)
            resampled[k].append(_resampled_aucs(drawn[k], rest, n_groups))
    per_class: list[AucInterval | None] = [None] * n_classes
    for k in present:
        aucs = np.concatenate(resampled[k])
        low, high = _percentile_interval(aucs, confidence)
        per_class[k] = AucInterval(
            auc=float(_skm.roc_auc_score(y == k, s[:, k])),
            low=low,
            high=high,
            confidence=float(confidence),
            n_resamples=int(n_resamples),
            seed=int(seed),
        )
    macro_resampled = np.mean([np.concatenate(resampled[k]) for k in present], axis=0)
    low, high = _percentile_interval(macro_resampled, confidence)
    macro = AucInterval(
        auc=float(np.mean([per_class[k].auc for k in present])),  # type: ignore[union-attr]
        low=low,
        high=high,
        confidence=float(confidence),
        n_resamples=int(n_resamples),
        seed=int(seed),
        method=f"macro mean of one-vs-rest AUCs over {len(present)} classes; {BOOTSTRAP_METHOD}",
    )
    return MulticlassAuc(per_class=tuple(per_class), macro=macro)


# ----------------------------------------------------------------------------------------------------
# Operating points.


@dataclass(frozen=True)
class ThresholdMetrics:
    """Confusion counts and rates at ``threshold`` (positive iff score >= threshold; ``None`` for
    decisions made otherwise, e.g. the argmax over classes).

    A rate whose denominator is zero (e.g. PPV when nothing is called positive) is ``None``.
    """

    threshold: float | None
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float | None  # TP / (TP + FN), recall, true-positive rate
    specificity: float | None  # TN / (TN + FP)
    ppv: float | None  # TP / (TP + FP), precision
    npv: float | None  # TN / (TN + FN)
    f1: float | None  # 2 TP / (2 TP + FP + FN)
    accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def confusion_rates(tp: int, fp: int, tn: int, fn: int, threshold: float | None = None) -> ThresholdMetrics:
    """:class:`ThresholdMetrics` from confusion counts (also used per class for argmax decisions)."""
    tp, fp, tn, fn = int(tp), int(fp), int(tn), int(fn)
    return ThresholdMetrics(
        threshold=None if threshold is None else float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        accuracy=_ratio(tp + tn, tp + fp + tn + fn),
    )


def metrics_at_threshold(labels: Any, scores: Any, threshold: float) -> ThresholdMetrics:
    """Sensitivity, specificity, PPV, NPV, F1 and accuracy of calling ``score >= threshold`` positive.

    Labels ``[N]`` in {0, 1} (one class alone is allowed: the other's rates are then ``None``).
    """
    y = _as_labels(labels, n_classes=2)
    s = _as_scores(scores, len(y), 1)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    predicted = (s >= threshold).astype(np.int64)
    tn, fp, fn, tp = _skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    return confusion_rates(tp, fp, tn, fn, threshold)


def roc_points(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The empirical ROC curve (``sklearn.metrics.roc_curve``, every point kept): ``(fpr, tpr,
    thresholds)``, each ``float64 [M]``, thresholds decreasing, the first being ``+inf`` (nothing
    called positive)."""
    y, s = _binary(labels, scores)
    fpr, tpr, thresholds = _skm.roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thresholds


def youden_threshold(labels: Any, scores: Any) -> tuple[float, float]:
    """The threshold maximising Youden's J = sensitivity + specificity - 1 on these scores: ``(t, J)``.

    ``t`` is one of the scores (positive iff ``score >= t``); among thresholds with the same J the
    highest (fewest positive calls) is taken. The point "nothing positive" (J = 0) is never chosen.
    """
    fpr, tpr, thresholds = roc_points(labels, scores)
    j = tpr[1:] - fpr[1:]  # index 0 is the +inf threshold
    best = int(np.argmax(j))  # first maximum = highest threshold, thresholds being decreasing
    return float(thresholds[1 + best]), float(j[best])


# ----------------------------------------------------------------------------------------------------
# DeLong.


@dataclass(frozen=True)
class DelongResult:
    """Paired DeLong test of ``AUC_a == AUC_b`` for two score sets of the same cases."""

    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    var_a: float
    var_b: float
    covariance: float
    se: float  # standard error of the difference
    z: float | None  # None when the SE is 0 but the AUCs differ (degenerate: no sampling variance)
    p_value: float  # two-sided
    ci_low: float  # confidence interval of the difference
    ci_high: float
    confidence: float
    n_positive: int
    n_negative: int
    method: str = DELONG_METHOD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def delong_covariance(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``k`` score sets of the same cases.

    Args:
        labels: ``[N]`` in {0, 1}, both present. scores: ``[k, N]`` (or ``[N]`` for one set).
    Returns:
        ``(aucs float64 [k], covariance float64 [k, k])``. Fast form of Sun & Xu (2014): with the m
        positives X and n negatives Y, midranks T_z over X and Y together, T_x within X, T_y within Y,
        the placements are ``V10 = (T_z[X] - T_x) / n`` and ``V01 = 1 - (T_z[Y] - T_y) / m``; the AUC is
        the mean of V10 and ``S = cov(V10) / m + cov(V01) / n``.
    """
    s = np.asarray(scores, dtype=np.float64)
    s2 = s[None, :] if s.ndim == 1 else s
    y = _as_labels(labels, n_classes=2)
    if s2.ndim != 2:
        raise ValueError(f"scores must have shape [k, N] or [N], got {list(s.shape)}")
    for row in s2:
        _binary(y, row)  # checks shape, finiteness and that both classes are present
    pos, neg = s2[:, y == 1], s2[:, y == 0]  # [k, m], [k, n]
    m, n = pos.shape[1], neg.shape[1]
    t_z = _scipy_stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks, ties averaged
    t_x = _scipy_stats.rankdata(pos, axis=1)
    t_y = _scipy_stats.rankdata(neg, axis=1)
    v10 = (t_z[:, :m] - t_x) / n  # [k, m]: fraction of negatives each positive beats
    v01 = 1.0 - (t_z[:, m:] - t_y) / m  # [k, n]: fraction of positives that beat each negative
    aucs = v10.mean(axis=1)
    # ddof=1 as DeLong; a single positive or negative gives no variance estimate (0 by convention).
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(s2), len(s2)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(s2), len(s2)))
    return aucs, s10 / m + s01 / n


def delong_test(
    labels: Any, scores_a: Any, scores_b: Any, *, confidence: float = DEFAULT_CONFIDENCE
) -> DelongResult:
    """Paired two-sided DeLong test of equal AUCs for two models scored on the same cases.

    Args:
        labels: ``[N]`` in {0, 1}, both present. scores_a, scores_b: ``[N]`` each, same case order.
    A model against itself (or any two scores ranking the cases identically) gives z = 0, p = 1.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    y = _as_labels(labels, n_classes=2)
    a = _as_scores(scores_a, len(y), 1)
    b = _as_scores(scores_b, len(y), 1)
    aucs, cov = delong_covariance(y, np.stack([a, b]))
    diff = float(aucs[0] - aucs[1])
    var_diff = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var_diff, 0.0)))
    if se > 0:
        z: float | None = diff / se
        p = float(2 * _scipy_stats.norm.sf(abs(z)))
    elif diff == 0:
        z, p = 0.0, 1.0  # identical rankings: no evidence of a difference
    else:
        z, p = None, 0.0  # different AUCs without any sampling variance (degenerate, e.g. constant scores)
    half = float(_scipy_stats.norm.ppf(0.5 + confidence / 2)) * se
    return DelongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        difference=diff,
        var_a=float(cov[0, 0]),
        var_b=float(cov[1, 1]),
        covariance=float(cov[0, 1]),
        se=se,
        z=z,
        p_value=p,
        ci_low=diff - half,
        ci_high=diff + half,
        confidence=float(confidence),
        n_positive=int(y.sum()),
        n_negative=int(len(y) - y.sum()),
    )

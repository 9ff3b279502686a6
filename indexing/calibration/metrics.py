"""Quality of a relevance filter, pooled over (query, candidate) pairs.

Recall is counted against the relevant passages *among the candidates*: a filter can only keep
what retrieval returned, so this isolates the filter from the retriever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

ECE_BINS = 15


@dataclass(frozen=True)
class FilterMetrics:
    """Everything the calibration report shows for one method on held-out queries."""

    threshold: float
    precision: float
    recall: float
    f1: float
    brier: float | None  # None when the method's scores are not probabilities (raw cosine)
    ece: float | None
    roc_auc: float
    precision_at_recall_50: float  # the high-precision operating region (e.g. --target-precision)
    precision_at_recall_80: float
    precision_at_recall_90: float
    mean_list_length: float
    null_fraction: float  # share of queries left with zero results (the paper's Null%)
    n_queries: int
    n_pairs: int
    n_relevant: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count one half); NaN without both classes.

    The same number as sklearn's `roc_auc_score`, without its input validation, which cost ~10 ms
    a call: the query bootstrap of `gain_interval` calls this thousands of times.
    """
    y = np.asarray(label).astype(bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE with equal-width bins on [0, 1], each bin weighted by its share of pairs."""
    prob = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    label = np.asarray(label, dtype=np.float64)
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(prob[mask].mean() - label[mask].mean())
    return float(total / max(len(prob), 1))


def reliability_curve(prob: np.ndarray, label: np.ndarray, n_bins: int = ECE_BINS) -> tuple[np.ndarray, ...]:
    """Per equal-width bin: mean predicted probability, observed frequency, pair count."""
    prob = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    label = np.asarray(label, dtype=np.float64)
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    mean_pred, observed, count = [], [], []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            mean_pred.append(prob[mask].mean())
            observed.append(label[mask].mean())
            count.append(int(mask.sum()))
    return np.array(mean_pred), np.array(observed), np.array(count)


def precision_recall_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of `score >= t` for every distinct t (descending), ties kept together."""
    order = np.argsort(-score, kind="stable")
    s, y = score[order], label[order].astype(np.float64)
    tp = np.cumsum(y)
    kept = np.arange(1, len(y) + 1, dtype=np.float64)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp, kept, thresholds = tp[last_of_tie], kept[last_of_tie], s[last_of_tie]
    return tp / kept, tp / max(y.sum(), 1.0), thresholds


def precision_at_recall(score: np.ndarray, label: np.ndarray, target_recall: float) -> float:
    """Best precision of any global threshold whose recall reaches `target_recall`."""
    precision, recall, _ = precision_recall_curve(score, label)
    ok = recall >= target_recall - 1e-12
    return float(precision[ok].max()) if ok.any() else 0.0


def filter_metrics(
    scores: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    threshold: float | Sequence[float],
    is_probability: bool = True,
) -> FilterMetrics:
    """Pooled metrics of keeping `score >= threshold`, per-query lists given separately.

    `threshold` may be one value or one per query (cross-validation filters each held-out query with
    the threshold its fold's training queries chose); the reported threshold is then their mean.
    """
    per_query = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(scores),))
    score = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores])
    label = np.concatenate([np.asarray(y, dtype=np.float64) for y in labels])
    keep_lists = [np.asarray(s) >= t for s, t in zip(scores, per_query, strict=True)]
    keep = np.concatenate(keep_lists)
    tp = float((keep & (label > 0)).sum())
    precision = tp / keep.sum() if keep.any() else 1.0
    recall = tp / label.sum() if label.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    kept_per_query = np.array([k.sum() for k in keep_lists])
    auc = roc_auc(label, score)
    return FilterMetrics(
        threshold=float(per_query.mean()),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        brier=float(np.mean((np.clip(score, 0, 1) - label) ** 2)) if is_probability else None,
        ece=expected_calibration_error(score, label) if is_probability else None,
        roc_auc=float(auc),
        precision_at_recall_50=precision_at_recall(score, label, 0.5),
        precision_at_recall_80=precision_at_recall(score, label, 0.8),
        precision_at_recall_90=precision_at_recall(score, label, 0.9),
        mean_list_length=float(kept_per_query.mean()),
        null_fraction=float((kept_per_query == 0).mean()),
        n_queries=len(scores),
        n_pairs=len(score),
        n_relevant=int(label.sum()),
    )


def choose_threshold(
    scores: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    target_precision: float | None = None,
) -> float:
    """One global threshold: max F1, or the lowest threshold whose precision meets the target.

    One sort and a cumulative sweep (O(n log n)). With a precision target that no threshold meets,
    the threshold of the best precision is returned (the report shows the achieved value).
    """
    score = np.concatenate([np.ravel(s) for s in scores]) if isinstance(scores, list | tuple) else scores
    label = np.concatenate([np.ravel(y) for y in labels]) if isinstance(labels, list | tuple) else labels
    precision, recall, thresholds = precision_recall_curve(np.asarray(score, float), np.asarray(label, float))
    if target_precision is None:
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        return float(thresholds[int(np.argmax(f1))])
    ok = precision >= target_precision
    if ok.any():
        return float(thresholds[np.flatnonzero(ok)[-1]])
    return float(thresholds[int(np.argmax(precision))])


@dataclass(frozen=True)
class GainInterval:
    """A method's gain over a baseline on one metric, with a query-bootstrap interval."""

    metric: str
    gain: float
    low: float
    high: float
    level: float
    n_queries: int
    n_resamples: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


GAIN_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "precision_at_recall_80": lambda s, y: precision_at_recall(s, y, 0.8),
    "roc_auc": lambda s, y: roc_auc(y, s),
}


def gain_interval(
    method: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    metric: str = "precision_at_recall_80",
    n_resamples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> GainInterval:
    """Paired percentile bootstrap over queries of metric(method) - metric(baseline).

    With a few dozen labelled queries, which queries happened to be labelled moves a pooled metric
    by more than most modelling choices do; this says how far. Both methods' held-out scores are
    resampled with the same queries (paired), so what the interval measures is the gain's
    uncertainty from the choice of queries, not from refitting.
    """
    if not len(method) == len(baseline) == len(labels) or not len(labels):
        raise ValueError("gain interval: method, baseline and labels need one entry per query, and a query")
    score = GAIN_METRICS[metric]
    a = [np.asarray(s, dtype=np.float64) for s in method]
    b = [np.asarray(s, dtype=np.float64) for s in baseline]
    y = [np.asarray(v, dtype=np.float64) for v in labels]

    def gain(idx: np.ndarray) -> float:
        labels_ = np.concatenate([y[i] for i in idx])
        return score(np.concatenate([a[i] for i in idx]), labels_) - score(np.concatenate([b[i] for i in idx]), labels_)

    n = len(labels)
    rng = np.random.default_rng(seed)
    draws = np.array([gain(rng.integers(0, n, n)) for _ in range(n_resamples)])
    draws = draws[np.isfinite(draws)]
    tail = (1.0 - level) / 2.0
    low, high = (np.quantile(draws, [tail, 1.0 - tail]) if draws.size else (float("nan"), float("nan")))
    return GainInterval(metric, gain(np.arange(n)), float(low), float(high), level, n, n_resamples)

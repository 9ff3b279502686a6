"""Query-grouped cross-validation of the calibrator and its baselines, in one code path.

Every method turns a query's candidate scores into a relevance score; one global threshold is then
chosen on *training* queries only (from inner out-of-fold predictions, so an over-fitted model does
not pick an optimistic threshold) and applied to the held-out queries. Folds never split a query.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import KFold

from indexing.calibration.features import TOPIC_SIZES
from indexing.calibration.metrics import FilterMetrics, choose_threshold, filter_metrics
from indexing.calibration.model import CalibratorConfig, LabelledQuery, QueryDependentCalibrator

Predictor = Callable[[LabelledQuery], np.ndarray]
Fitter = Callable[[Sequence[LabelledQuery]], Predictor]


L2_GRID: tuple[float, ...] = (0.003, 0.03, 0.3)


def default_grid(
    families: Sequence[str] = ("linear", "power"),
    n_candidates: int = 100,
    rank_term: bool = True,
    l2_grid: Sequence[float] = L2_GRID,
) -> list[CalibratorConfig]:
    """The hyper-parameters cross-validation chooses among; `none` is global Platt on g(x).

    `rank_term`: every configuration also carries the rank term (it nests the model without it:
    c(q) -> 0), which the oracle diagnostic in docs/BENCHMARKS.md shows is worth having even with a
    perfect per-query prior.
    """
    grid = [CalibratorConfig(f, "none", 0.0, n_candidates=n_candidates, rank_term=rank_term) for f in families]
    for family, features, l2 in itertools.product(families, ("scores", "scores+embedding"), l2_grid):
        grid.append(CalibratorConfig(family, features, l2, n_candidates=n_candidates, rank_term=rank_term))
    return grid


def topic_density_grid(
    families: Sequence[str] = ("linear", "power"),
    n_candidates: int = 100,
    topic_sizes: Sequence[int] = TOPIC_SIZES,
    rank_term: bool = True,
) -> list[CalibratorConfig]:
    """`default_grid` plus score shape + topic density for each m: inner CV picks m on training queries.

    Its queries need `topic_neighbours` for every m in `topic_sizes`.
    """
    extra = [
        CalibratorConfig(family, "scores", l2, n_candidates=n_candidates, topic_size=m, rank_term=rank_term)
        for family, l2, m in itertools.product(families, L2_GRID, topic_sizes)
    ]
    return default_grid(families, n_candidates, rank_term) + extra


def coherence_grid(
    families: Sequence[str] = ("linear", "power"),
    n_candidates: int = 100,
    topic_sizes: Sequence[int] = TOPIC_SIZES,
    rank_term: bool = True,
    with_shape: bool = False,
    l2_grid: Sequence[float] = L2_GRID,
) -> list[CalibratorConfig]:
    """`default_grid` plus list coherence for each m: inner CV picks m on training queries.

    Coherence comes alone (`with_shape`: beside the six score-shape features instead, the session-2
    default). Alone it predicts a query's share of relevant candidates better than with the shape,
    but without the rank term it emptied the lists of narrow-topic queries at a high-precision
    threshold (Null% 44 at precision 0.8); the rank term keeps the head of every list, which the
    shape features used to do (docs/BENCHMARKS.md). Its queries need `coherence_tails` for every m.
    """
    features = "scores" if with_shape else "none"
    extra = [
        CalibratorConfig(
            family, features, l2, n_candidates=n_candidates, topic_size=m, topic_feature="coherence",
            rank_term=rank_term,
        )
        for family, l2, m in itertools.product(families, l2_grid, topic_sizes)
    ]
    return default_grid(families, n_candidates, rank_term, l2_grid) + extra


def config_label(c: CalibratorConfig) -> str:
    """Short name of a chosen configuration, for reports."""
    topic = f"+{c.topic_feature}(m={c.topic_size})" if c.topic_size else ""
    rank = "+rank" if c.rank_term else ""
    return f"{c.family}/{c.feature_set}{topic}{rank}/l2={c.l2:g}"


# ----- baselines --------------------------------------------------------------------------------
def fit_cosine_cutoff(train: Sequence[LabelledQuery]) -> Predictor:
    """The raw score itself: a global cosine threshold (not a probability)."""
    return lambda q: np.asarray(q.scores, dtype=np.float64)


def fit_top_k(train: Sequence[LabelledQuery]) -> Predictor:
    """P(relevant | rank), non-increasing in rank: a threshold on it is a fixed top-k."""
    ranks = np.concatenate([np.argsort(np.argsort(-q.scores, kind="stable")) for q in train]).astype(float)
    labels = np.concatenate([q.labels for q in train]).astype(float)
    iso = IsotonicRegression(increasing=False, out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(ranks, labels)

    def predict(q: LabelledQuery) -> np.ndarray:
        return iso.predict(np.argsort(np.argsort(-q.scores, kind="stable")).astype(float))

    return predict


def fit_platt(train: Sequence[LabelledQuery]) -> Predictor:
    """Global Platt scaling: the calibrator with no query features and the linear family."""
    return QueryDependentCalibrator.fit(train, CalibratorConfig("linear", "none", 0.0)).predict


# ----- cross-validation -------------------------------------------------------------------------
def _folds(n: int, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(KFold(min(n_folds, n), shuffle=True, random_state=seed).split(np.arange(n)))


def out_of_fold(queries: Sequence[LabelledQuery], fit: Fitter, n_folds: int, seed: int) -> list[np.ndarray]:
    """Each query scored by a model fitted without it (query-grouped folds)."""
    preds: list[np.ndarray] = [np.empty(0)] * len(queries)
    for train_idx, test_idx in _folds(len(queries), n_folds, seed):
        predictor = fit([queries[i] for i in train_idx])
        for i in test_idx:
            preds[i] = predictor(queries[i])
    return preds


def _log_loss(preds: Sequence[np.ndarray], queries: Sequence[LabelledQuery]) -> float:
    p = np.clip(np.concatenate(preds), 1e-6, 1 - 1e-6)
    y = np.concatenate([q.labels for q in queries]).astype(float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class Selection:
    """Outcome of choosing hyper-parameters by inner query-grouped CV (mean log loss)."""

    config: CalibratorConfig
    oof: list[np.ndarray]
    log_loss_by_config: list[tuple[CalibratorConfig, float]]


def select_config(
    queries: Sequence[LabelledQuery],
    grid: Sequence[CalibratorConfig],
    n_folds: int = 5,
    seed: int = 0,
    unlabelled_embeddings: np.ndarray | None = None,
) -> Selection:
    table: list[tuple[CalibratorConfig, float]] = []
    best: tuple[float, CalibratorConfig, list[np.ndarray]] | None = None
    for config in grid:

        def fit(train: Sequence[LabelledQuery], config: CalibratorConfig = config) -> Predictor:
            return QueryDependentCalibrator.fit(train, config, unlabelled_embeddings).predict

        oof = out_of_fold(queries, fit, n_folds, seed)
        loss = _log_loss(oof, queries)
        table.append((config, loss))
        if best is None or loss < best[0]:
            best = (loss, config, oof)
    assert best is not None
    return Selection(best[1], best[2], table)


@dataclass
class MethodReport:
    """Held-out predictions and metrics of one method."""

    name: str
    is_probability: bool
    predictions: list[np.ndarray]
    thresholds: list[float]  # the threshold each held-out query was filtered with (its fold's)
    metrics: FilterMetrics
    chosen: list[str] = field(default_factory=list)  # hyper-parameters picked in each outer fold


def _fitter_with_threshold(
    name: str,
    unlabelled: np.ndarray | None,
    grid: Sequence[CalibratorConfig],
    n_folds: int,
    seed: int,
    target_precision: float | None,
) -> Callable[[Sequence[LabelledQuery]], tuple[Predictor, float, str]]:
    baselines: dict[str, Fitter] = {"top_k": fit_top_k, "cosine_cutoff": fit_cosine_cutoff, "platt": fit_platt}

    def fit(train: Sequence[LabelledQuery]) -> tuple[Predictor, float, str]:
        if name in baselines:
            oof = out_of_fold(train, baselines[name], n_folds, seed)
            threshold = choose_threshold(oof, [q.labels for q in train], target_precision)
            return baselines[name](train), threshold, ""
        selection = select_config(train, grid, n_folds, seed, unlabelled)
        threshold = choose_threshold(selection.oof, [q.labels for q in train], target_precision)
        model = QueryDependentCalibrator.fit(train, selection.config, unlabelled)
        return model.predict, threshold, config_label(selection.config)

    return fit


METHODS: tuple[str, ...] = ("top_k", "cosine_cutoff", "platt", "adapter")


def cross_validate(
    queries: Sequence[LabelledQuery],
    method: str,
    n_folds: int = 5,
    seed: int = 0,
    target_precision: float | None = None,
    grid: Sequence[CalibratorConfig] | None = None,
    unlabelled_embeddings: np.ndarray | None = None,
) -> MethodReport:
    """Outer query-grouped CV of `method` (one of METHODS); inner CV picks config and threshold."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {METHODS}")
    fit = _fitter_with_threshold(method, unlabelled_embeddings, grid or default_grid(), n_folds, seed, target_precision)
    preds: list[np.ndarray] = [np.empty(0)] * len(queries)
    thresholds = [0.0] * len(queries)
    chosen: list[str] = []
    for train_idx, test_idx in _folds(len(queries), n_folds, seed):
        predictor, threshold, label = fit([queries[i] for i in train_idx])
        chosen.append(label)
        for i in test_idx:
            preds[i] = predictor(queries[i])
            thresholds[i] = threshold
    is_probability = method != "cosine_cutoff"
    metrics = filter_metrics(preds, [q.labels for q in queries], thresholds, is_probability)
    return MethodReport(method, is_probability, preds, thresholds, metrics, chosen)

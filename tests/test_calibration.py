"""The calibration core: monotone per query, recovers a known calibrated map, strict serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from indexing.calibration.evaluation import (
    coherence_grid,
    cross_validate,
    default_grid,
    select_config,
    topic_density_grid,
)
from indexing.calibration.families import FAMILIES, transform
from indexing.calibration.features import TOPIC_SIZES, coherence_tail, list_coherence, topic_centre, topic_density
from indexing.calibration.metrics import (
    choose_threshold,
    expected_calibration_error,
    filter_metrics,
    gain_interval,
    precision_at_recall,
)
from indexing.calibration.model import CalibratorConfig, LabelledQuery, QueryDependentCalibrator, rank_feature
from indexing.calibration.relevance import CalibrationError, ModelMismatch, RelevanceCalibration, fit_calibration

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 16


def synthetic_queries(n_queries: int, n_candidates: int, seed: int) -> tuple[list[LabelledQuery], list[np.ndarray]]:
    """Queries whose true P(rel) = sigmoid(8 (x - centre(q))), centre set by the list's own top score.

    The query-dependent part is visible without labels (a query whose list sits high needs a higher
    score to be relevant), which is the structure the calibrator is meant to learn.
    """
    rng = np.random.default_rng(seed)
    queries, truths = [], []
    for i in range(n_queries):
        level = rng.uniform(0.2, 0.6)
        scores = np.sort(np.clip(level + 0.12 * rng.standard_normal(n_candidates), -1, 1))[::-1]
        centre = scores[0] - 0.15
        truth = expit(12.0 * (scores - centre))
        labels = (rng.uniform(size=n_candidates) < truth).astype(float)
        emb = rng.standard_normal(DIM).astype(np.float32)
        queries.append(LabelledQuery(f"q{i}", emb / np.linalg.norm(emb), scores, labels))
        truths.append(truth)
    return queries, truths


@pytest.fixture(scope="module")
def synthetic() -> tuple[list[LabelledQuery], list[LabelledQuery], list[np.ndarray]]:
    train, _ = synthetic_queries(80, 60, seed=1)
    test, truths = synthetic_queries(80, 60, seed=2)
    return train, test, truths


@pytest.fixture(scope="module")
def fitted(synthetic: tuple) -> RelevanceCalibration:
    train, _, _ = synthetic
    grid = [CalibratorConfig("linear", "none", 0.0, n_candidates=60)] + [
        CalibratorConfig("power", "scores", l2, n_candidates=60) for l2 in (0.003, 0.03)
    ]
    return fit_calibration(train, MODEL, DIM, grid=grid, n_folds=4)


def test_fit_on_known_ground_truth_is_calibrated(synthetic: tuple, fitted: RelevanceCalibration) -> None:
    _, test, truths = synthetic
    pred = np.concatenate([fitted.apply(q.scores, q.embedding, q.scores) for q in test])
    labels = np.concatenate([q.labels for q in test])
    assert expected_calibration_error(pred, labels) < 0.05
    # Close to the true probability pair by pair, not only on average per bin.
    assert np.mean(np.abs(pred - np.concatenate(truths))) < 0.05
    # CV picked the query-dependent model: global Platt cannot express the shifting centre.
    assert fitted.calibrator.config.feature_set == "scores"


def test_query_dependence_beats_global_platt_on_held_out_queries(synthetic: tuple) -> None:
    train, _, _ = synthetic
    grid = [CalibratorConfig("power", "scores", 0.01, n_candidates=60)]
    adapter = cross_validate(train, "adapter", n_folds=4, grid=grid)
    platt = cross_validate(train, "platt", n_folds=4)
    assert adapter.metrics.roc_auc > platt.metrics.roc_auc + 0.02
    assert adapter.metrics.ece < 0.05


@settings(max_examples=80, deadline=None)
@given(
    family=st.sampled_from(FAMILIES),
    exponent=st.floats(0.05, 8.0),
    alpha=st.lists(st.floats(-3, 3), min_size=7, max_size=7),
    beta=st.lists(st.floats(-20, 20), min_size=7, max_size=7),
    gamma=st.none() | st.lists(st.floats(-3, 3), min_size=7, max_size=7),
    scores=st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=40),
)
def test_relevance_is_monotone_in_the_score_for_a_fixed_query(
    family: str, exponent: float, alpha: list[float], beta: list[float], gamma: list[float] | None,
    scores: list[float],
) -> None:
    config = CalibratorConfig(family, "scores", 0.1, n_candidates=40, rank_term=gamma is not None)
    k = exponent if family == "power" else {"linear": 1.0, "sqrt": 0.5, "quadratic": 2.0}[family]
    calibrator = QueryDependentCalibrator(
        config, np.array(alpha), np.array(beta), k, np.zeros(6), np.ones(6), None,
        None if gamma is None else np.array(gamma),
    )
    x = np.sort(np.array(scores))
    relevance = calibrator.apply(x, None, x)
    assert np.all((relevance >= 0) & (relevance <= 1))
    assert np.all(np.diff(relevance) >= 0)
    # Filtering keeps a prefix of the ranking: no threshold reorders or skips.
    kept = relevance[::-1] >= np.median(relevance)
    assert not np.any(kept[1:] & ~kept[:-1])


def test_transform_is_strictly_increasing() -> None:
    x = np.linspace(-1, 1, 401)
    for k in (0.05, 0.5, 1.0, 2.0, 7.5):
        assert np.all(np.diff(transform(x, k)) > 0)


def test_round_trip_preserves_predictions(synthetic: tuple, fitted: RelevanceCalibration) -> None:
    _, test, _ = synthetic
    restored = RelevanceCalibration.from_dict(json.loads(json.dumps(fitted.to_dict())))
    for q in test[:5]:
        np.testing.assert_allclose(
            restored.apply(q.scores, q.embedding, q.scores), fitted.apply(q.scores, q.embedding, q.scores)
        )
    assert restored.threshold == fitted.threshold
    assert restored.to_dict() == fitted.to_dict()


def test_round_trip_with_embedding_projection(synthetic: tuple) -> None:
    train, test, _ = synthetic
    config = CalibratorConfig("sqrt", "scores+embedding", 0.1, projection_rank=3, n_candidates=60)
    calibration = fit_calibration(train[:30], MODEL, DIM, grid=[config], n_folds=3)
    data = calibration.to_dict()
    assert len(data["projection"]["components"]) == 3 and data["feature_names"][-1] == "query_pc2"
    restored = RelevanceCalibration.from_dict(data)
    q = test[0]
    np.testing.assert_allclose(
        restored.apply(q.scores, q.embedding, q.scores), calibration.apply(q.scores, q.embedding, q.scores)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"schema_version": 99},
        {"topic_size": -1},
        {"topic_size": 5},  # no topic_density in feature_names
        {"family": "cubic"},
        {"exponent": -1.0},
        {"exponent": 2.0},  # fixed family with the wrong exponent
        {"threshold": 1.5},
        {"alpha": [1.0]},
        {"beta": [float("nan")] * 7},
        {"feature_scale": [0.0] * 6},
        {"feature_names": ["top1"]},
        {"feature_set": "scores+embedding"},  # needs a projection
        {"embedding_model": ""},
        {"n_candidates": 0},
        {"unexpected": 1},
    ],
)
def test_invalid_payloads_are_rejected(fitted: RelevanceCalibration, change: dict) -> None:
    data = {**fitted.to_dict(), **change}
    if fitted.calibrator.config.family == "power" and "exponent" in change and change["exponent"] == 2.0:
        data["family"] = "linear"
    with pytest.raises(CalibrationError):
        RelevanceCalibration.from_dict(data)


def test_other_embedding_model_is_refused(fitted: RelevanceCalibration) -> None:
    fitted.check_model(MODEL, DIM)
    with pytest.raises(ModelMismatch, match="not comparable"):
        fitted.check_model("BAAI/bge-small-en-v1.5", DIM)
    with pytest.raises(ModelMismatch):
        fitted.check_model(MODEL, DIM + 1)


def test_threshold_for_target_precision_and_max_f1() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 0, 1, 0, 0])
    assert choose_threshold(scores, labels) == 0.6  # F1 0.857 keeping the top four
    assert choose_threshold(scores, labels, target_precision=1.0) == 0.8
    m = filter_metrics([scores[:3], scores[3:]], [labels[:3], labels[3:]], 0.6)
    assert (m.precision, m.recall, m.mean_list_length, m.null_fraction) == (0.75, 1.0, 2.0, 0.0)
    m = filter_metrics([scores[:3], scores[3:]], [labels[:3], labels[3:]], [0.6, 0.95])
    assert m.null_fraction == 0.5


def test_baselines_share_the_code_path(synthetic: tuple) -> None:
    train, _, _ = synthetic
    grid = default_grid(("linear",), n_candidates=60)[:2]
    reports = {
        m: cross_validate(train[:40], m, n_folds=4, grid=grid) for m in ("top_k", "cosine_cutoff", "platt", "adapter")
    }
    assert reports["cosine_cutoff"].metrics.ece is None  # raw cosine is not a probability
    assert all(0 <= r.metrics.roc_auc <= 1 for r in reports.values())
    # A fixed top-k keeps the same number for every query.
    top_k = reports["top_k"]
    kept = {int((p >= t).sum()) for p, t in zip(top_k.predictions, top_k.thresholds, strict=True)}
    assert len(kept) <= 4  # one k per outer fold


def _noisy_lists(rng: np.random.Generator, n_queries: int, noise: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    labels = [(rng.uniform(size=30) < 0.4).astype(float) for _ in range(n_queries)]
    return [y + noise * rng.standard_normal(30) for y in labels], labels


def test_gain_interval_is_zero_for_the_same_scores_and_brackets_a_real_gain() -> None:
    rng = np.random.default_rng(3)
    sharp, labels = _noisy_lists(rng, 40, 0.3)
    blurred = [y + 1.5 * rng.standard_normal(30) for y in labels]
    same = gain_interval(sharp, sharp, labels, n_resamples=200)
    assert (same.gain, same.low, same.high) == (0.0, 0.0, 0.0)
    better = gain_interval(sharp, blurred, labels, n_resamples=300)
    pooled = np.concatenate(labels)
    expected = precision_at_recall(np.concatenate(sharp), pooled, 0.8) - precision_at_recall(
        np.concatenate(blurred), pooled, 0.8
    )
    assert better.gain == pytest.approx(expected)
    assert 0.0 < better.low <= better.gain <= better.high
    auc = gain_interval(blurred, sharp, labels, metric="roc_auc", n_resamples=200)
    assert auc.high < 0.0  # the blurred scores lose, and the interval says so
    # Fewer queries: the same gain is known less precisely.
    few = gain_interval(sharp[:8], blurred[:8], labels[:8], n_resamples=300)
    assert few.high - few.low > better.high - better.low
    with pytest.raises(ValueError, match="one entry per query"):
        gain_interval(sharp, blurred[:-1], labels)


# ----- topic density: a corpus statistic, computed the same way when fitting and when serving -----
def _same_shape_list(rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """50 candidate scores of one fixed shape, a hidden per-query prior in [0, 1], and labels drawn from both.

    Only a feature that sees the hidden prior can tell such queries apart (the score shape cannot).
    """
    scores = np.sort(np.clip(0.45 + 0.1 * rng.standard_normal(50), -1, 1))[::-1]
    prior = rng.uniform()
    labels = (rng.uniform(size=50) < expit(10 * (scores - 0.45) + 6 * (prior - 0.5))).astype(float)
    return scores, prior, labels


def topic_queries(n_queries: int, seed: int) -> list[LabelledQuery]:
    """Lists whose share relevant is set by how crowded the query's topic is in the corpus.

    The score shape is the same for every query; only the neighbour counts of the topic centre (what
    `topic_density` reads) carry the prior, so a calibrator can only separate queries through it.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_queries):
        scores, crowded, labels = _same_shape_list(rng)
        neighbours = {}
        for m in TOPIC_SIZES:
            inside = int(1 + crowded * 48)  # passages at least as close to the centre as the m-th hit
            radius = scores[m - 1]
            neighbours[m] = np.r_[np.full(inside, radius + 0.05), np.full(50 - inside, radius - 0.2)]
        emb = rng.standard_normal(DIM).astype(np.float32)
        out.append(LabelledQuery(f"t{i}", emb / np.linalg.norm(emb), scores, labels, neighbours))
    return out


def test_topic_density_counts_passages_inside_the_querys_own_radius() -> None:
    candidates = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    neighbours = np.array([0.95, 0.85, 0.75, 0.69, 0.3])
    assert topic_density(neighbours, candidates, 3) == pytest.approx(np.log1p(3))  # radius 0.7
    assert topic_density(neighbours, candidates, 5) == pytest.approx(np.log1p(4))  # radius 0.5
    # Scale-free: shifting every similarity by the same amount changes nothing.
    assert topic_density(neighbours - 0.3, candidates - 0.3, 3) == topic_density(neighbours, candidates, 3)
    centre = topic_centre(np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(centre, [2**-0.5, 2**-0.5])


def test_cross_validation_picks_topic_density_when_it_carries_the_prior() -> None:
    queries = topic_queries(60, seed=5)
    grid = topic_density_grid(("linear",), n_candidates=50)
    selection = select_config(queries, grid, n_folds=4)
    assert selection.config.topic_size in TOPIC_SIZES
    by_config = dict(selection.log_loss_by_config)
    no_density = min(loss for c, loss in by_config.items() if c.topic_size == 0)
    assert by_config[selection.config] < no_density - 0.01


def test_topic_density_round_trip_and_old_payloads(synthetic: tuple) -> None:
    queries = topic_queries(40, seed=6)
    config = CalibratorConfig("linear", "scores", 0.03, n_candidates=50, topic_size=10)
    calibration = fit_calibration(queries, MODEL, DIM, grid=[config], n_folds=3)
    data = json.loads(json.dumps(calibration.to_dict()))
    assert data["schema_version"] == 4 and data["topic_size"] == 10 and data["feature_names"][-1] == "topic_density"
    assert data["topic_feature"] == "density"
    restored = RelevanceCalibration.from_dict(data)
    q = queries[0]
    topic = q.topic_neighbour_scores(10)
    np.testing.assert_allclose(
        restored.apply(q.scores, None, q.scores, topic), calibration.apply(q.scores, None, q.scores, topic)
    )
    with pytest.raises(ValueError, match="neighbour scores"):
        restored.apply(q.scores, None, q.scores)
    with pytest.raises(CalibrationError):  # version 1 had no topic density
        RelevanceCalibration.from_dict({**data, "schema_version": 1})


def test_version_1_payload_still_loads(fitted: RelevanceCalibration, synthetic: tuple) -> None:
    old = {k: v for k, v in fitted.to_dict().items() if k != "topic_size"} | {"schema_version": 1}
    restored = RelevanceCalibration.from_dict(old)
    assert restored.topic_size == 0
    q = synthetic[1][0]
    np.testing.assert_allclose(
        restored.apply(q.scores, q.embedding, q.scores), fitted.apply(q.scores, q.embedding, q.scores)
    )


def _random_collection(tmp_path, seed: int) -> tuple:
    """A flat collection of 300 random unit vectors and a query near the first two of them."""
    from indexing.collection import Collection, CollectionConfig
    from indexing.store import Document

    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((300, DIM)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    coll = Collection.create(tmp_path / "c", CollectionConfig("c", MODEL, DIM, index_kind="flat"))
    coll.upsert([Document(f"d{i}", f"passage {i}") for i in range(len(corpus))], corpus)
    query = corpus[0] + 0.3 * corpus[1]
    return coll, corpus, query / np.linalg.norm(query)


def test_serving_computes_topic_density_from_the_collection_index(tmp_path) -> None:
    """The hook's one extra search (centre of the top-m hits) matches exact cosine over the corpus."""
    from indexing.calibration.serving import install_calibration, topic_neighbour_scores

    coll, corpus, query = _random_collection(tmp_path, seed=7)
    try:
        [result] = coll.search(query[None, :], 50)
        vids = np.array([h.vid for h in result.hits])
        got = topic_neighbour_scores(coll, vids, (5, 10), 50)
        exact = query @ corpus.T
        order = np.argsort(-exact)
        for m in (5, 10):
            expected = np.sort(corpus @ topic_centre(corpus[order[:m]]))[::-1][:50]
            np.testing.assert_allclose(got[m], expected, atol=1e-5)

        queries = topic_queries(40, seed=8)
        config = CalibratorConfig("linear", "scores", 0.03, n_candidates=50, topic_size=5)
        calibration = install_calibration(coll, fit_calibration(queries, MODEL, DIM, grid=[config], n_folds=3))
        [served] = coll.search(query[None, :], 50, min_relevance=0.0)
        want = calibration.apply(exact[order[:50]], query, exact[order[:50]], got[5])
        np.testing.assert_allclose([h.relevance for h in served.hits], want, rtol=1e-5)
    finally:
        coll.close()


# ----- list coherence: how far the candidate list's lower half stays on the topic of its head -----
def coherence_queries(n_queries: int, seed: int) -> list[LabelledQuery]:
    """Same score shape for every query; only the tail's similarity to the head's topic carries the prior."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_queries):
        scores, broad, labels = _same_shape_list(rng)
        tails = {m: np.full(25, 0.3 + 0.5 * broad) + 0.01 * rng.standard_normal(25) for m in TOPIC_SIZES}
        emb = rng.standard_normal(DIM).astype(np.float32)
        out.append(LabelledQuery(f"c{i}", emb / np.linalg.norm(emb), scores, labels, coherence_tails=tails))
    return out


def test_list_coherence_reads_the_lower_half_against_the_head_centre() -> None:
    head = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    on_topic = np.r_[head, np.tile([[2**-0.5, 2**-0.5, 0.0]], (2, 1))]
    drifting = np.r_[head, np.tile([[0.0, 0.0, 1.0]], (2, 1))]
    np.testing.assert_allclose(coherence_tail(on_topic, 2), [1.0, 1.0])
    assert list_coherence(coherence_tail(on_topic, 2)) == pytest.approx(1.0)
    assert list_coherence(coherence_tail(drifting, 2)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="at least one candidate"):
        coherence_tail(np.zeros((0, 3)), 2)


def test_cross_validation_picks_list_coherence_when_it_carries_the_prior() -> None:
    queries = coherence_queries(60, seed=11)
    selection = select_config(queries, coherence_grid(("linear",), n_candidates=50), n_folds=4)
    assert selection.config.topic_feature == "coherence" and selection.config.topic_size in TOPIC_SIZES
    by_config = dict(selection.log_loss_by_config)
    without = min(loss for c, loss in by_config.items() if c.topic_size == 0)
    assert by_config[selection.config] < without - 0.01


def test_list_coherence_round_trip_and_schema_checks() -> None:
    queries = coherence_queries(40, seed=12)
    config = CalibratorConfig("linear", "scores", 0.03, n_candidates=50, topic_size=5, topic_feature="coherence")
    calibration = fit_calibration(queries, MODEL, DIM, grid=[config], n_folds=3)
    data = json.loads(json.dumps(calibration.to_dict()))
    assert data["schema_version"] == 4 and data["topic_feature"] == "coherence"
    assert data["feature_names"][-1] == "list_coherence"
    restored = RelevanceCalibration.from_dict(data)
    assert restored.topic_feature == "coherence" and restored.topic_size == 5
    q = queries[0]
    tail = q.coherence_tails[5]
    np.testing.assert_allclose(restored.apply(q.scores, None, q.scores, tail),
                               calibration.apply(q.scores, None, q.scores, tail))
    with pytest.raises(ValueError, match="list-coherence tail"):
        restored.apply(q.scores, None, q.scores)
    with pytest.raises(CalibrationError):  # version 2 had no list coherence
        RelevanceCalibration.from_dict({**data, "schema_version": 2})
    with pytest.raises(CalibrationError):  # the feature name must match the feature
        RelevanceCalibration.from_dict({**data, "topic_feature": "density"})


def test_serving_computes_list_coherence_from_the_stored_vectors(tmp_path) -> None:
    """No second search: the candidates' stored vectors give the same tail as exact cosine over the corpus."""
    from indexing.calibration.serving import coherence_tails, install_calibration

    coll, corpus, query = _random_collection(tmp_path, seed=13)
    try:
        exact = query @ corpus.T
        order = np.argsort(-exact)[:50]
        [result] = coll.search(query[None, :], 50)
        got = coherence_tails(coll, np.array([h.vid for h in result.hits]), (5, 10))
        for m in (5, 10):
            np.testing.assert_allclose(got[m], coherence_tail(corpus[order], m), atol=1e-5)

        queries = coherence_queries(40, seed=14)
        config = CalibratorConfig(
            "linear", "scores", 0.03, n_candidates=50, topic_size=5, topic_feature="coherence", rank_term=True
        )
        calibration = install_calibration(coll, fit_calibration(queries, MODEL, DIM, grid=[config], n_folds=3))
        [served] = coll.search(query[None, :], 50, min_relevance=0.0)
        want = calibration.apply(exact[order], query, exact[order], got[5])
        np.testing.assert_allclose([h.relevance for h in served.hits], want, rtol=1e-5)
        relevance = [h.relevance for h in served.hits]
        assert relevance == sorted(relevance, reverse=True)  # monotone in the score within the query
        # A shorter page gets the same relevance: features and ranks come from the top-n, not the page.
        [page] = coll.search(query[None, :], 10, min_relevance=0.0)
        np.testing.assert_allclose([h.relevance for h in page.hits], want[:10], rtol=1e-5)
    finally:
        coll.close()


def test_coherence_alone_is_a_valid_calibrator() -> None:
    queries = coherence_queries(40, seed=15)
    config = CalibratorConfig("power", "none", 0.03, n_candidates=50, topic_size=10, topic_feature="coherence")
    calibration = fit_calibration(queries, MODEL, DIM, grid=[config], n_folds=3)
    data = json.loads(json.dumps(calibration.to_dict()))
    assert data["feature_set"] == "none" and data["feature_names"] == ["list_coherence"]
    restored = RelevanceCalibration.from_dict(data)
    broad = max(queries, key=lambda q: q.coherence_tails[10].mean())
    narrow = min(queries, key=lambda q: q.coherence_tails[10].mean())
    x = np.linspace(0.2, 0.7, 11)
    p_broad = restored.apply(x, None, broad.scores, broad.coherence_tails[10])
    p_narrow = restored.apply(x, None, narrow.scores, narrow.coherence_tails[10])
    assert np.all(np.diff(p_broad) > 0) and np.all(np.diff(p_narrow) > 0)  # monotone in the score
    assert np.all(p_broad > p_narrow)  # a broadly covered topic raises every score's relevance


# ----- the rank term: -c(q) log(1 + number of candidates above the score) -------------------------
def rank_queries(n_queries: int, seed: int) -> tuple[list[LabelledQuery], list[np.ndarray]]:
    """True P(rel) falls with the position in the list at a fixed score (a position prior)."""
    rng = np.random.default_rng(seed)
    queries, truths = [], []
    for i in range(n_queries):
        level = rng.uniform(0.2, 0.6)
        scores = np.sort(np.clip(level + 0.12 * rng.standard_normal(60), -1, 1))[::-1]
        truth = expit(10 * (scores - level) + 1.0 - 1.2 * np.log1p(np.arange(60)))
        labels = (rng.uniform(size=60) < truth).astype(float)
        queries.append(LabelledQuery(f"r{i}", np.zeros(DIM, np.float32), scores, labels))
        truths.append(truth)
    return queries, truths


def test_rank_feature_counts_the_candidates_strictly_above() -> None:
    candidates = np.array([0.9, 0.5, 0.5, 0.1])
    got = rank_feature(np.array([0.95, 0.9, 0.5, 0.3, 0.1, -1.0]), candidates)
    np.testing.assert_allclose(got, np.log1p([0, 0, 1, 3, 3, 4]))  # ties share a rank


def test_rank_term_recovers_a_position_prior() -> None:
    train, _ = rank_queries(200, seed=21)
    test, truths = rank_queries(200, seed=22)
    labels = np.concatenate([q.labels for q in test])
    errors = {}
    for rank_term in (False, True):
        config = CalibratorConfig("linear", "scores", 0.003, n_candidates=60, rank_term=rank_term)
        model = QueryDependentCalibrator.fit(train, config)
        pred = np.concatenate([model.predict(q) for q in test])
        assert expected_calibration_error(pred, labels) < 0.05
        errors[rank_term] = float(np.mean(np.abs(pred - np.concatenate(truths))))
    assert errors[True] < 0.02 < errors[False]  # without it the map cannot express the position prior
    selection = select_config(train[:80], default_grid(("linear",), 60, rank_term=False)[:3]
                              + default_grid(("linear",), 60, rank_term=True)[:3], n_folds=4)
    assert selection.config.rank_term  # and cross-validation sees it


def test_rank_term_round_trip_and_schema_checks() -> None:
    queries, _ = rank_queries(40, seed=23)
    config = CalibratorConfig("power", "scores", 0.03, n_candidates=60, rank_term=True)
    calibration = fit_calibration(queries, MODEL, DIM, grid=[config], n_folds=3)
    data = json.loads(json.dumps(calibration.to_dict()))
    assert data["schema_version"] == 4 and len(data["rank_weight"]) == len(data["alpha"])
    restored = RelevanceCalibration.from_dict(data)
    assert restored.calibrator.config.rank_term
    q = queries[0]
    np.testing.assert_allclose(restored.apply(q.scores, None, q.scores), calibration.apply(q.scores, None, q.scores))
    # A hit scored below every candidate (a filtered search past the top-n) is ranked after all of them.
    low = restored.apply(np.array([q.scores[-1] - 0.01]), None, q.scores)
    assert low[0] < restored.apply(q.scores[-1:], None, q.scores)[0]
    for bad in ({"schema_version": 3}, {"rank_weight": [0.1]}, {"rank_weight": [float("inf")] * 7}):
        with pytest.raises(CalibrationError, match="rank_weight"):
            RelevanceCalibration.from_dict({**data, **bad})
    # A schema-3 payload (no rank term) still loads and predicts without it.
    old = {k: v for k, v in data.items() if k != "rank_weight"} | {"schema_version": 3}
    assert not RelevanceCalibration.from_dict(old).calibrator.config.rank_term


def test_grids_offer_coherence_alone_with_the_rank_term_by_default() -> None:
    grid = coherence_grid(("linear",), n_candidates=50)
    coherent = [c for c in grid if c.topic_feature == "coherence" and c.topic_size]
    assert coherent and all(c.feature_set == "none" and c.rank_term for c in coherent)
    assert all(c.rank_term for c in grid)
    shaped = coherence_grid(("linear",), 50, rank_term=False, with_shape=True)  # the session-2 grid
    assert all(c.feature_set == "scores" for c in shaped if c.topic_size) and not any(c.rank_term for c in shaped)


def test_roc_auc_equals_sklearn_with_ties_and_is_nan_for_one_class() -> None:
    from sklearn.metrics import roc_auc_score

    from indexing.calibration.metrics import roc_auc

    rng = np.random.default_rng(3)
    for n in (2, 7, 50, 400):
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(rng.normal(size=n), 1)  # rounded: many ties
        assert abs(roc_auc(labels, scores) - roc_auc_score(labels, scores)) < 1e-12
    assert np.isnan(roc_auc(np.ones(5), np.arange(5.0))) and np.isnan(roc_auc(np.zeros(5), np.arange(5.0)))

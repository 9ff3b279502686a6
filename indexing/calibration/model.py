"""The query-dependent calibrator (the "Cosine Adapter"): P(rel | q, x) = sigmoid(a(q) g(x) + b(q) - c(q) h(x | q)).

a(q) = exp(alpha . f(q)) > 0 and b(q) = beta . f(q), where f(q) are standardised, label-free query
features (score-distribution shape and/or a low-rank projection of the query embedding, optionally
the corpus density around the query's topic centre or the coherence of its candidate list) with an
intercept. Fitted by L2-penalised
maximum likelihood on labelled (query, candidate) pairs; the penalty leaves the intercepts free,
so heavy regularisation shrinks toward global Platt scaling (exactly this model with no features).

The optional rank term (config `rank_term`): h(x | q) = log(1 + number of the query's candidates
scoring above x), with c(q) = exp(gamma . f(q)) > 0. It folds the fixed top-k baseline's position
prior into the score map: at the same cosine, a passage 60th in its query's list is less often
relevant than one 6th in another's, because the rank says how much of the collection the query
finds closer, which the raw cosine does not. It also keeps the head of every list: a query whose
features predict few relevant passages still gets its first hits. h is a non-increasing step
function of x, so the map stays increasing in x for a fixed query and a threshold on relevance
still never reorders a query's results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from indexing.calibration.families import exponent_of, transform, transform_dk
from indexing.calibration.features import (
    CANDIDATE_FEATURES,
    LIST_COHERENCE_FEATURE,
    TOPIC_DENSITY_FEATURE,
    QueryProjection,
    candidate_features,
    list_coherence,
    topic_density,
)

FEATURE_SETS: tuple[str, ...] = ("none", "scores", "embedding", "scores+embedding")


@dataclass
class LabelledQuery:
    """One query's retrieved candidates (the scores the filter sees) and their 0/1 labels."""

    query_id: str
    embedding: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    # topic size m -> scores of the corpus's top-n neighbours of the centre of the query's top-m hits
    # (unlabelled corpus statistics; only calibrators with `topic_size` > 0 read them).
    topic_neighbours: dict[int, np.ndarray] | None = None
    # topic size m -> similarities of the lower half of the candidate list to the centre of its top-m
    # (`features.coherence_tail`; only calibrators with topic_feature "coherence" read them).
    coherence_tails: dict[int, np.ndarray] | None = None

    def topic_neighbour_scores(self, topic_size: int) -> np.ndarray | None:
        return None if topic_size <= 0 or self.topic_neighbours is None else self.topic_neighbours.get(topic_size)

    def topic_input(self, config: CalibratorConfig) -> np.ndarray | None:
        """What the config's topic feature reads: neighbour scores (density) or tail similarities."""
        if config.topic_size <= 0:
            return None
        if config.topic_feature == "coherence":
            return None if self.coherence_tails is None else self.coherence_tails.get(config.topic_size)
        return self.topic_neighbour_scores(config.topic_size)


@dataclass(frozen=True)
class CalibratorConfig:
    """Hyper-parameters chosen by cross-validation."""

    family: str = "power"
    feature_set: str = "scores"
    l2: float = 1.0
    projection_rank: int = 4
    n_candidates: int = 100
    topic_size: int = 0  # m of the topic feature (centre of the top-m hits); 0: not used
    topic_feature: str = "density"  # "density" (corpus around the centre) or "coherence" (the list's tail)
    rank_term: bool = False  # add -c(q) log(1 + rank of x in the candidate list) to the logit


def rank_feature(scores: np.ndarray, candidate_scores: np.ndarray) -> np.ndarray:
    """log(1 + number of candidates scoring strictly above each score): non-increasing in the score."""
    ranked = np.sort(np.asarray(candidate_scores, dtype=np.float64).ravel())
    above = ranked.size - np.searchsorted(ranked, np.asarray(scores, dtype=np.float64), side="right")
    return np.log1p(above.astype(np.float64))


class QueryDependentCalibrator:
    """Fitted parameters plus everything needed to compute f(q) at serving time."""

    def __init__(
        self,
        config: CalibratorConfig,
        alpha: np.ndarray,
        beta: np.ndarray,
        exponent: float,
        feature_mean: np.ndarray,
        feature_scale: np.ndarray,
        projection: QueryProjection | None,
        gamma: np.ndarray | None = None,
    ) -> None:
        if config.rank_term != (gamma is not None):
            raise ValueError("gamma (the rank term's weights) is needed exactly when config.rank_term is set")
        self.config = config
        self.gamma = None if gamma is None else np.asarray(gamma, dtype=np.float64)
        self.alpha = np.asarray(alpha, dtype=np.float64)
        self.beta = np.asarray(beta, dtype=np.float64)
        self.exponent = float(exponent)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float64)
        self.feature_scale = np.asarray(feature_scale, dtype=np.float64)
        self.projection = projection

    # ----- features -------------------------------------------------------------------------
    @staticmethod
    def feature_names(config: CalibratorConfig, projection_rank: int) -> list[str]:
        names: list[str] = []
        if config.feature_set in ("scores", "scores+embedding"):
            names += list(CANDIDATE_FEATURES)
        if config.feature_set in ("embedding", "scores+embedding"):
            names += [f"query_pc{i}" for i in range(projection_rank)]
        if config.topic_size > 0:
            names.append(LIST_COHERENCE_FEATURE if config.topic_feature == "coherence" else TOPIC_DENSITY_FEATURE)
        return names

    @staticmethod
    def raw_features(
        config: CalibratorConfig,
        projection: QueryProjection | None,
        query_embedding: np.ndarray | None,
        candidate_scores: np.ndarray,
        topic_neighbour_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        parts: list[np.ndarray] = []
        if config.feature_set in ("scores", "scores+embedding"):
            parts.append(candidate_features(candidate_scores, config.n_candidates))
        if config.feature_set in ("embedding", "scores+embedding"):
            if projection is None or query_embedding is None:
                raise ValueError("this calibrator needs the query embedding")
            parts.append(projection(query_embedding))
        if config.topic_size > 0:
            if topic_neighbour_scores is None:
                coherence = config.topic_feature == "coherence"
                what = "list-coherence tail" if coherence else "topic centre's neighbour scores"
                raise ValueError(f"this calibrator needs the {what}")
            if config.topic_feature == "coherence":
                parts.append(np.array([list_coherence(topic_neighbour_scores)]))
            else:
                parts.append(np.array([topic_density(topic_neighbour_scores, candidate_scores, config.topic_size)]))
        return np.concatenate(parts) if parts else np.zeros(0)

    def _design_row(
        self, query_embedding: np.ndarray | None, candidate_scores: np.ndarray, topic_neighbours: np.ndarray | None
    ) -> np.ndarray:
        raw = self.raw_features(self.config, self.projection, query_embedding, candidate_scores, topic_neighbours)
        return np.r_[1.0, (raw - self.feature_mean) / self.feature_scale]

    # ----- inference ------------------------------------------------------------------------
    def apply(
        self,
        scores: np.ndarray,
        query_embedding: np.ndarray | None,
        candidate_scores: np.ndarray,
        topic_neighbours: np.ndarray | None = None,
    ) -> np.ndarray:
        """Calibrated relevance in [0, 1] of `scores` for one query whose top list is `candidate_scores`.

        `topic_neighbours`: what the topic feature reads (only a calibrator with `topic_size` > 0
        needs it): scores of the corpus's top-n neighbours of the query's topic centre (density), or
        the similarities of the candidate list's lower half to that centre (coherence).
        """
        f = self._design_row(query_embedding, candidate_scores, topic_neighbours)
        slope = np.exp(np.clip(f @ self.alpha, -30.0, 30.0))
        x = np.asarray(scores, dtype=np.float64)
        z = slope * transform(x, self.exponent) + f @ self.beta
        if self.gamma is not None:
            z = z - np.exp(np.clip(f @ self.gamma, -30.0, 30.0)) * rank_feature(x, candidate_scores)
        return expit(z)

    def predict(self, query: LabelledQuery) -> np.ndarray:
        return self.apply(query.scores, query.embedding, query.scores, query.topic_input(self.config))

    # ----- fitting --------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        queries: Sequence[LabelledQuery],
        config: CalibratorConfig,
        unlabelled_embeddings: np.ndarray | None = None,
    ) -> QueryDependentCalibrator:
        """Penalised maximum likelihood; `unlabelled_embeddings` (any queries) feed the projection."""
        projection = None
        if config.feature_set in ("embedding", "scores+embedding"):
            pool = np.vstack([q.embedding for q in queries])
            if unlabelled_embeddings is not None and len(unlabelled_embeddings):
                pool = np.vstack([pool, unlabelled_embeddings])
            projection = QueryProjection.fit(pool, config.projection_rank)
        raw = np.array(
            [
                cls.raw_features(config, projection, q.embedding, q.scores, q.topic_input(config))
                for q in queries
            ],
            dtype=np.float64,
        ).reshape(len(queries), -1)
        mean = raw.mean(axis=0)
        scale = raw.std(axis=0) + 1e-9
        design_q = np.c_[np.ones(len(queries)), (raw - mean) / scale]  # (n_queries, m+1)
        counts = np.array([len(q.scores) for q in queries])
        design = np.repeat(design_q, counts, axis=0)  # one row per pair
        x = np.concatenate([np.asarray(q.scores, dtype=np.float64) for q in queries])
        y = np.concatenate([np.asarray(q.labels, dtype=np.float64) for q in queries])
        h = np.concatenate([rank_feature(q.scores, q.scores) for q in queries]) if config.rank_term else None
        m1 = design.shape[1]
        n_rank = m1 if config.rank_term else 0
        learn_k = config.family == "power"
        k0 = exponent_of(config.family, 1.0)
        penalty = np.r_[0.0, np.full(m1 - 1, config.l2)]
        n = len(y)

        def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
            k = float(np.exp(np.clip(theta[-1], np.log(0.05), np.log(8.0)))) if learn_k else k0
            gamma = theta[2 * m1 : 2 * m1 + n_rank] if n_rank else None
            return theta[:m1], theta[m1 : 2 * m1], gamma, k

        def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            alpha, beta, gamma, k = unpack(theta)
            slope = np.exp(np.clip(design @ alpha, -30.0, 30.0))
            gx = transform(x, k)
            z = slope * gx + design @ beta
            if gamma is not None:
                weight = np.exp(np.clip(design @ gamma, -30.0, 30.0))
                z = z - weight * h
            # log(1 + e^z) - y z, stable
            nll = np.logaddexp(0.0, z) - y * z
            r = (expit(z) - y) / n
            loss = nll.mean() + float(penalty @ (alpha**2 + beta**2))
            g_alpha = design.T @ (r * slope * gx) + 2 * penalty * alpha
            g_beta = design.T @ r + 2 * penalty * beta
            grads = [g_alpha, g_beta]
            if gamma is not None:
                loss += float(penalty @ gamma**2)
                grads.append(-(design.T @ (r * weight * h)) + 2 * penalty * gamma)
            if learn_k:
                grads.append(np.array([float(r @ (slope * transform_dk(x, k))) * k]))
            return float(loss), np.concatenate(grads)

        # Start from global Platt scaling on g(x): slope ~ 1/spread of the scores.
        gx0 = transform(x, k0)
        a0 = 1.0 / max(gx0.std(), 1e-3)
        b0 = -a0 * float(np.quantile(gx0, 1.0 - max(min(y.mean(), 0.99), 0.01)))
        theta0 = np.r_[np.log(a0), np.zeros(m1 - 1), b0, np.zeros(m1 - 1)]
        if n_rank:
            theta0 = np.r_[theta0, np.log(0.1), np.zeros(m1 - 1)]  # start with a weak position prior
        if learn_k:
            theta0 = np.r_[theta0, 0.0]
        res = minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
        alpha, beta, gamma, k = unpack(res.x)
        return cls(config, alpha, beta, k, mean, scale, projection, gamma)

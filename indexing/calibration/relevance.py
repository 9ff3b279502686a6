"""A fitted relevance calibration: the calibrator, its global threshold and the model it belongs to.

Calibration is a property of the embedding model (and domain), so the serialised form names the
model and its dimension; installing it on a collection of another model is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from indexing.calibration.evaluation import default_grid, select_config
from indexing.calibration.features import QueryProjection
from indexing.calibration.metrics import choose_threshold
from indexing.calibration.model import CalibratorConfig, LabelledQuery, QueryDependentCalibrator
from indexing.calibration.schema import SCHEMA_VERSION, CalibrationPayload, ProjectionPayload


class CalibrationError(ValueError):
    """A calibration payload that is invalid, or that does not belong to the target collection."""


class ModelMismatch(CalibrationError):
    """The calibration was fitted for a different embedding model (or dimension)."""


class RelevanceCalibration:
    """`apply` maps raw scores of one query to calibrated relevance in [0, 1]; `threshold` cuts."""

    def __init__(
        self,
        calibrator: QueryDependentCalibrator,
        threshold: float,
        embedding_model: str,
        embedding_dim: int,
        target_precision: float | None = None,
        fitted_on: dict[str, Any] | None = None,
    ) -> None:
        self.calibrator = calibrator
        self.threshold = float(threshold)
        self.embedding_model = embedding_model
        self.embedding_dim = int(embedding_dim)
        self.target_precision = target_precision
        self.fitted_on = fitted_on or {}

    @property
    def n_candidates(self) -> int:
        return self.calibrator.config.n_candidates

    @property
    def topic_size(self) -> int:
        """m of the topic feature (0: serving computes no topic centre)."""
        return self.calibrator.config.topic_size

    @property
    def topic_feature(self) -> str:
        """"density" (one more index search per query) or "coherence" (the candidates' stored vectors)."""
        return self.calibrator.config.topic_feature

    def apply(self, scores: np.ndarray, *query: np.ndarray | None) -> np.ndarray:
        """Relevance of `scores` (any subset of the query's hits); monotone in the score.

        `query`: embedding, candidate scores and topic neighbours, as `QueryDependentCalibrator.apply`.
        """
        return self.calibrator.apply(scores, *query)  # type: ignore[arg-type]

    def check_model(self, model: str, dim: int) -> None:
        if model != self.embedding_model or int(dim) != self.embedding_dim:
            raise ModelMismatch(
                f"calibration: fitted for embedding model {self.embedding_model!r} ({self.embedding_dim}-d), "
                f"not {model!r} ({dim}-d); scores of different models are not comparable — fit one for "
                "this model with `rrs calibrate`"
            )

    # ----- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        c = self.calibrator
        projection = None
        if c.projection is not None:
            projection = {"mean": c.projection.mean.tolist(), "components": c.projection.components.tolist()}
        return {
            "schema_version": SCHEMA_VERSION,
            "embedding_model": self.embedding_model,
            "embedding_dim": self.embedding_dim,
            "family": c.config.family,
            "exponent": c.exponent,
            "feature_set": c.config.feature_set,
            "n_candidates": c.config.n_candidates,
            "topic_size": c.config.topic_size,
            "topic_feature": c.config.topic_feature,
            "feature_names": QueryDependentCalibrator.feature_names(c.config, c.projection.rank if c.projection else 0),
            "feature_mean": c.feature_mean.tolist(),
            "feature_scale": c.feature_scale.tolist(),
            "alpha": c.alpha.tolist(),
            "beta": c.beta.tolist(),
            "rank_weight": None if c.gamma is None else c.gamma.tolist(),
            "projection": projection,
            "threshold": self.threshold,
            "target_precision": self.target_precision,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_payload(cls, payload: CalibrationPayload) -> RelevanceCalibration:
        projection = None
        if payload.projection is not None:
            projection = QueryProjection(np.array(payload.projection.mean), np.array(payload.projection.components))
        config = CalibratorConfig(
            payload.family,
            payload.feature_set,
            l2=float((payload.fitted_on or {}).get("l2", 0.0)),
            projection_rank=projection.rank if projection else 0,
            n_candidates=payload.n_candidates,
            topic_size=payload.topic_size,
            topic_feature=payload.topic_feature,
            rank_term=payload.rank_weight is not None,
        )
        calibrator = QueryDependentCalibrator(
            config,
            np.array(payload.alpha),
            np.array(payload.beta),
            payload.exponent,
            np.array(payload.feature_mean),
            np.array(payload.feature_scale),
            projection,
            None if payload.rank_weight is None else np.array(payload.rank_weight),
        )
        return cls(
            calibrator,
            payload.threshold,
            payload.embedding_model,
            payload.embedding_dim,
            payload.target_precision,
            payload.fitted_on,
        )

    @classmethod
    def from_dict(cls, data: Any) -> RelevanceCalibration:
        """Validate strictly (unknown keys, lengths, finiteness, schema version) and build."""
        try:
            payload = CalibrationPayload.model_validate(data)
        except ValidationError as exc:
            raise CalibrationError(f"calibration: invalid payload ({exc.error_count()} errors): {exc}") from exc
        return cls.from_payload(payload)


def fit_calibration(
    queries: Sequence[LabelledQuery],
    embedding_model: str,
    embedding_dim: int,
    grid: Sequence[CalibratorConfig] | None = None,
    target_precision: float | None = None,
    unlabelled_embeddings: np.ndarray | None = None,
    n_folds: int = 5,
    seed: int = 0,
    fitted_on: dict[str, Any] | None = None,
) -> RelevanceCalibration:
    """Pick hyper-parameters by query-grouped CV, fit on all queries, threshold on out-of-fold scores."""
    selection = select_config(queries, grid or default_grid(), n_folds, seed, unlabelled_embeddings)
    calibrator = QueryDependentCalibrator.fit(queries, selection.config, unlabelled_embeddings)
    threshold = choose_threshold(selection.oof, [q.labels for q in queries], target_precision)
    provenance = {
        "n_queries": len(queries),
        "n_pairs": int(sum(len(q.scores) for q in queries)),
        "n_relevant": int(sum(q.labels.sum() for q in queries)),
        "l2": selection.config.l2,
        **(fitted_on or {}),
    }
    return RelevanceCalibration(calibrator, threshold, embedding_model, embedding_dim, target_precision, provenance)


__all__ = ["CalibrationError", "ModelMismatch", "ProjectionPayload", "RelevanceCalibration", "fit_calibration"]

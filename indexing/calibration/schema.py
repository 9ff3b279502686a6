"""The serialised form of a fitted calibration, validated strictly (PUT payloads, manifests, files).

Lives in `indexing/` so the CLI, the collection manifest and the HTTP layer share one validator.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from indexing.calibration.families import FAMILIES, REFERENCE_SCORE
from indexing.calibration.features import CANDIDATE_FEATURES, LIST_COHERENCE_FEATURE, TOPIC_DENSITY_FEATURE

# 2 added `topic_size` (the topic-density feature); 3 added `topic_feature` (density or list
# coherence); 4 added `rank_weight` (the rank term). Older payloads still load (topic_size 0,
# topic_feature density, no rank term).
SCHEMA_VERSION = 4
FeatureSet = Literal["none", "scores", "embedding", "scores+embedding"]
Family = Literal["linear", "sqrt", "quadratic", "power"]
assert set(Family.__args__) == set(FAMILIES)  # type: ignore[attr-defined]


def _finite(name: str, values: list[float]) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name}: every value must be a finite number")


class ProjectionPayload(BaseModel):
    """Low-rank projection of the query embedding: (x - mean) @ components.T."""

    model_config = ConfigDict(extra="forbid")
    mean: list[float]
    components: list[list[float]] = Field(..., min_length=1, max_length=64)


class CalibrationPayload(BaseModel):
    """A fitted query-dependent calibrator plus its global threshold and the model it belongs to."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1, 2, 3, 4] = Field(SCHEMA_VERSION, description="Format version of this payload.")
    embedding_model: str = Field(..., min_length=1, max_length=512)
    embedding_dim: int = Field(..., ge=1, le=65536)
    family: Family
    exponent: float = Field(..., gt=0.0, le=8.0, description="k of sgn(x)|x|^k (fixed unless family=power).")
    reference_score: float = Field(REFERENCE_SCORE, description="c where g is centred: g(x)=(x^k-c^k)/(k c^(k-1)).")
    feature_set: FeatureSet
    n_candidates: int = Field(..., ge=1, le=10000, description="Top-n candidate scores the features read.")
    topic_size: int = Field(
        0, ge=0, le=10000, description="m of the topic-density feature (centre of the top-m hits); 0: not used."
    )
    topic_feature: Literal["density", "coherence"] = Field(
        "density", description="What the topic-size feature measures: corpus density around the centre of "
        "the top-m hits, or the coherence of the candidate list's lower half with that centre."
    )
    feature_names: list[str]
    feature_mean: list[float]
    feature_scale: list[float]
    alpha: list[float] = Field(..., min_length=1, description="log-slope weights: intercept, then features.")
    beta: list[float] = Field(..., min_length=1, description="offset weights: intercept, then features.")
    rank_weight: list[float] | None = Field(
        None, description="log-weights of the rank term -c(q) log(1 + candidates above x): intercept, then "
        "features; null: no rank term."
    )
    projection: ProjectionPayload | None = None
    threshold: float = Field(..., ge=0.0, le=1.0, description="Default min_relevance.")
    target_precision: float | None = Field(None, gt=0.0, le=1.0, description="None: threshold maximises F1.")
    fitted_on: dict[str, Any] | None = Field(None, description="Provenance and cross-validated metrics.")

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationPayload:
        if self.reference_score != REFERENCE_SCORE:
            raise ValueError(f"reference_score: this version supports only {REFERENCE_SCORE}")
        fixed = {"linear": 1.0, "sqrt": 0.5, "quadratic": 2.0}
        if self.family in fixed and not math.isclose(self.exponent, fixed[self.family]):
            raise ValueError(f"exponent: family {self.family!r} has exponent {fixed[self.family]}")
        for name in ("feature_mean", "feature_scale", "alpha", "beta"):
            _finite(name, getattr(self, name))
        m = len(self.feature_names)
        if len(self.feature_mean) != m or len(self.feature_scale) != m:
            raise ValueError("feature_mean/feature_scale: need one value per feature name")
        if len(self.alpha) != m + 1 or len(self.beta) != m + 1:
            raise ValueError(f"alpha/beta: need {m + 1} values (intercept + {m} features)")
        if self.rank_weight is not None:
            if self.schema_version < 4:
                raise ValueError("rank_weight: needs schema_version 4")
            if len(self.rank_weight) != m + 1:
                raise ValueError(f"rank_weight: need {m + 1} values (intercept + {m} features)")
            _finite("rank_weight", self.rank_weight)
        if any(s <= 0 for s in self.feature_scale):
            raise ValueError("feature_scale: must be positive")
        uses_scores = self.feature_set in ("scores", "scores+embedding")
        uses_embedding = self.feature_set in ("embedding", "scores+embedding")
        expected = list(CANDIDATE_FEATURES) if uses_scores else []
        if uses_embedding:
            if self.projection is None:
                raise ValueError(f"projection: required for feature_set {self.feature_set!r}")
            rank = len(self.projection.components)
            expected += [f"query_pc{i}" for i in range(rank)]
            if len(self.projection.mean) != self.embedding_dim or any(
                len(row) != self.embedding_dim for row in self.projection.components
            ):
                raise ValueError(f"projection: vectors must have embedding_dim={self.embedding_dim} values")
            _finite("projection.mean", self.projection.mean)
            _finite("projection.components", [v for row in self.projection.components for v in row])
        elif self.projection is not None:
            raise ValueError(f"projection: not used by feature_set {self.feature_set!r}")
        if self.topic_size > 0:
            if self.schema_version < 2:
                raise ValueError("topic_size: needs schema_version 2")
            if self.topic_size > self.n_candidates:
                raise ValueError("topic_size: cannot exceed n_candidates")
            if self.topic_feature == "coherence" and self.schema_version < 3:
                raise ValueError("topic_feature: 'coherence' needs schema_version 3")
            expected.append(LIST_COHERENCE_FEATURE if self.topic_feature == "coherence" else TOPIC_DENSITY_FEATURE)
        if self.feature_names != expected:
            raise ValueError(f"feature_names: feature_set {self.feature_set!r} needs {expected}")
        return self

"""Calibration on a collection: fill `relevance` on hits, persist in the manifest, load at open.

The collection calls `calibrate(query_vector, hits)` (its `Calibrator` seam). Features must be
computed from the same list the calibrator was fitted on, the query's unfiltered top-n, whatever
`top_k` or metadata filter the request has, so each calibrated query runs one index search of depth n
(cheap next to embedding the query).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from indexing.calibration.relevance import CalibrationError, RelevanceCalibration
from indexing.collection import Collection, Hit
from indexing.snapshot import read_manifest, update_manifest

MANIFEST_KEY = "calibration"


class CollectionCalibrator:
    """Adapts a `RelevanceCalibration` to one collection's search path."""

    def __init__(self, calibration: RelevanceCalibration, collection: Collection) -> None:
        self.calibration = calibration
        self.collection = collection

    @property
    def threshold(self) -> float:
        """The default `min_relevance` of searches on this collection."""
        return self.calibration.threshold

    def candidate_scores(self, query_vector: np.ndarray, hits: list[Hit]) -> np.ndarray:
        n = self.calibration.n_candidates
        scores, vids = self.collection.index.search(np.asarray(query_vector, np.float32)[None, :], n, None)
        found = scores[0][vids[0] >= 0]
        return found if len(found) else np.array([h.score for h in hits])

    def calibrate(self, query_vector: np.ndarray, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return hits
        relevance = self.calibration.apply(
            np.array([h.score for h in hits]), query_vector, self.candidate_scores(query_vector, hits)
        )
        for hit, r in zip(hits, relevance, strict=True):
            hit.relevance = float(r)
        return hits


def install_calibration(collection: Collection, data: dict[str, Any] | RelevanceCalibration) -> RelevanceCalibration:
    """Validate, check the embedding model, persist in the manifest, then attach (atomic per step)."""
    calibration = data if isinstance(data, RelevanceCalibration) else RelevanceCalibration.from_dict(data)
    calibration.check_model(collection.config.model, collection.config.dim)
    update_manifest(collection.folder, **{MANIFEST_KEY: calibration.to_dict()})
    collection.calibrator = CollectionCalibrator(calibration, collection)
    return calibration


def stored_calibration(collection: Collection) -> dict[str, Any] | None:
    """The serialised calibration in the collection's manifest, if any."""
    manifest = read_manifest(collection.folder) or {}
    return manifest.get(MANIFEST_KEY)


def attach_stored_calibration(collection: Collection) -> None:
    """`CollectionCatalog.on_open` hook: load the manifest's calibration (if any) at startup.

    A stored payload that no longer validates (edited by hand, older schema) raises, which makes
    that one collection unavailable with the reason instead of serving uncalibrated relevance.
    """
    data = stored_calibration(collection)
    if data is None:
        collection.calibrator = None
        return
    try:
        calibration = RelevanceCalibration.from_dict(data)
        calibration.check_model(collection.config.model, collection.config.dim)
    except CalibrationError as exc:
        raise ValueError(f"{collection.folder / 'manifest.json'}: {exc}") from exc
    collection.calibrator = CollectionCalibrator(calibration, collection)


def remove_calibration(collection: Collection) -> None:
    """Drop the stored calibration (the manifest keeps the key, set to null)."""
    update_manifest(collection.folder, **{MANIFEST_KEY: None})
    collection.calibrator = None

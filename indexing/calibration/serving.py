"""Calibration on a collection: fill `relevance` on hits, persist in the manifest, load at open.

The collection calls `calibrate(query_vector, hits, candidates)` (its `Calibrator` seam). Features
must be computed from the same list the calibrator was fitted on, the query's unfiltered top-n,
whatever `top_k` or metadata filter the request has. Without a filter the collection's own search
runs to depth n and passes that list in; with one, the calibrator runs the unfiltered search of
depth n itself (cheap next to embedding the query). A calibrator with the topic-density feature runs one more: the
centre of the top-m of those hits against the same index, at the same depth. One with the
list-coherence feature reads the stored vectors of those hits instead (no second search).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from indexing.calibration.features import coherence_tail, topic_centre
from indexing.calibration.relevance import CalibrationError, RelevanceCalibration
from indexing.collection import Collection, Hit
from indexing.snapshot import read_manifest, update_manifest

MANIFEST_KEY = "calibration"
REMOVED_KEY = "calibration_removed"


class CollectionCalibrator:
    """Adapts a `RelevanceCalibration` to one collection's search path."""

    def __init__(self, calibration: RelevanceCalibration, collection: Collection) -> None:
        self.calibration = calibration
        self.collection = collection

    @property
    def threshold(self) -> float:
        """The default `min_relevance` of searches on this collection."""
        return self.calibration.threshold

    @property
    def n_candidates(self) -> int:
        return self.calibration.n_candidates

    def candidates(
        self, query_vector: np.ndarray, hits: list[Hit], found: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and vector ids of the query's unfiltered top-n (the hits themselves if none found).

        `found`: that search's result when the caller already ran it (`Collection.search` without a filter).
        """
        if found is None:
            n = self.calibration.n_candidates
            near = self.collection.nearest(np.asarray(query_vector, np.float32)[None, :], n)
            found = near.scores[0], near.vids[0]
        scores, vids = found[0][: self.calibration.n_candidates], found[1][: self.calibration.n_candidates]
        ok = vids >= 0
        if ok.any():
            return scores[ok], vids[ok]
        return np.array([h.score for h in hits]), np.array([h.vid for h in hits], dtype=np.int64)

    def calibrate(
        self, query_vector: np.ndarray, hits: list[Hit], candidates: tuple[np.ndarray, np.ndarray] | None = None
    ) -> list[Hit]:
        if not hits:
            return hits
        scores, vids = self.candidates(query_vector, hits, candidates)
        topic = None
        m = self.calibration.topic_size
        if m > 0 and self.calibration.topic_feature == "coherence":
            topic = coherence_tails(self.collection, vids, (m,))[m]
        elif m > 0:
            topic = topic_neighbour_scores(self.collection, vids, (m,), self.calibration.n_candidates)[m]
        relevance = self.calibration.apply(np.array([h.score for h in hits]), query_vector, scores, topic)
        for hit, r in zip(hits, relevance, strict=True):
            hit.relevance = float(r)
        return hits


def topic_neighbour_scores(
    collection: Collection, ranked_vids: np.ndarray, topic_sizes: Sequence[int], depth: int
) -> dict[int, np.ndarray]:
    """For each m: scores of the collection's top-`depth` neighbours of the centre of the first m vids.

    `ranked_vids` is a query's candidate list, best first; vectors come from the store, the search
    from the collection's index (unfiltered), so fitting (`rrs calibrate`) and serving agree.
    """
    largest = max(topic_sizes)
    found, vectors = collection.store.vectors_for(np.asarray(ranked_vids[:largest]).tolist())
    if not len(found):
        raise ValueError("topic density: the query's top hits have no stored vectors")
    by_vid = dict(zip(found.tolist(), collection.index.prepare(vectors), strict=True))
    ranked = [by_vid[v] for v in np.asarray(ranked_vids[:largest]).tolist() if v in by_vid]
    centres = np.stack([topic_centre(np.stack(ranked[:m])) for m in topic_sizes])
    near = collection.nearest(centres, depth)
    return {m: near.scores[i][near.vids[i] >= 0] for i, m in enumerate(topic_sizes)}


def coherence_tails(
    collection: Collection, ranked_vids: np.ndarray, topic_sizes: Sequence[int]
) -> dict[int, np.ndarray]:
    """For each m: similarities of the lower half of the candidate list to the centre of its top-m.

    `ranked_vids` is a query's candidate list, best first; vectors come from the store (normalised
    as the index does), so fitting (`rrs calibrate`) and serving agree.
    """
    ranked = [int(v) for v in np.asarray(ranked_vids).tolist()]
    found, vectors = collection.store.vectors_for(ranked)
    if not len(found):
        raise ValueError("list coherence: the query's candidates have no stored vectors")
    by_vid = dict(zip(found.tolist(), collection.index.prepare(vectors), strict=True))
    ordered = np.stack([by_vid[v] for v in ranked if v in by_vid])
    return {m: coherence_tail(ordered, m) for m in topic_sizes}


def install_calibration(collection: Collection, data: dict[str, Any] | RelevanceCalibration) -> RelevanceCalibration:
    """Validate, check the embedding model, persist in the manifest, then attach (atomic per step)."""
    calibration = data if isinstance(data, RelevanceCalibration) else RelevanceCalibration.from_dict(data)
    calibration.check_model(collection.config.model, collection.config.dim)
    update_manifest(collection.folder, **{MANIFEST_KEY: calibration.to_dict(), REMOVED_KEY: False})
    collection.calibrator = CollectionCalibrator(calibration, collection)
    return calibration


def stored_calibration(collection: Collection) -> dict[str, Any] | None:
    """The serialised calibration in the collection's manifest, if any."""
    manifest = read_manifest(collection.folder) or {}
    return manifest.get(MANIFEST_KEY)


def calibration_removed(collection: Collection) -> bool:
    """Whether the collection's calibration was removed on purpose (DELETE), not just never fitted."""
    manifest = read_manifest(collection.folder) or {}
    return manifest.get(MANIFEST_KEY) is None and bool(manifest.get(REMOVED_KEY))


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
    """Drop the stored calibration; the manifest records the removal, so no default replaces it."""
    update_manifest(collection.folder, **{MANIFEST_KEY: None, REMOVED_KEY: True})
    collection.calibrator = None

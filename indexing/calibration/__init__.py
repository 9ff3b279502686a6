"""Relevance-filter calibration (the "Cosine Adapter"): raw score -> calibrated relevance in [0, 1].

`model` holds the query-dependent calibrator, `relevance` the fitted, serialisable calibration with
its threshold, `evaluation` the query-grouped cross-validation against the baselines, `serving` the
collection seam (manifest persistence and the hit-level hook).
"""

"""Calibrations that ship with rrs, for collections that have no labels of their own.

Calibration belongs to the embedding model and the domain more than to one collection
(docs/CALIBRATION.md), so a fit made where labels exist can be installed where they don't. rrs
ships one for its default embedding model, made by `rrs calibrate --export` on TREC Deep Learning
judgments of MS MARCO passages (the file's `fitted_on` says how). How well it carries over to
another domain, unrefitted, is measured in docs/BENCHMARKS.md; a collection with labels of its own
should fit its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).parent / "shipped"


def shipped_calibrations() -> list[dict[str, Any]]:
    """Every shipped calibration payload (one JSON file each)."""
    return [json.loads(p.read_text()) for p in sorted(SHIPPED_DIR.glob("*.json"))]


def shipped_calibration(model: str, dim: int) -> dict[str, Any] | None:
    """The shipped calibration fitted for exactly this embedding model and dimension, if any."""
    for data in shipped_calibrations():
        if data.get("embedding_model") == model and data.get("embedding_dim") == int(dim):
            return data
    return None

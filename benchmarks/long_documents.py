"""Long documents built from a BEIR corpus of passages, shared by the long-document benchmarks.

g passages drawn at random (fixed seed) are joined into one text, so each long document holds one
passage a query may be about and g-1 others (the "needle" setting of long-context retrieval). A
long document's grade for a query is the best grade of its passages; g = 1 is the corpus as it is.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

DEFAULT_DATASET = Path("../shared/data/msmarco-dl-5k")
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def long_documents(corpus: list[dict], group: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Texts of documents made of `group` random passages each, and the passage ids in each."""
    order = list(range(len(corpus)))
    random.Random(seed).shuffle(order)
    texts, members = [], []
    for start in range(0, len(order), group):
        rows = [corpus[i] for i in order[start : start + group]]
        texts.append(" ".join(f"{r.get('title', '')} {r['text']}".strip() for r in rows))
        members.append([str(r["_id"]) for r in rows])
    return texts, members


def grouped_qrels(qrels: dict[str, dict[str, int]], members: list[list[str]]) -> dict[str, dict[str, int]]:
    """A document's grade is the best grade of the passages it holds (unjudged passages: 0)."""
    owner = {pid: f"d{i}" for i, group in enumerate(members) for pid in group}
    out: dict[str, dict[str, int]] = {}
    for qid, grades in qrels.items():
        docs: dict[str, int] = {}
        for pid, grade in grades.items():
            if pid in owner:
                docs[owner[pid]] = max(docs.get(owner[pid], 0), grade)
        out[qid] = docs
    return out


def paired_interval(deltas: np.ndarray, n_resamples: int = 2000, level: float = 0.9, seed: int = 0) -> list[float]:
    """Percentile bootstrap over queries of the mean per-query difference."""
    rng = np.random.default_rng(seed)
    means = rng.choice(deltas, size=(n_resamples, len(deltas)), replace=True).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def base_parser(doc: str, groups: str, name: str) -> argparse.ArgumentParser:
    """The options every long-document benchmark takes; results and plot are named after it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--groups", default=groups, help="Passages joined into one document, per layout.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/{name}.json"))
    parser.add_argument("--plot", type=Path, default=Path(f"docs/img/{name}.png"))
    return parser

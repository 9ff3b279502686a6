"""Calibration experiment: dense top-100 candidates of a BEIR dataset, query-grouped CV report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexing.calibration.dataset import labelled_queries, read_qrels
from indexing.calibration.evaluation import METHODS, cross_validate
from indexing.calibration.model import LabelledQuery
from indexing.calibration.report import markdown_table, write_report

DEFAULT_DATASET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "msmarco-dl-5k"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CACHE_DIR = Path(__file__).resolve().parents[1] / "var" / "cache"


@dataclass
class EmbeddedDataset:
    """Corpus and query embeddings (L2-normalised) plus graded qrels of a BEIR directory."""

    doc_ids: list[str]
    doc_emb: np.ndarray
    query_ids: list[str]
    query_emb: np.ndarray
    qrels: dict[str, dict[str, int]]


def _read_jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def embed_dataset(dataset: Path, model_name: str = DEFAULT_MODEL, cache_dir: Path = CACHE_DIR) -> EmbeddedDataset:
    """Embed corpus and queries once; reuse the cached arrays (keyed by model and file contents)."""
    corpus = _read_jsonl(dataset / "corpus.jsonl")
    queries = _read_jsonl(dataset / "queries.jsonl")
    qrels = read_qrels(dataset / "qrels" / "test.tsv")
    digest = hashlib.sha1()
    digest.update(model_name.encode())
    for name in ("corpus.jsonl", "queries.jsonl"):
        digest.update((dataset / name).read_bytes())
    cache = cache_dir / f"embeddings-{digest.hexdigest()[:16]}.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return EmbeddedDataset(
            list(data["doc_ids"]), data["doc_emb"], list(data["query_ids"]), data["query_emb"], qrels
        )
    from sentence_transformers import SentenceTransformer

    from models.resolve import resolve_model

    model = SentenceTransformer(resolve_model(model_name).path, device="cpu")
    texts = [(d.get("title", "") + " " + d["text"]).strip() for d in corpus]
    doc_emb = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    query_emb = model.encode([q["text"] for q in queries], batch_size=32, normalize_embeddings=True)
    doc_ids = [str(d["_id"]) for d in corpus]
    query_ids = [str(q["_id"]) for q in queries]
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        doc_ids=np.array(doc_ids),
        doc_emb=doc_emb.astype(np.float32),
        query_ids=np.array(query_ids),
        query_emb=query_emb.astype(np.float32),
    )
    return EmbeddedDataset(doc_ids, doc_emb.astype(np.float32), query_ids, query_emb.astype(np.float32), qrels)


def dense_candidates(
    data: EmbeddedDataset, depth: int = 100, min_grade: int = 2
) -> tuple[list[LabelledQuery], np.ndarray]:
    """Exact-cosine top-`depth` candidates of every judged query, plus unjudged query embeddings."""
    scores = data.query_emb @ data.doc_emb.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    ids = [[data.doc_ids[j] for j in row] for row in top]
    cand_scores = [scores[i, row] for i, row in enumerate(top)]
    queries = labelled_queries(data.query_ids, data.query_emb, ids, cand_scores, data.qrels, min_grade)
    labelled = {q.query_id for q in queries}
    unlabelled = np.array([e for qid, e in zip(data.query_ids, data.query_emb, strict=True) if qid not in labelled])
    return queries, unlabelled.reshape(-1, data.query_emb.shape[1])


def main() -> None:
    import argparse
    import platform
    import time

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-precision", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--prefix", default="calibration_msmarco")
    args = parser.parse_args()
    data = embed_dataset(args.dataset.resolve())
    queries, unlabelled = dense_candidates(data)
    started = time.time()
    reports = [
        cross_validate(queries, m, args.folds, args.seed, args.target_precision, unlabelled_embeddings=unlabelled)
        for m in METHODS
    ]
    table = markdown_table(reports)
    print(table)
    for r in reports:
        if r.chosen and any(r.chosen):
            print(f"{r.name}: chosen per outer fold: {r.chosen}")
    context = {
        "dataset": str(args.dataset),
        "model": DEFAULT_MODEL,
        "queries": len(queries),
        "folds": args.folds,
        "seed": args.seed,
        "target_precision": args.target_precision,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - started, 1),
    }
    paths = write_report(reports, [q.labels for q in queries], args.out, args.prefix, context)
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

"""Retrieval evaluation on a BEIR-layout dataset: dense retrieval from a collection vs BM25.

Metrics come from `ir-measures` (pytrec_eval underneath, i.e. the trec_eval definitions): graded
nDCG@10 (ideal ranking from every judged passage), and recall@100 and MRR@10 with grade >= 2 as
relevant (the TREC DL convention). `evaluate` returns an `EvalReport` whose systems hold the run
dicts, so other stages (rerankers, calibration) can reuse the dense candidates, their scores and
the query embeddings: see `DenseRetrieval`.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
from ir_measures import RR, R, nDCG

from indexing.batch import DocumentEncoder, index_file, read_documents
from indexing.collection import Collection

MEASURES = {"nDCG@10": nDCG @ 10, "R@100": R(rel=2) @ 100, "MRR@10": RR(rel=2) @ 10}
Run = dict[str, dict[str, float]]  # query id -> doc id -> score
Qrels = dict[str, dict[str, int]]


@dataclass
class BeirDataset:
    root: Path
    queries: dict[str, str]  # only the judged ones
    qrels: Qrels

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"


def load_beir(root: Path, split: str = "test") -> BeirDataset:
    """Queries with judgments and the graded qrels of a BEIR folder (qrels TSV with or without header)."""
    root = Path(root)
    qrels: Qrels = {}
    with open(root / "qrels" / f"{split}.tsv", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or not row[2].lstrip("-").isdigit():
                continue  # header or blank line
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {}
    with open(root / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                q = json.loads(line)
                if str(q["_id"]) in qrels:
                    queries[str(q["_id"])] = q["text"]
    return BeirDataset(root, queries, {q: qrels[q] for q in queries})


def score_run(run: Run, qrels: Qrels) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Aggregate and per-query metrics (queries the run misses count as zero)."""
    full = {q: run.get(q, {}) for q in qrels}
    names = {str(m): name for name, m in MEASURES.items()}
    aggregate = {names[str(m)]: float(v) for m, v in ir_measures.calc_aggregate(MEASURES.values(), qrels, full).items()}
    per_query: dict[str, dict[str, float]] = {}
    for metric in ir_measures.iter_calc(MEASURES.values(), qrels, full):
        per_query.setdefault(metric.query_id, {})[names[str(metric.measure)]] = float(metric.value)
    return aggregate, per_query


@dataclass
class SystemResult:
    name: str
    run: Run
    metrics: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # stage -> per-query milliseconds

    def latency_summary(self) -> dict[str, dict[str, float]]:
        return {
            stage: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "mean": float(np.mean(v))}
            for stage, v in self.latency_ms.items()
            if v
        }


@dataclass
class DenseRetrieval:
    """What the dense stage produced: reusable by rerankers and the calibration fit."""

    candidates: dict[str, list[tuple[str, float]]]  # query id -> [(doc id, cosine)] best first
    query_vectors: dict[str, np.ndarray]
    texts: dict[str, str]  # doc id -> text of every candidate
    system: SystemResult


def dense_retrieve(
    collection: Collection, encoder: DocumentEncoder, queries: dict[str, str], k: int = 100
) -> DenseRetrieval:
    """One query at a time (as a client would send them), timing embedding and search apart."""
    candidates: dict[str, list[tuple[str, float]]] = {}
    vectors: dict[str, np.ndarray] = {}
    texts: dict[str, str] = {}
    embed_ms: list[float] = []
    search_ms: list[float] = []
    encoder.encode(["warm-up"], input_type="query")
    for qid, text in queries.items():
        t0 = time.perf_counter()
        vec = encoder.encode([text], input_type="query")
        t1 = time.perf_counter()
        hits = collection.search(vec, k)[0].hits
        t2 = time.perf_counter()
        embed_ms.append((t1 - t0) * 1e3)
        search_ms.append((t2 - t1) * 1e3)
        vectors[qid] = vec[0]
        candidates[qid] = [(h.id, h.score) for h in hits]
        texts.update((h.id, h.text) for h in hits)
    run = {q: dict(c) for q, c in candidates.items()}
    total = [a + b for a, b in zip(embed_ms, search_ms, strict=True)]
    system = SystemResult("dense", run, latency_ms={"embed": embed_ms, "search": search_ms, "total": total})
    return DenseRetrieval(candidates, vectors, texts, system)


def score_collection(
    report: EvalReport,
    collection: Collection,
    encoder: DocumentEncoder,
    queries: dict[str, str],
    qrels: Qrels,
    k: int = 100,
    modes: Sequence[str] = (),
    lexical_weight: float = 1.0,
) -> None:
    """Dense retrieval (kept as `report.dense` for rerankers and calibration) and the other modes, scored."""
    report.dense = dense_retrieve(collection, encoder, queries, k)
    report.add(report.dense.system, qrels)
    for mode in modes:
        if mode != "dense":
            report.add(mode_retrieve(collection, report.dense, queries, mode, k, lexical_weight), qrels)


def mode_retrieve(
    collection: Collection, dense: DenseRetrieval, queries: dict[str, str], mode: str, k: int = 100,
    lexical_weight: float = 1.0, name: str | None = None,
) -> SystemResult:
    """The collection's own lexical (FTS5 BM25) or hybrid (RRF) search, reusing the dense run's query vectors."""
    run: Run = {}
    latency: list[float] = []
    for qid, text in queries.items():
        t0 = time.perf_counter()
        vector = None if mode == "lexical" else dense.query_vectors[qid][None, :]
        hits = collection.search(vector, k, text=text, mode=mode, lexical_weight=lexical_weight)[0].hits
        latency.append((time.perf_counter() - t0) * 1e3)
        order = [h.fused_score if mode == "hybrid" else h.score for h in hits]
        run[qid] = {h.id: float(s) for h, s in zip(hits, order, strict=True)}
    # Hybrid embeds the query as dense does: its total counts that embedding, lexical's does not.
    embed = dense.system.latency_ms["embed"] if mode == "hybrid" else [0.0] * len(latency)
    total = [a + b for a, b in zip(embed, latency, strict=True)]
    return SystemResult(name or mode, run, latency_ms={"search": latency, "total": total})


def bm25_retrieve(corpus_path: Path, queries: dict[str, str], k: int = 100) -> SystemResult:
    """BM25 (bm25s, English stopwords, no stemming) over the same title+text the dense side embeds."""
    import bm25s

    ids: list[str] = []
    texts: list[str] = []
    for chunk in read_documents(corpus_path):
        ids += [d.id for d in chunk]
        texts += [d.text for d in chunk]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    qids = list(queries)
    latency: list[float] = []
    run: Run = {}
    for qid in qids:
        t0 = time.perf_counter()
        tokens = bm25s.tokenize([queries[qid]], stopwords="en", show_progress=False)
        docs, scores = retriever.retrieve(tokens, k=min(k, len(ids)), show_progress=False)
        latency.append((time.perf_counter() - t0) * 1e3)
        run[qid] = {ids[int(d)]: float(s) for d, s in zip(docs[0], scores[0], strict=True)}
    return SystemResult("bm25", run, latency_ms={"total": latency})


def default_collection_name(
    dataset: Path, model: str, chunk_tokens: int | None = None, chunk_overlap: int | None = None,
    lexical_stemmer: str | None = None,
) -> str:
    """Per dataset and model; explicit chunk and stemmer settings get their own collection (they are
    fixed at creation)."""
    raw = f"eval-{Path(dataset).resolve().name}-{model.split('/')[-1]}"
    suffix = "" if chunk_tokens is None else f"-ct{chunk_tokens}"
    suffix += "" if chunk_overlap is None else f"-co{chunk_overlap}"
    suffix += "" if lexical_stemmer is None else f"-{lexical_stemmer}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[: 64 - len(suffix)] + suffix


@dataclass
class EvalReport:
    dataset: str
    collection: str
    model: str
    queries: int
    systems: dict[str, SystemResult] = field(default_factory=dict)
    index_seconds: float = 0.0
    dense: DenseRetrieval | None = None

    def add(self, system: SystemResult, qrels: Qrels) -> SystemResult:
        system.metrics, system.per_query = score_run(system.run, qrels)
        self.systems[system.name] = system
        return system

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "collection": self.collection,
            "model": self.model,
            "queries": self.queries,
            "index_seconds": self.index_seconds,
            "systems": {
                n: {"metrics": s.metrics, "latency_ms": s.latency_summary(), "per_query": s.per_query}
                for n, s in self.systems.items()
            },
        }


def evaluate(
    dataset_dir: Path,
    data_dir: Path,
    encoder: DocumentEncoder,
    *,
    model_name: str | None = None,
    collection: str | None = None,
    index_kind: str = "flat",
    k: int = 100,
    bm25: bool = True,
    progress: bool = True,
    extra_stages: list[Callable[[EvalReport, BeirDataset], SystemResult]] | None = None,
    chunk_tokens: int | None = None,
    chunk_overlap: int | None = None,
    modes: Sequence[str] = (),
    lexical_weight: float = 1.0,
    lexical_stemmer: str | None = None,
) -> EvalReport:
    """Index the corpus (or reuse the collection: the job resumes/skips), retrieve, score.

    `modes`: the collection's other search modes to score beside dense ("lexical", "hybrid").
    `extra_stages` run after the dense and BM25 systems (e.g. a reranker over `report.dense`)
    and return a SystemResult that is scored alongside.
    """
    data = load_beir(dataset_dir)
    model = model_name or encoder.name
    name = collection or default_collection_name(dataset_dir, model, chunk_tokens, chunk_overlap, lexical_stemmer)
    job = index_file(
        data_dir, name, data.corpus_path, encoder, index_kind=index_kind, model_name=model, progress=progress,
        chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, lexical_stemmer=lexical_stemmer,
    )
    report = EvalReport(str(dataset_dir), name, model, len(data.queries), index_seconds=job.seconds)
    coll = Collection.open(Path(data_dir) / "collections" / name)
    try:
        score_collection(report, coll, encoder, data.queries, data.qrels, k, modes, lexical_weight)
    finally:
        coll.close(snapshot=False)
    if bm25:
        report.add(bm25_retrieve(data.corpus_path, data.queries, k), data.qrels)
    for stage in extra_stages or []:
        report.add(stage(report, data), data.qrels)
    return report

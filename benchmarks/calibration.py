"""Calibration experiment: dense top-100 candidates of a BEIR dataset, query-grouped CV report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexing.calibration.dataset import labelled_queries, read_qrels
from indexing.calibration.evaluation import (
    METHODS,
    MethodReport,
    coherence_grid,
    cross_validate,
    default_grid,
    topic_density_grid,
)
from indexing.calibration.features import TOPIC_SIZES, candidate_features, coherence_tail, list_coherence, topic_centre
from indexing.calibration.metrics import choose_threshold, filter_metrics
from indexing.calibration.model import CalibratorConfig, LabelledQuery, rank_feature
from indexing.calibration.report import LABELS, gains, gains_table, markdown_table, write_report

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


def embed_dataset(
    dataset: Path, model_name: str = DEFAULT_MODEL, cache_dir: Path = CACHE_DIR, corpus_file: str = "corpus.jsonl"
) -> EmbeddedDataset:
    """Embed corpus and queries once; reuse the cached arrays (keyed by model and file contents).

    Passage ids are BEIR's `_id`, else `id` (the demo corpus's field).
    """
    corpus = _read_jsonl(dataset / corpus_file)
    queries = _read_jsonl(dataset / "queries.jsonl")
    qrels = read_qrels(dataset / "qrels" / "test.tsv")
    digest = hashlib.sha1()
    digest.update(model_name.encode())
    for name in (corpus_file, "queries.jsonl"):
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
    doc_ids = [str(d.get("_id", d.get("id"))) for d in corpus]
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
    data: EmbeddedDataset, depth: int = 100, min_grade: int = 2, keep_empty: bool = False
) -> tuple[list[LabelledQuery], np.ndarray]:
    """Exact-cosine top-`depth` candidates of every judged query, plus unjudged query embeddings.

    Each query also gets its topic neighbours for every m in TOPIC_SIZES: the top-`depth` corpus
    scores of the centre of its top-m candidates (what serving gets from one more index search).
    `keep_empty`: as `labelled_queries` (a corpus judged in full).
    """
    scores = data.query_emb @ data.doc_emb.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    ids = [[data.doc_ids[j] for j in row] for row in top]
    cand_scores = [scores[i, row] for i, row in enumerate(top)]
    queries = labelled_queries(data.query_ids, data.query_emb, ids, cand_scores, data.qrels, min_grade, keep_empty)
    row_of = {qid: i for i, qid in enumerate(data.query_ids)}
    for q in queries:
        ranked = data.doc_emb[top[row_of[q.query_id]]]
        centres = np.stack([topic_centre(ranked[:m]) for m in TOPIC_SIZES])
        neighbours = -np.sort(-(centres @ data.doc_emb.T), axis=1)[:, :depth]
        q.topic_neighbours = dict(zip(TOPIC_SIZES, neighbours, strict=True))
        q.coherence_tails = {m: coherence_tail(ranked, m) for m in TOPIC_SIZES}
    labelled = {q.query_id for q in queries}
    unlabelled = np.array([e for qid, e in zip(data.query_ids, data.query_emb, strict=True) if qid not in labelled])
    return queries, unlabelled.reshape(-1, data.query_emb.shape[1])


def _adapter_report(
    name: str, grid: list[CalibratorConfig], queries: list[LabelledQuery], folds: int, seed: int,
    target: float | None, unlabelled: np.ndarray,
) -> MethodReport:
    report = cross_validate(queries, "adapter", folds, seed, target, grid, unlabelled)
    report.name = name
    return report


# The calibrator variants the report compares, by the grid their inner CV chooses from. "adapter" is
# what `rrs calibrate` fits by default; the others are earlier defaults and the alternatives tried.
VARIANTS: dict[str, Callable[[], list[CalibratorConfig]]] = {
    "adapter": coherence_grid,
    "adapter_session2": lambda: coherence_grid(rank_term=False, with_shape=True),
    "adapter_scores_only": lambda: default_grid(rank_term=False),
    "adapter_embedding_only": lambda: [CalibratorConfig("power", "embedding", l2) for l2 in (0.003, 0.03, 0.3)],
    "adapter_topic_density": topic_density_grid,
}


def variant_report(
    name: str, queries: list[LabelledQuery], folds: int, seed: int, target: float | None, unlabelled: np.ndarray
) -> MethodReport:
    """Outer CV of one calibrator variant (VARIANTS) or baseline (METHODS) on the same folds."""
    if name in VARIANTS:
        return _adapter_report(name, VARIANTS[name](), queries, folds, seed, target, unlabelled)
    return cross_validate(queries, name, folds, seed, target, None, unlabelled)


def oracle_base_rate_report(queries: list[LabelledQuery], folds: int, seed: int, rank: bool = False) -> MethodReport:
    """Diagnostic ceiling, NOT a method: logistic on (x, logit of the query's TRUE share relevant, product).

    It reads each held-out query's labels, so it shows how much a perfect per-query prior would give.
    `rank`: also the rank term's log(1 + rank) and its product with the prior.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    def design(q: LabelledQuery) -> np.ndarray:
        prior = np.full(len(q.scores), logit_share(q))
        columns = [q.scores, prior, q.scores * prior]
        if rank:
            h = rank_feature(q.scores, q.scores)
            columns += [h, h * prior]
        return np.column_stack(columns)

    preds: list[np.ndarray] = [np.empty(0)] * len(queries)
    thresholds = [0.0] * len(queries)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(np.arange(len(queries))):
        x = np.vstack([design(queries[i]) for i in train])
        y = np.concatenate([queries[i].labels for i in train])
        model = LogisticRegression(max_iter=5000).fit(x, y)
        fitted = [model.predict_proba(design(queries[i]))[:, 1] for i in train]
        t = choose_threshold(fitted, [queries[i].labels for i in train])
        for i in test:
            preds[i], thresholds[i] = model.predict_proba(design(queries[i]))[:, 1], t
    metrics = filter_metrics(preds, [q.labels for q in queries], thresholds)
    return MethodReport("oracle_base_rate_rank" if rank else "oracle_base_rate", True, preds, thresholds, metrics)


def logit_share(q: LabelledQuery) -> float:
    """Logit of the query's share of relevant candidates (smoothed): the per-query prior."""
    share = (q.labels.sum() + 0.5) / (len(q.labels) + 1.0)
    return float(np.log(share / (1 - share)))


def prior_r2(x: np.ndarray, queries: list[LabelledQuery], folds: int, seed: int) -> float:
    """Cross-validated ridge R^2 of the queries' logit share relevant from the columns of `x`."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    x = np.asarray(x, dtype=np.float64).reshape(len(queries), -1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    target = np.array([logit_share(q) for q in queries])
    cv = KFold(folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 13)), x, target, cv=cv)
    return float(1 - np.mean((pred - target) ** 2) / target.var())


def base_rate_predictability(queries: list[LabelledQuery], folds: int, seed: int, shape: bool = True,
                             coherence_m: int | None = None) -> float:
    """Cross-validated R^2 of the logit share relevant predicted from label-free list features.

    `shape`: the six score-shape features; `coherence_m`: list coherence at that m (needs the
    queries' `coherence_tails`).
    """
    columns = []
    if shape:
        columns.append(np.array([candidate_features(q.scores, len(q.scores)) for q in queries]))
    if coherence_m is not None:
        columns.append(np.array([[list_coherence(q.coherence_tails[coherence_m])] for q in queries]))
    return prior_r2(np.hstack(columns), queries, folds, seed)


LABELS.setdefault("adapter_session2", "calibrator, shape + list coherence, no rank term (session-2 default)")
LABELS.setdefault("adapter_embedding_only", "calibrator, query embedding only (paper's choice)")
LABELS.setdefault("adapter_scores_only", "calibrator, score shape, no rank term (session-1 default)")
LABELS.setdefault("adapter_topic_density", "calibrator, grid + topic density (m by inner CV)")
LABELS.setdefault("oracle_base_rate", "diagnostic: oracle per-query base rate (reads test labels)")
LABELS.setdefault("oracle_base_rate_rank", "diagnostic: oracle per-query base rate + rank term (reads test labels)")


def main() -> None:
    import argparse
    import platform
    import time

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-seeds", default="1,2", help="More CV splits for the spread (comma list; '' none).")
    parser.add_argument("--target-precision", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--prefix", default="calibration_msmarco")
    args = parser.parse_args()
    data = embed_dataset(args.dataset.resolve())
    queries, unlabelled = dense_candidates(data)
    started = time.time()
    names = [*METHODS[:-1], *VARIANTS]  # the baselines, then every calibrator variant
    reports = []
    for name in tqdm(names, desc="methods", unit="method"):
        reports.append(variant_report(name, queries, args.folds, args.seed, args.target_precision, unlabelled))
    diagnostics = [oracle_base_rate_report(queries, args.folds, args.seed, rank) for rank in (False, True)]
    table = markdown_table([*reports, *diagnostics])
    print(table)
    gain_rows = gains(reports, [q.labels for q in queries])
    print(gains_table(gain_rows))
    for r in reports:
        if r.chosen and any(r.chosen):
            print(f"{r.name}: chosen per outer fold: {r.chosen}")
    r2 = base_rate_predictability(queries, args.folds, args.seed)
    print(f"cross-validated R^2 of the per-query logit share relevant from the list features: {r2:.3f}")
    for m in TOPIC_SIZES:
        alone = base_rate_predictability(queries, args.folds, args.seed, shape=False, coherence_m=m)
        both = base_rate_predictability(queries, args.folds, args.seed, coherence_m=m)
        print(f"  list coherence m={m}: alone {alone:.3f}, with the score shape {both:.3f}")
    spread: dict[str, list[tuple[float, float, float | None]]] = {}
    seeds = [args.seed] + [int(v) for v in args.extra_seeds.split(",") if v.strip()]
    spread_names = ["cosine_cutoff", "platt", "adapter", "adapter_session2", "adapter_scores_only"]
    for seed in seeds:
        for name in tqdm(spread_names, desc=f"CV split {seed}", unit="method"):
            if seed == args.seed:
                r = next(r for r in reports if r.name == name)
            else:
                r = variant_report(name, queries, args.folds, seed, args.target_precision, unlabelled)
            spread.setdefault(name, []).append((r.metrics.precision_at_recall_80, r.metrics.roc_auc, r.metrics.ece))
    for m, rows in spread.items():
        arr = np.array([[a, b] for a, b, _ in rows])
        print(
            f"{m}: over {len(rows)} CV splits P@R0.8 {arr[:, 0].mean():.3f} ± {arr[:, 0].std():.3f}, "
            f"AUC {arr[:, 1].mean():.3f} ± {arr[:, 1].std():.3f}, per split "
            f"{[tuple(round(v or 0, 3) for v in x) for x in rows]}"
        )
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
        "base_rate_r2": r2,
        "spread_over_cv_splits": spread,
        "diagnostics": {d.name: d.metrics.as_dict() for d in diagnostics},
    }
    paths = write_report(reports, [q.labels for q in queries], args.out, args.prefix, context, gain_rows)
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

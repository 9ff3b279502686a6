"""The calibration figures behind docs/BENCHMARKS.md's analysis, beyond the main table.

`python -m benchmarks.calibration_variants [--llm]` prints, over CV splits 0/1/2 (5 folds by query,
inner CV as in `benchmarks.calibration`):
1. precision at recall 0.1..0.9 of the default calibrator, the session-2 default and the cosine
   cutoff, and held-out precision/recall/Null% at a 0.8 precision target;
2. P@R0.8 of the variants tried and not shipped;
3. cross-validated R^2 of the per-query logit share relevant from other label-free list features;
4. with --llm: the shipped LLM's pointwise judgement of each query's head as such a feature (slow);
5. lexical prior features: how much of the query's wording the candidate list still contains;
6. where the default goes wrong at recall 0.8: per query, what it keeps and the grades of its top-n.
`--sections 5,6` runs only the listed sections.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold
from tqdm import tqdm

from benchmarks.calibration import DEFAULT_DATASET, dense_candidates, embed_dataset, logit_share, prior_r2
from indexing.calibration.evaluation import (
    _folds,
    _log_loss,
    coherence_grid,
    cross_validate,
    out_of_fold,
)
from indexing.calibration.features import TOPIC_SIZES, coherence_tail, list_coherence, topic_centre
from indexing.calibration.metrics import precision_recall_curve
from indexing.calibration.model import CalibratorConfig, LabelledQuery, QueryDependentCalibrator, rank_feature

SEEDS = (0, 1, 2)
Predictions = list[np.ndarray]


def precision_at(preds: Predictions, queries: Sequence[LabelledQuery], recall: float) -> float:
    prec, rec, _ = precision_recall_curve(np.concatenate(preds), np.concatenate([q.labels for q in queries]))
    return float(prec[rec >= recall].max())


# ----- 1. the trade-off -------------------------------------------------------------------------
def recall_levels(queries: list[LabelledQuery]) -> None:
    levels = (0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9)
    models = {"default": coherence_grid(), "session-2 default": coherence_grid(rank_term=False, with_shape=True)}
    print("| model | split | " + " | ".join(f"P@R{r}" for r in levels) + " | at target 0.8: P / R / Null% |")
    print("|---|---|" + "---|" * (len(levels) + 1))
    for seed in SEEDS:
        cutoff = cross_validate(queries, "cosine_cutoff", 5, seed)
        cells = " | ".join(f"{precision_at(cutoff.predictions, queries, r):.3f}" for r in levels)
        print(f"| global cosine cutoff | {seed} | {cells} | – |")
        for name, grid in models.items():
            r = cross_validate(queries, "adapter", 5, seed, 0.8, grid)
            m = r.metrics
            cells = " | ".join(f"{precision_at(r.predictions, queries, lv):.3f}" for lv in levels)
            print(f"| {name} | {seed} | {cells} | {m.precision:.3f} / {m.recall:.3f} / {100 * m.null_fraction:.1f} |")


# ----- 2. variants ------------------------------------------------------------------------------
def averaged(queries: list[LabelledQuery], grid: list[CalibratorConfig], top: int | None, seed: int) -> Predictions:
    """Outer CV of the mean prediction of the `top` configurations by inner log loss (None: all)."""
    preds: Predictions = [np.empty(0)] * len(queries)
    for train_idx, test_idx in _folds(len(queries), 5, seed):
        train = [queries[i] for i in train_idx]
        ranked = sorted(
            grid,
            key=lambda c: _log_loss(out_of_fold(train, lambda t, c=c: QueryDependentCalibrator.fit(t, c).predict,
                                                5, seed), train),
        )
        models = [QueryDependentCalibrator.fit(train, c) for c in ranked[:top]]
        for i in test_idx:
            preds[i] = np.mean([model.predict(queries[i]) for model in models], axis=0)
    return preds


def _ridge(x: np.ndarray, t: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    mu, sd = x.mean(0), x.std(0) + 1e-9
    model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit((x - mu) / sd, t)
    return lambda z: model.predict((z - mu) / sd)


def two_stage(queries: list[LabelledQuery], sizes: Sequence[int], seed: int) -> Predictions:
    """Query-level ridge predicts the prior from coherence (m by inner CV among `sizes`), then a pair-level
    logistic on (x, prior, x*prior, log rank, log rank*prior); the training priors are out of fold."""
    t = np.array([logit_share(q) for q in queries])
    coh = {m: np.array([[list_coherence(q.coherence_tails[m])] for q in queries]) for m in sizes}
    preds: Predictions = [np.empty(0)] * len(queries)
    for train, test in KFold(5, shuffle=True, random_state=seed).split(np.arange(len(queries))):
        best = None
        for m in sizes:
            oof = np.zeros(len(train))
            for a, b in KFold(5, shuffle=True, random_state=seed).split(train):
                oof[b] = _ridge(coh[m][train[a]], t[train[a]])(coh[m][train[b]])
            err = float(np.mean((oof - t[train]) ** 2))
            if best is None or err < best[0]:
                best = (err, m, oof)
        _, m, oof = best
        prior = np.zeros(len(queries))
        prior[train] = oof
        prior[test] = _ridge(coh[m][train], t[train])(coh[m][test])

        def design(i: int, prior: np.ndarray = prior) -> np.ndarray:
            q, p, h = queries[i], prior[i], rank_feature(queries[i].scores, queries[i].scores)
            return np.c_[q.scores, np.full(len(q.scores), p), q.scores * p, h, h * p]

        model = LogisticRegression(max_iter=5000, C=10.0).fit(
            np.vstack([design(i) for i in train]), np.concatenate([queries[i].labels for i in train])
        )
        for i in test:
            preds[i] = model.predict_proba(design(i))[:, 1]
    return preds


def soft_count(queries: list[LabelledQuery], ranked: dict[str, np.ndarray], m: int, seed: int) -> Predictions:
    """Prior = mean of a pair-level logistic on each candidate's similarity to the head centre (out of
    fold for training queries), then a pair-level logistic on (x, prior, x*prior); no rank term."""
    sim = {q.query_id: ranked[q.query_id] @ topic_centre(ranked[q.query_id][:m]) for q in queries}

    def prior_model(idx: np.ndarray) -> Callable[[int], float]:
        lr = LogisticRegression(max_iter=5000).fit(
            np.concatenate([sim[queries[i].query_id] for i in idx])[:, None],
            np.concatenate([queries[i].labels for i in idx]),
        )

        def prior(i: int) -> float:
            p = float(np.clip(lr.predict_proba(sim[queries[i].query_id][:, None])[:, 1].mean(), 0.005, 0.995))
            return float(np.log(p / (1 - p)))

        return prior

    preds: Predictions = [np.empty(0)] * len(queries)
    for train, test in KFold(5, shuffle=True, random_state=seed).split(np.arange(len(queries))):
        prior = np.zeros(len(queries))
        for a, b in KFold(5, shuffle=True, random_state=seed).split(train):
            f = prior_model(train[a])
            for j in b:
                prior[train[j]] = f(train[j])
        f = prior_model(train)
        for i in test:
            prior[i] = f(i)

        def design(i: int, prior: np.ndarray = prior) -> np.ndarray:
            q = queries[i]
            return np.c_[q.scores, np.full(len(q.scores), prior[i]), q.scores * prior[i]]

        model = LogisticRegression(max_iter=5000, C=10.0).fit(
            np.vstack([design(i) for i in train]), np.concatenate([queries[i].labels for i in train])
        )
        for i in test:
            preds[i] = model.predict_proba(design(i))[:, 1]
    return preds


def variants(queries: list[LabelledQuery], ranked: dict[str, np.ndarray]) -> None:
    shape_heavy = [
        CalibratorConfig(f, "scores", l2, topic_size=m, topic_feature="coherence", rank_term=True)
        for f, l2, m in itertools.product(("linear", "power"), (1.0, 3.0, 10.0), TOPIC_SIZES)
    ]
    coherence_only = [c for c in coherence_grid() if c.topic_size]
    runs: dict[str, Callable[[int], Predictions]] = {
        "default (for reference)": lambda s: cross_validate(
            queries, "adapter", 5, s, None, coherence_grid()).predictions,
        "L2 grid extended down to 0.0003": lambda s: cross_validate(
            queries, "adapter", 5, s, None, coherence_grid(l2_grid=(0.0003, 0.003, 0.03, 0.3))).predictions,
        "shape + coherence + rank term (the session-2 grid with the rank term)": lambda s: cross_validate(
            queries, "adapter", 5, s, None, coherence_grid(with_shape=True)).predictions,
        "also shape + coherence + rank at L2 1/3/10": lambda s: cross_validate(
            queries, "adapter", 5, s, None, coherence_grid() + shape_heavy).predictions,
        "mean of the 3 best coherence configurations": lambda s: averaged(queries, coherence_only, 3, s),
        "mean of all 18 coherence configurations": lambda s: averaged(queries, coherence_only, None, s),
        "two-stage ridge prior, m by inner CV": lambda s: two_stage(queries, TOPIC_SIZES, s),
        "two-stage ridge prior, m fixed at 10 (picked by looking)": lambda s: two_stage(queries, (10,), s),
        **{f"soft-count prior, m={m}": (lambda s, m=m: soft_count(queries, ranked, m, s)) for m in TOPIC_SIZES},
    }
    print("\n| variant | P@R0.8 per split | mean |\n|---|---|---|")
    for name, run in tqdm(runs.items(), desc="variants", unit="variant"):
        values = [precision_at(run(s), queries, 0.8) for s in SEEDS]
        print(f"| {name} | {' / '.join(f'{v:.3f}' for v in values)} | {np.mean(values):.3f} |", flush=True)


# ----- 3. prior features ------------------------------------------------------------------------
def r2(x: np.ndarray, queries: list[LabelledQuery]) -> float:
    """`prior_r2` averaged over the three splits."""
    return float(np.mean([prior_r2(x, queries, 5, seed) for seed in SEEDS]))


def _two_means_upper(s: np.ndarray) -> int:
    """Size of the upper group of the best two-group split of `s` (Otsu)."""
    s = np.sort(s)
    scores = [k * (len(s) - k) * (s[:k].mean() - s[k:].mean()) ** 2 for k in range(1, len(s))]
    return len(s) - (1 + int(np.argmax(scores)))


def _change_point(s: np.ndarray) -> int:
    """Rank where splitting the sequence in two leaves the least squared error."""
    costs = [((s[:k] - s[:k].mean()) ** 2).sum() + ((s[k:] - s[k:].mean()) ** 2).sum() for k in range(1, len(s))]
    return 1 + int(np.argmin(costs))


def prior_features(queries: list[LabelledQuery], ranked: dict[str, np.ndarray], doc_emb: np.ndarray,
                   query_emb: dict[str, np.ndarray]) -> None:
    coh10 = np.array([list_coherence(q.coherence_tails[10]) for q in queries])
    corpus_mean = doc_emb.mean(0)
    rng = np.random.default_rng(0)
    sample = doc_emb[rng.choice(len(doc_emb), 1000, replace=False)]
    rows: dict[str, list[float]] = {}
    for q in queries:
        v = ranked[q.query_id]
        f: dict[str, float] = {}
        for m in TOPIC_SIZES:
            c = topic_centre(v[:m])
            s = v @ c
            background, head = float(c @ corpus_mean), float(s[:m].mean())
            f[f"whole-list coherence m={m}"] = float(s.mean())
            normalised = (s[50:].mean() - background) / (head - background)
            f[f"tail coherence normalised (corpus mean .. head) m={m}"] = float(normalised)
            f[f"two-group (Otsu) size of the similarities m={m}"] = np.log(_two_means_upper(s))
            f[f"change-point rank of the similarities m={m}"] = np.log(_change_point(s))
            centre = c
            for _ in range(3):  # pseudo-relevance feedback: re-centre on the current upper group
                upper = np.argsort(-(v @ centre))[: max(_two_means_upper(v @ centre), 1)]
                centre = topic_centre(v[upper])
            f[f"PRF-iterated tail coherence m={m}"] = float((v @ centre)[50:].mean())
        gram = v @ v.T
        eig, vec = np.linalg.eigh(gram)
        f["leading eigenvalue share of the Gram matrix"] = float(eig[-1] / eig.sum())
        f["participation ratio of its eigenvector"] = float(1 / (vec[:, -1] ** 4).sum() / len(v))
        f["mean pairwise similarity"] = float((gram.sum() - len(v)) / (len(v) * (len(v) - 1)))
        for name, background in (("corpus", doc_emb), ("1,000-passage sample", sample)):
            b = background @ query_emb[q.query_id]
            for k in (1, 10, 50, 100):
                f[f"z-score of the rank-{k} score vs the {name}"] = float((q.scores[k - 1] - b.mean()) / b.std())
        for key, value in f.items():
            rows.setdefault(key, []).append(value)
    print(f"\n| feature | R^2 alone | R^2 with list coherence m=10 ({r2(coh10, queries):.3f} alone) |\n|---|---|---|")
    for name, values in rows.items():
        x = np.array(values)
        print(f"| {name} | {r2(x, queries):.3f} | {r2(np.c_[x, coh10], queries):.3f} |", flush=True)


def llm_head(queries: list[LabelledQuery], data, ranked_ids: dict[str, list[str]]) -> None:  # noqa: ANN001
    """The shipped LLM's mean pointwise P(yes) over each query's top 5/10/20 as a prior feature."""
    from sklearn.metrics import roc_auc_score

    from models.llm.loading import DEFAULT_RERANK_LLM, load_causal_lm
    from models.rerankers.pointwise import PointwiseReranker

    with open(DEFAULT_DATASET / "corpus.jsonl", encoding="utf-8") as fh:
        corpus = {str(d["_id"]): (d.get("title", "") + " " + d["text"]).strip() for d in map(json.loads, fh)}
    with open(DEFAULT_DATASET / "queries.jsonl", encoding="utf-8") as fh:
        text = {str(d["_id"]): d["text"] for d in map(json.loads, fh)}
    reranker = PointwiseReranker(load_causal_lm(DEFAULT_RERANK_LLM, device="cpu", dtype="float32"), engine="cache")
    judged = {q.query_id: np.array(reranker.score(text[q.query_id], [corpus[d] for d in ranked_ids[q.query_id][:20]]))
              for q in tqdm(queries, desc="LLM head", unit="query")}
    coh10 = np.array([list_coherence(q.coherence_tails[10]) for q in queries])
    print("\n| LLM P(yes) mean over the top k | R^2 alone | with list coherence m=10 |\n|---|---|---|")
    for k in (5, 10, 20):
        x = np.array([judged[q.query_id][:k].mean() for q in queries])
        print(f"| k={k} | {r2(x, queries):.3f} | {r2(np.c_[x, coh10], queries):.3f} |")
    aucs = [roc_auc_score(q.labels[:20], judged[q.query_id]) for q in queries if 0 < q.labels[:20].sum() < 20]
    print(f"within-query ROC-AUC of the LLM on the top 20: {np.mean(aucs):.3f}")


# ----- 5. lexical prior features -----------------------------------------------------------------
def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def lexical_features(queries: list[LabelledQuery], ranked_ids: dict[str, list[str]]) -> None:
    """A prior signal of another kind than the embeddings: the query's own words in its list.

    A query whose topic the collection covers broadly should keep its terms far down its dense
    list. Term weights are the collection's IDF (no stopword list, no constant); coverage of a
    passage is the IDF share of the query's terms it contains.
    """
    with open(DEFAULT_DATASET / "corpus.jsonl", encoding="utf-8") as fh:
        words = {str(d["_id"]): _words(d.get("title", "") + " " + d["text"]) for d in map(json.loads, fh)}
    with open(DEFAULT_DATASET / "queries.jsonl", encoding="utf-8") as fh:
        query_words = {str(d["_id"]): sorted(_words(d["text"])) for d in map(json.loads, fh)}
    df: dict[str, int] = {}
    for ws in words.values():
        for w in ws:
            df[w] = df.get(w, 0) + 1
    rows: dict[str, list[float]] = {}
    for q in queries:
        terms = query_words[q.query_id]
        idf = np.array([np.log((len(words) + 1) / (df.get(t, 0) + 0.5)) for t in terms])
        has = np.array([[t in words[d] for t in terms] for d in ranked_ids[q.query_id]], dtype=np.float64)
        coverage = has @ idf / idf.sum()
        half = len(coverage) // 2
        f = {
            "IDF-weighted term coverage of the lower half": coverage[half:].mean(),
            "IDF-weighted term coverage of the whole list": coverage.mean(),
            "IDF-weighted term coverage of the top 10": coverage[:10].mean(),
            "lower half minus top 10": coverage[half:].mean() - coverage[:10].mean(),
            "unweighted term coverage of the lower half": has[half:].mean(),
            "query terms": float(len(terms)),
            "max IDF of the query terms": idf.max(),
            "mean IDF of the query terms": idf.mean(),
        }
        for key, value in f.items():
            rows.setdefault(key, []).append(float(value))
    coh10 = np.array([list_coherence(q.coherence_tails[10]) for q in queries])
    print(f"\n| lexical feature | R^2 alone | R^2 with list coherence m=10 ({r2(coh10, queries):.3f} alone) |")
    print("|---|---|---|")
    for name, values in rows.items():
        x = np.array(values)
        print(f"| {name} | {r2(x, queries):.3f} | {r2(np.c_[x, coh10], queries):.3f} |", flush=True)


# ----- 6. the errors at recall 0.8 ---------------------------------------------------------------
def errors_at_recall(queries: list[LabelledQuery], ranked_ids: dict[str, list[str]], recall: float = 0.8) -> None:
    """Per query: pairs kept and relevant ones at the pooled threshold of `recall`, and the grades it cut through."""
    from indexing.calibration.dataset import read_qrels

    qrels = read_qrels(DEFAULT_DATASET / "qrels" / "test.tsv")
    with open(DEFAULT_DATASET / "queries.jsonl", encoding="utf-8") as fh:
        text = {str(d["_id"]): d["text"] for d in map(json.loads, fh)}
    preds = cross_validate(queries, "adapter", 5, 0, None, coherence_grid()).predictions
    prec, rec, thresholds = precision_recall_curve(np.concatenate(preds), np.concatenate([q.labels for q in queries]))
    ok = np.flatnonzero(rec >= recall)
    threshold = thresholds[ok[np.argmax(prec[ok])]]
    print(f"\nDefault calibrator, split 0, pooled threshold {threshold:.3f} (recall {recall}), by share relevant")
    print("| query | grade >= 2 / 1 / unjudged in the top-n | kept | of them grade >= 2 | list coherence m=10 |")
    print("|---|---|---|---|---|")
    for q, p in sorted(zip(queries, preds, strict=True), key=lambda qp: -qp[0].labels.sum()):
        grades = [qrels.get(q.query_id, {}).get(d) for d in ranked_ids[q.query_id]]
        counts = (sum(g is not None and g >= 2 for g in grades), grades.count(1), grades.count(None))
        kept = p >= threshold
        print(f"| {text[q.query_id][:48]} | {' / '.join(map(str, counts))} | {int(kept.sum())} "
              f"| {int(q.labels[kept].sum())} | {list_coherence(q.coherence_tails[10]):.3f} |")
    coh10 = np.array([list_coherence(q.coherence_tails[10]) for q in queries])
    on_topic = [
        LabelledQuery(q.query_id, q.embedding, q.scores,
                      np.array([float(qrels.get(q.query_id, {}).get(d, 0) >= 1) for d in ranked_ids[q.query_id]]))
        for q in queries
    ]
    print(f"\nList coherence m=10 predicts the logit share of the top-n judged on the topic (grade >= 1) with "
          f"R^2 {r2(coh10, on_topic):.3f}, the share relevant (grade >= 2) with {r2(coh10, queries):.3f}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llm", action="store_true", help="Also score each query's top 20 with the shipped LLM.")
    parser.add_argument("--sections", default="1,2,3,5,6", help="Which sections to run (comma list; 4 is --llm).")
    args = parser.parse_args()
    sections = {int(v) for v in args.sections.split(",") if v.strip()} | ({4} if args.llm else set())
    data = embed_dataset(DEFAULT_DATASET.resolve())
    queries, _ = dense_candidates(data)
    scores = data.query_emb @ data.doc_emb.T
    row_of = {qid: i for i, qid in enumerate(data.query_ids)}
    order = {q.query_id: np.argsort(-scores[row_of[q.query_id]], kind="stable")[: len(q.scores)] for q in queries}
    ranked = {qid: data.doc_emb[top].astype(np.float64) for qid, top in order.items()}
    assert all(np.allclose(q.coherence_tails[10], coherence_tail(ranked[q.query_id], 10)) for q in queries)
    ranked_ids = {qid: [data.doc_ids[j] for j in top] for qid, top in order.items()}
    if 1 in sections:
        recall_levels(queries)
    if 2 in sections:
        variants(queries, ranked)
    if 3 in sections:
        query_emb = {qid: data.query_emb[row_of[qid]].astype(np.float64) for qid in order}
        prior_features(queries, ranked, data.doc_emb.astype(np.float64), query_emb)
    if 4 in sections:
        llm_head(queries, data, ranked_ids)
    if 5 in sections:
        lexical_features(queries, ranked_ids)
    if 6 in sections:
        errors_at_recall(queries, ranked_ids)


if __name__ == "__main__":
    main()

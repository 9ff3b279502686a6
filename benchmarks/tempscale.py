"""TempScale on long documents: retrieval quality and embedding collapse, with and without it.

`python -m benchmarks.tempscale` builds long documents from a BEIR corpus by joining `g` passages
drawn at random (fixed seed) into one text, so each long document holds one passage a query may be
about and g-1 others: the "needle" setting of long-context retrieval benchmarks, where averaging
attention hurts most. A long document's grade for a query is the highest grade of its passages.
g = 1 is the corpus as it is. For every attention temperature tau and every g it embeds the
corpus with the same loaded model (the temperature is set in place between runs), retrieves the
top 100 per judged query by exact cosine, and reports:
- nDCG@10, R@100 and MRR@10 (the project's conventions, `indexing.evaluation.score_run`), and the
  nDCG@10 gain over tau = 1 with a paired query-bootstrap 90 % interval;
- collapse: the mean pairwise cosine between document embeddings (how narrow the cone is), and
  the mean cosine to the corpus centroid per token-length bucket.
No parameter is fitted: tau is swept and every value is reported; the server's default stays 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.long_documents import base_parser, grouped_qrels, long_documents, paired_interval
from benchmarks.reporting import save_figure, write_results
from indexing.batch import read_jsonl
from indexing.evaluation import load_beir, score_run
from models.embedder import load_embedder
from models.embedder.tempscale import apply_attention_temperature

BUCKETS = ((0, 64), (64, 128), (128, 192), (192, 257))


def collapse_stats(vectors: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """Mean pairwise cosine (from the centroid's norm) and mean cosine to the centroid per length bucket."""
    n = len(vectors)
    mean = vectors.mean(axis=0)
    pairwise = (n * n * float(mean @ mean) - n) / (n * (n - 1))
    centre = mean / np.linalg.norm(mean)
    to_centre = vectors @ centre
    out = {"mean_pairwise_cosine": float(pairwise), "mean_cosine_to_centroid": float(to_centre.mean())}
    for lo, hi in BUCKETS:
        sel = (lengths >= lo) & (lengths < hi)
        if sel.sum() >= 20:
            out[f"to_centroid_{lo}-{hi - 1}_tokens"] = float(to_centre[sel].mean())
    return out


def run(dataset: Path, model: str, temperatures: list[float], groups: list[int], seed: int,
        batch_size: int) -> dict:
    from tqdm import tqdm

    data = load_beir(dataset)
    corpus = read_jsonl(data.corpus_path)
    qids = sorted(data.queries)
    embedder = load_embedder(model, device="cpu")
    limit = embedder.max_seq_length
    layouts = {}
    for g in groups:
        texts, members = long_documents(corpus, g, seed)
        toks = embedder.tokenize(texts)
        layouts[g] = {
            "texts": texts,
            "qrels": grouped_qrels(data.qrels, members),
            "lengths": np.array([len(t) for t in toks]),
            "truncated": float(np.mean([t.truncated for t in toks])),
        }
    results: dict = {"dataset": str(dataset), "model": model, "seed": seed, "max_seq_length": limit,
                     "queries": len(qids), "layouts": {}, "runs": []}
    for g, layout in layouts.items():
        results["layouts"][str(g)] = {
            "documents": len(layout["texts"]), "tokens_mean": float(layout["lengths"].mean()),
            "tokens_p90": float(np.quantile(layout["lengths"], 0.9)), "truncated_share": layout["truncated"],
        }
    per_query: dict[tuple[float, int], dict[str, float]] = {}
    bar = tqdm(total=len(temperatures) * sum(len(lay["texts"]) for lay in layouts.values()), unit="doc",
               desc="tempscale", dynamic_ncols=True)
    for tau in temperatures:
        apply_attention_temperature(embedder.model, tau)
        queries = embedder.encode([data.queries[q] for q in qids], input_type="query")
        for g, layout in layouts.items():
            t0 = time.perf_counter()
            docs = np.empty((len(layout["texts"]), embedder.dim), dtype=np.float32)
            for start in range(0, len(docs), 256):
                docs[start : start + 256] = embedder.encode(layout["texts"][start : start + 256],
                                                            input_type="document", batch_size=batch_size)
                bar.update(min(256, len(docs) - start))
            seconds = time.perf_counter() - t0
            scores = queries @ docs.T
            top = np.argsort(-scores, axis=1)[:, :100]
            ranking = {q: {f"d{int(d)}": float(scores[i, d]) for d in top[i]} for i, q in enumerate(qids)}
            metrics, per_q = score_run(ranking, layout["qrels"])
            per_query[(tau, g)] = {q: per_q[q]["nDCG@10"] for q in qids}
            results["runs"].append({"temperature": tau, "group": g, "metrics": metrics,
                                    "collapse": collapse_stats(docs, layout["lengths"]),
                                    "embed_seconds": seconds})
    bar.close()
    for entry in results["runs"]:
        base = per_query.get((1.0, entry["group"]))
        if base is None or entry["temperature"] == 1.0:
            continue
        deltas = np.array([per_query[(entry["temperature"], entry["group"])][q] - base[q] for q in qids])
        entry["ndcg_gain_over_tau1"] = float(deltas.mean())
        entry["ndcg_gain_interval90"] = paired_interval(deltas)
    return results


def table(results: dict) -> str:
    lines = ["| passages per doc | tau | nDCG@10 | gain over tau=1 [90% CI] | R@100 | MRR@10 | mean pairwise cos | "
             "cos to centroid |", "|---|---|---|---|---|---|---|---|"]
    for e in results["runs"]:
        m, c = e["metrics"], e["collapse"]
        gain = ""
        if "ndcg_gain_over_tau1" in e:
            lo, hi = e["ndcg_gain_interval90"]
            gain = f"{e['ndcg_gain_over_tau1']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        lines.append(f"| {e['group']} | {e['temperature']:g} | {m['nDCG@10']:.3f} | {gain} | {m['R@100']:.3f} | "
                     f"{m['MRR@10']:.3f} | {c['mean_pairwise_cosine']:.3f} | {c['mean_cosine_to_centroid']:.3f} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for g in sorted({e["group"] for e in results["runs"]}):
        rows = sorted((e for e in results["runs"] if e["group"] == g), key=lambda e: e["temperature"])
        taus = [e["temperature"] for e in rows]
        lay = results["layouts"][str(g)]
        label = f"{g} passage{'s' if g > 1 else ''}/doc (~{lay['tokens_mean']:.0f} tokens)"
        ax1.plot(taus, [e["metrics"]["nDCG@10"] for e in rows], marker="o", label=label)
        ax2.plot(taus, [e["collapse"]["mean_pairwise_cosine"] for e in rows], marker="o", label=label)
    ax1.set(xlabel="attention temperature tau (1 = as trained)", ylabel="nDCG@10", title="Retrieval")
    ax2.set(xlabel="attention temperature tau (1 = as trained)", ylabel="mean pairwise cosine of documents",
            title="Collapse (lower = wider spread)")
    for ax in (ax1, ax2):
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path, f"TempScale, {results['model'].split('/')[-1]}, {results['queries']} judged queries")


def main() -> None:
    parser = base_parser(__doc__, "1,3", "tempscale")
    parser.add_argument("--temperatures", default="1.0,0.9,0.8")
    args = parser.parse_args()
    temperatures = [float(t) for t in args.temperatures.split(",")]
    if 1.0 not in temperatures:
        temperatures.insert(0, 1.0)  # the baseline every gain is measured against
    results = run(args.dataset, args.model, temperatures, [int(g) for g in args.groups.split(",")], args.seed,
                  args.batch_size)
    print(json.dumps(results["layouts"], indent=1))
    write_results(results, args.out, args.plot, table, plot)


if __name__ == "__main__":
    main()

"""Chunked against truncated long documents: retrieval quality, where it is won, and what it costs.

`python -m benchmarks.chunking` builds long documents from a BEIR corpus the way
`benchmarks.tempscale` does (g random passages joined into one text, fixed seed; a document's grade
for a query is the best grade of its passages; g = 1 is the corpus as it is). For each layout it
indexes the documents with the real batch job (`indexing.batch.index_file`) three ways, in one run
and with one loaded model:
- `truncate`: chunking off (`chunk_tokens` 0), one vector per document; what rrs did before and
  what embedding servers do. The baseline every ratio and gain is measured against.
- `chunk-254`: the default, the model's whole window (254 text tokens for MiniLM) with 31 overlap.
- `chunk-128`: half-size windows with 16 overlap.
Then it searches every judged query through `Collection.search` (top 100, exact), and reports
nDCG@10 / R@100 / MRR@10 with the paired query-bootstrap 90 % interval of the nDCG@10 gain over
`truncate`; recall of the relevant passages by where they start in their document (inside the
model's window or past it: the part truncation never embeds); and the cost: vectors stored,
indexing seconds and search p50 latency, each as a ratio to `truncate`. Nothing is fitted.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.long_documents import base_parser, grouped_qrels, long_documents, paired_interval
from benchmarks.reporting import save_figure, write_results
from indexing.batch import index_file, read_jsonl
from indexing.collection import Collection
from indexing.evaluation import load_beir, score_run
from models.embedder import load_embedder

SYSTEMS = {"truncate": (0, None), "chunk-254": (None, None), "chunk-128": (128, 16)}


def passage_starts(embedder, corpus: list[dict], members: list[list[str]]) -> dict[str, int]:
    """Token position at which each passage starts in its long document (sum of the ones before it)."""
    by_id = {str(r["_id"]): r for r in corpus}
    texts = [f"{r.get('title', '')} {r['text']}".strip() for r in corpus]
    lengths = dict(zip((str(r["_id"]) for r in corpus),
                       (len(ids) - 2 for ids in embedder.tokenizer(texts)["input_ids"]), strict=True))
    starts = {}
    for group in members:
        pos = 0
        for pid in group:
            starts[pid] = pos
            pos += lengths[pid] if pid in by_id else 0
    return starts


def run(dataset: Path, model: str, groups: list[int], seed: int, batch_size: int) -> dict:
    data = load_beir(dataset)
    corpus = read_jsonl(data.corpus_path)
    qids = sorted(data.queries)
    embedder = load_embedder(model, device="cpu")
    window = embedder.chunk_budget("document")
    queries = embedder.encode([data.queries[q] for q in qids], input_type="query")
    results: dict = {"dataset": str(dataset), "model": model, "seed": seed, "window_tokens": window,
                     "queries": len(qids), "runs": []}
    per_query: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for g in groups:
            texts, members = long_documents(corpus, g, seed)
            qrels = grouped_qrels(data.qrels, members)
            starts = passage_starts(embedder, corpus, members)
            owner = {pid: f"d{i}" for i, group in enumerate(members) for pid in group}
            path = Path(tmp) / f"g{g}.jsonl"
            path.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
            for system, (tokens, overlap) in SYSTEMS.items():
                name = f"g{g}-{system}"
                report = index_file(Path(tmp), name, path, embedder, index_kind="flat", batch_size=batch_size,
                                    chunk_tokens=tokens, chunk_overlap=overlap, progress=True,
                                    snapshot_every=1 << 30)
                coll = Collection.open(Path(tmp) / "collections" / name)
                ranking: dict[str, dict[str, float]] = {}
                latency = []
                for i, q in enumerate(qids):
                    t0 = time.perf_counter()
                    hits = coll.search(queries[i : i + 1], 100)[0].hits
                    latency.append((time.perf_counter() - t0) * 1e3)
                    ranking[q] = {h.id: h.score for h in hits}
                vectors = len(coll.index)
                coll.close(snapshot=False)
                metrics, per_q = score_run(ranking, qrels)
                per_query[(system, g)] = {q: per_q[q]["nDCG@10"] for q in qids}
                results["runs"].append({
                    "group": g, "system": system, "chunk_tokens": tokens, "metrics": metrics,
                    "recall_by_position": _recall_by_position(data.qrels, ranking, owner, starts, window),
                    "documents": len(texts), "chunked": report.chunked, "truncated": report.truncated,
                    "vectors": vectors, "index_seconds": report.seconds,
                    "search_p50_ms": float(np.median(latency)),
                })
    for entry in results["runs"]:
        base = next(e for e in results["runs"] if e["group"] == entry["group"] and e["system"] == "truncate")
        entry["vectors_ratio"] = entry["vectors"] / base["vectors"]
        entry["index_time_ratio"] = entry["index_seconds"] / base["index_seconds"]
        entry["search_p50_ratio"] = entry["search_p50_ms"] / base["search_p50_ms"]
        if entry["system"] != "truncate":
            mine, base_q = per_query[(entry["system"], entry["group"])], per_query[("truncate", entry["group"])]
            deltas = np.array([mine[q] - base_q[q] for q in qids])
            entry["ndcg_gain"] = float(deltas.mean())
            entry["ndcg_gain_interval90"] = paired_interval(deltas)
    return results


def _recall_by_position(qrels: dict[str, dict[str, int]], ranking: dict[str, dict[str, float]],
                        owner: dict[str, str], starts: dict[str, int], window: int) -> dict[str, list[int]]:
    """[found, total] relevant (grade >= 2) passages whose document is in the top 100, by where they start."""
    out = {"inside_window": [0, 0], "past_window": [0, 0]}
    for q, grades in qrels.items():
        for pid, grade in grades.items():
            if grade < 2 or pid not in owner:
                continue
            bucket = out["inside_window" if starts[pid] < window else "past_window"]
            bucket[0] += owner[pid] in ranking.get(q, {})
            bucket[1] += 1
    return out


def table(results: dict) -> str:
    lines = ["| passages per doc | system | docs chunked | vectors (x truncate) | nDCG@10 | gain [90% CI] | R@100 | "
             "MRR@10 | R@100 of passages past the window | index s (x) | search p50 ms (x) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in results["runs"]:
        m = e["metrics"]
        gain = ""
        if "ndcg_gain" in e:
            lo, hi = e["ndcg_gain_interval90"]
            gain = f"{e['ndcg_gain']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        found, total = e["recall_by_position"]["past_window"]
        past = f"{found / total:.3f} ({found}/{total})" if total else "none"
        lines.append(
            f"| {e['group']} | {e['system']} | {e['chunked']}/{e['documents']} | {e['vectors']} "
            f"({e['vectors_ratio']:.2f}x) | {m['nDCG@10']:.3f} | {gain} | {m['R@100']:.3f} | {m['MRR@10']:.3f} | "
            f"{past} | {e['index_seconds']:.1f} ({e['index_time_ratio']:.2f}x) | "
            f"{e['search_p50_ms']:.2f} ({e['search_p50_ratio']:.2f}x) |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({e["group"] for e in results["runs"]})
    systems = list(SYSTEMS)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(systems)
    for j, system in enumerate(systems):
        rows = [next(e for e in results["runs"] if e["group"] == g and e["system"] == system) for g in groups]
        xs = np.arange(len(groups)) + (j - (len(systems) - 1) / 2) * width
        ax1.bar(xs, [e["metrics"]["nDCG@10"] for e in rows], width, label=system)
        past = [e["recall_by_position"]["past_window"] for e in rows]
        ax2.bar(xs, [f / t if t else 0.0 for f, t in past], width, label=system)
    for ax, title, ylabel in ((ax1, "Retrieval", "nDCG@10"),
                              (ax2, "Relevant passages past the model's window", "R@100 of those passages")):
        ax.set_xticks(np.arange(len(groups)), [f"{g} passage{'s' if g > 1 else ''}/doc" for g in groups])
        ax.set(title=title, ylabel=ylabel)
        ax.grid(alpha=0.3, axis="y")
    ndcg = [e["metrics"]["nDCG@10"] for e in results["runs"]]
    ax1.set_ylim(max(0.0, min(ndcg) - 0.1), min(1.0, max(ndcg) + 0.05))  # the differences, not the bars' height
    ax2.legend(fontsize=8, loc="upper left")  # group 1 has no passage past the window: that corner is empty
    save_figure(fig, path,
                f"Chunking vs truncation, {results['model'].split('/')[-1]}, {results['queries']} judged queries")


def main() -> None:
    parser = base_parser(__doc__, "1,3,5", "chunking")
    args = parser.parse_args()
    results = run(args.dataset, args.model, [int(g) for g in args.groups.split(",")], args.seed, args.batch_size)
    write_results(results, args.out, args.plot, table, plot)


if __name__ == "__main__":
    main()

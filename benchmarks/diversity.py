"""Diverse results: does `mmr` clear near-copies out of the first page, and what does it cost?

`python -m benchmarks.diversity` indexes each dataset twice with the default embedder (the eval
harness's batch job): as it is, and with **near-copies** added: each passage, with probability
0.25 and independent of any judgment, gets 1 to 3 copies, each with one of a few boilerplate lead-ins
("Archived copy.", ...) and one word in twelve dropped at random. That is what a knowledge base
built from several exports, mirrors or versions of its pages looks like.

A copy inherits its original's judgment once: on a page, only the first member of a family
(an original and its copies) gains its grade; the rest are redundant and gain nothing. This
**novelty nDCG@10** (linear gains, the ideal ranking from every judged original: on a corpus without
copies it is the trec_eval nDCG@10 the other benchmarks report) is scored for:

- `plain` (the baseline): the dense top 10;
- `mmr d=...`: the API's `{"mmr": {"diversity": d}}`, picked from the top 50 (the default pool).

With it, the distinct families on the page, and paired query-bootstrap 90 % intervals of each
system minus plain. On the corpus without copies the same systems show what diversity costs
when there is nothing to remove. Latency: per search through `Collection.search`, median of five
rounds over every query, plain and MMR in the same run.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.long_documents import paired_interval
from benchmarks.reporting import format_gain, run_on_dataset_and_demo, save_figure
from indexing.collection import Collection
from indexing.diversity import Diversify
from indexing.evaluation import evaluate, load_beir
from models.embedder import load_embedder

DIVERSITIES = (0.1, 0.3, 0.5, 0.7)
SYSTEMS = ("plain", *(f"mmr d={d}" for d in DIVERSITIES))
PAGE = 10
COPY_RATE = 0.25
MAX_COPIES = 3
DROP_EVERY = 12
LEAD_INS = ("Archived copy.", "Reposted from our knowledge base.", "Updated version.", "From the FAQ:",
            "Mirror of the original page.")
COPY_MARK = "~copy"
ROUNDS = 5


def _copy_text(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    if len(words) >= DROP_EVERY:
        drop = set(rng.choice(len(words), size=len(words) // DROP_EVERY, replace=False).tolist())
        words = [w for i, w in enumerate(words) if i not in drop]
    return f"{LEAD_INS[int(rng.integers(len(LEAD_INS)))]} {' '.join(words)}"


def with_near_copies(src: Path, dst: Path, seed: int = 0) -> int:
    """A BEIR folder holding `src`'s corpus plus near-copies (ids `<original>~copy<n>`); returns how many."""
    rng = np.random.default_rng(seed)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("corpus.jsonl"))
    added = 0
    with open(src / "corpus.jsonl", encoding="utf-8") as fin, open(dst / "corpus.jsonl", "w", encoding="utf-8") as out:
        for line in fin:
            if not line.strip():
                continue
            out.write(line)
            doc = json.loads(line)
            if rng.random() >= COPY_RATE:
                continue
            key = "_id" if "_id" in doc else "id"
            for n in range(int(rng.integers(1, MAX_COPIES + 1))):
                copy = {**doc, key: f"{doc[key]}{COPY_MARK}{n}", "text": _copy_text(doc["text"], rng)}
                out.write(json.dumps(copy, ensure_ascii=False) + "\n")
                added += 1
    return added


def family(doc_id: str) -> str:
    return doc_id.split(COPY_MARK, 1)[0]


def novelty_ndcg(ranking: list[str], judged: dict[str, int], k: int = PAGE) -> float:
    """nDCG@k where a family's grade is gained by its first member on the page only."""
    seen: set[str] = set()
    dcg = 0.0
    for rank, doc in enumerate(ranking[:k]):
        fam = family(doc)
        if fam not in seen:
            dcg += judged.get(fam, 0) / math.log2(rank + 2)
            seen.add(fam)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    best = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / best if best > 0 else 0.0


def _diversify(name: str) -> Diversify | None:
    return None if name == "plain" else Diversify(float(name.split("=")[1]))


def _latency_ms(coll: Collection, queries: list[np.ndarray], diversify: Diversify | None) -> float:
    rounds = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for q in queries:
            coll.search(q[None, :], PAGE, diversify=diversify)
        rounds.append((time.perf_counter() - t0) * 1e3 / len(queries))
    return statistics.median(rounds)


def _corpus(path: Path, data_dir: Path, encoder: Any) -> dict[str, Any]:
    report = evaluate(path, data_dir, encoder, bm25=False, progress=False)
    assert report.dense is not None
    data = load_beir(path)
    coll = Collection.open(data_dir / "collections" / report.collection)
    try:
        qids = [q for q in data.qrels if any(g > 0 for g in data.qrels[q].values())]
        vectors = [report.dense.query_vectors[q] for q in qids]
        per_query: dict[str, list[float]] = {}
        families: dict[str, float] = {}
        latency: dict[str, float] = {}
        for name in SYSTEMS:
            div = _diversify(name)
            pages = [[h.id for h in coll.search(v[None, :], PAGE, diversify=div)[0].hits] for v in vectors]
            per_query[name] = [novelty_ndcg(p, data.qrels[q]) for p, q in zip(pages, qids, strict=True)]
            families[name] = float(np.mean([len({family(d) for d in p}) for p in pages]))
            latency[name] = _latency_ms(coll, vectors, div)
        base = np.array(per_query["plain"])
        entry: dict[str, Any] = {"queries": len(qids), "documents": coll.store.count(), "systems": {}}
        for name in SYSTEMS:
            deltas = np.array(per_query[name]) - base
            entry["systems"][name] = {
                "novelty_ndcg@10": float(np.mean(per_query[name])), "families_on_page": families[name],
                "ms_per_search": latency[name], "latency_vs_plain": latency[name] / latency["plain"],
                "vs_plain": None if name == "plain" else {"ndcg": float(deltas.mean()),
                                                          "interval90": paired_interval(deltas)},
            }
        return entry
    finally:
        coll.close(snapshot=False)


def run(datasets: dict[str, Path], model: str) -> dict[str, Any]:
    encoder = load_embedder(model, device="cpu")
    out: dict[str, Any] = {"model": model, "baseline": "plain dense top 10 of the same collection, same run",
                           "pool": Diversify().pool(PAGE), "copy_rate": COPY_RATE, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in datasets.items():
            copies_dir = Path(tmp) / f"{label}-copies"
            added = with_near_copies(path, copies_dir)
            print(f"{label}: as it is, then with {added} near-copies ...", flush=True)
            out["datasets"][label] = {
                "as it is": _corpus(path, Path(tmp) / f"{label}-data", encoder),
                "with near-copies": {**_corpus(copies_dir, Path(tmp) / f"{label}-copies-data", encoder),
                                     "copies": added},
            }
    return out


def to_markdown(result: dict) -> str:
    lines = ["| dataset | corpus | system | novelty nDCG@10 | vs plain [90 % interval] | families in top 10 "
             "| ms / search | vs plain |", "|---|---|---|---:|---|---:|---:|---:|"]
    for label, corpora in result["datasets"].items():
        for corpus, entry in corpora.items():
            for name in SYSTEMS:
                m = entry["systems"][name]
                lines.append(f"| {label} ({entry['queries']} queries) | {corpus} ({entry['documents']:,} docs) | "
                             f"{name} | {m['novelty_ndcg@10']:.3f} | {format_gain(m['vs_plain'])} | "
                             f"{m['families_on_page']:.2f} | "
                             f"{m['ms_per_search']:.2f} | {m['latency_vs_plain']:.2f}x |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["datasets"])
    fig, axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 3.8), squeeze=False)
    xs = [0.0, *DIVERSITIES]
    for ax, label in zip(axes[0], labels, strict=True):
        for corpus, style in (("as it is", "--"), ("with near-copies", "-")):
            systems = result["datasets"][label][corpus]["systems"]
            ax.plot(xs, [systems[name]["novelty_ndcg@10"] for name in SYSTEMS], style, marker="o", label=corpus)
        ax.set_xlabel("mmr diversity (0 = plain)")
        ax.set_ylabel("novelty nDCG@10")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path, "Diverse results: first-page quality with and without near-copies")


def main() -> None:
    run_on_dataset_and_demo(__doc__, "diversity", lambda datasets, args: run(datasets, args.model), to_markdown, plot)


if __name__ == "__main__":
    main()

"""Search effort: recall@10 against latency for each index kind and knob, exact search the baseline.

`python -m benchmarks.search_effort` fills one collection with synthetic documents through
`Collection.upsert` (unit vectors from the 1,000-cluster mixture of `benchmarks.search`, where a
query's true top-10 sit at cosine 0.52-0.56, as MiniLM's do on real text), then builds each
index kind over its store (HNSW; IVF-flat; IVF-PQ, whose re-scoring reads that store) and times
single-query top-10 searches through `Collection.search` (the layer the HTTP route calls) with one
FAISS thread, as the server runs it, for every `search_params` value a caller might send:

- HNSW `ef` from 10 to 1,024 (128 is the default);
- IVF `nprobe` from 1 to every list (ivf_flat: all lists is exact);
- IVF-PQ the same, ranked by its codes alone (`rescore: false`) and re-scored on the stored vectors
  (the default, 4 candidates per hit; and 16);
- `exact: true`: the baseline every latency is divided by, measured in the same run, and the truth
  recall is counted against.

Two query sets: fresh draws from the documents' mixture (as real queries land), and random directions,
far from every document, where graph and list searches are known to lose recall. Also reported:
each kind's build time and the bytes its index holds in memory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.reporting import save_figure, write_results
from benchmarks.search import clustered_vectors
from indexing.ann import SearchParams, VectorIndex
from indexing.collection import Collection, CollectionConfig, _build_from_store
from indexing.store import Document

DIM = 384
EFS = [10, 16, 32, 64, 128, 256, 512, 1024]
NPROBES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def _fill(coll: Collection, n: int, batch: int = 5000) -> np.ndarray:
    """Documents from the mixture (seed 0); returns their vectors."""
    x = clustered_vectors(n, DIM, seed=0)
    for b in range(0, n, batch):
        coll.upsert([Document(f"doc-{i:07d}", "", {}) for i in range(b, min(b + batch, n))], x[b : b + batch])
    return x


def _truth(x: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set[str]]:
    sims = queries @ x.T
    best = np.argpartition(-sims, k, axis=1)[:, :k]
    return [{f"doc-{i:07d}" for i in row} for row in best]


def _measure(coll: Collection, queries: np.ndarray, truth: list[set[str]], params: SearchParams) -> dict[str, float]:
    """Median ms of one top-10 search and recall@10 against brute force."""
    coll.search(queries[:1], 10, params=params)  # warm
    ms, hits = [], []
    for q in queries:
        t = time.perf_counter()
        result = coll.search(q[None, :], 10, params=params)[0]
        ms.append((time.perf_counter() - t) * 1000)
        hits.append({h.id for h in result.hits})
    rec = float(np.mean([len(h & t) / len(t) for h, t in zip(hits, truth, strict=True)]))
    return {"ms": float(np.median(ms)), "recall": rec}


def _runs(kind: str, nlist: int, default_nprobe: int) -> list[tuple[str, str, SearchParams]]:
    """(series, knob label, params) swept on one kind (the default among them)."""
    if kind == "hnsw":
        return [("hnsw", f"ef={ef}", SearchParams(ef=ef)) for ef in EFS]
    probes = sorted({p for p in NPROBES if p < nlist} | {default_nprobe, nlist})
    if kind == "ivf_flat":
        return [("ivf_flat", f"nprobe={p}", SearchParams(nprobe=p)) for p in probes]
    out = [("ivf_pq, codes only", f"nprobe={p}", SearchParams(nprobe=p, rescore=False)) for p in probes]
    out += [("ivf_pq, re-scored x4", f"nprobe={p}", SearchParams(nprobe=p)) for p in probes]
    return out + [("ivf_pq, re-scored x16", f"nprobe={p}", SearchParams(nprobe=p, oversample=16)) for p in probes]


def run(n_docs: int = 200_000, n_queries: int = 100) -> dict[str, Any]:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # as the server runs FAISS (RRS_FAISS_THREADS=1)
    sets = {"near documents": clustered_vectors(n_queries, DIM, seed=1),
            "random directions": _random_queries(n_queries)}
    with tempfile.TemporaryDirectory() as tmp:
        config = CollectionConfig("effort", "synthetic", DIM, index_kind="flat")
        coll = Collection.create(Path(tmp) / "effort", config, snapshot_every=10**9)
        print(f"filling {n_docs} documents ...", flush=True)
        x = _fill(coll, n_docs)
        truths = {name: _truth(x, q) for name, q in sets.items()}
        baseline = {name: _measure(coll, q, truths[name], SearchParams(exact=True)) for name, q in sets.items()}
        print(f"  exact (flat) {baseline['near documents']['ms']:.1f} ms", flush=True)
        rows: list[dict[str, Any]] = []
        kinds = []
        for kind in ("hnsw", "ivf_flat", "ivf_pq"):
            faiss.omp_set_num_threads(threads)  # builds use every core, as the server's rebuilds do
            start = time.perf_counter()
            coll.index = _build_from_store(coll.store, replace(config, index_kind=kind), "cpu")
            build_s = time.perf_counter() - start
            faiss.omp_set_num_threads(1)
            index: VectorIndex = coll.index
            nlist = faiss.extract_index_ivf(index.index).nlist if kind.startswith("ivf") else 0
            kinds.append({"kind": index.kind, "build_s": build_s, "nlist": nlist or None,
                          "index_mib": len(faiss.serialize_index(index.index)) / 2**20,
                          "default": {"hnsw": f"ef={index.ef_search}"}.get(kind, f"nprobe={index.nprobe}")})
            print(f"built {index.kind} in {build_s:.0f} s ({kinds[-1]['index_mib']:.0f} MiB)", flush=True)
            for series, knob, params in _runs(kind, nlist, index.nprobe):
                default = knob == kinds[-1]["default"] and "codes only" not in series and "x16" not in series
                row: dict[str, Any] = {"series": series, "knob": knob + (" *" if default else "")}
                for name, q in sets.items():
                    m = _measure(coll, q, truths[name], params)
                    row[name] = {**m, "speedup": baseline[name]["ms"] / m["ms"]}
                rows.append(row)
                near = row["near documents"]
                print(f"  {series:22s} {knob:12s} {near['ms']:7.2f} ms ({near['speedup']:5.1f}x exact) recall "
                      f"{near['recall']:.3f} | random {row['random directions']['recall']:.3f}", flush=True)
            if kind == "ivf_pq":
                continue  # exact there scores every stored vector read from SQLite: not a knob to sweep
            exact = {name: _measure(coll, q, truths[name], SearchParams(exact=True)) for name, q in sets.items()}
            rows.append({"series": f"{kind}, exact: true", "knob": "exact",
                         **{name: {**m, "speedup": baseline[name]["ms"] / m["ms"]} for name, m in exact.items()}})
        coll.close(snapshot=False)
    faiss.omp_set_num_threads(threads)
    return {"documents": n_docs, "queries": n_queries, "dim": DIM, "faiss_threads": 1,
            "baseline": "exact: true on a flat index (brute force over every vector), same run",
            "baseline_ms": {name: b["ms"] for name, b in baseline.items()}, "kinds": kinds, "rows": rows}


def _random_queries(n: int) -> np.ndarray:
    q = np.random.default_rng(77).standard_normal((n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def to_markdown(result: dict) -> str:
    base = result["baseline_ms"]
    lines = [
        f"{result['documents']:,} documents ({result['dim']}-d), top-10, median ms of {result['queries']} single "
        f"queries per set, {result['faiss_threads']} FAISS thread; baseline: {result['baseline']} "
        f"({base['near documents']:.1f} ms). Recall@10 against brute force.",
        "",
        "| index | build s | in memory MiB | default |",
        "|---|---:|---:|---|",
    ]
    for k in result["kinds"]:
        lists = "" if k["nlist"] is None else f" ({k['nlist']} lists)"
        lines.append(f"| {k['kind']}{lists} | {k['build_s']:.0f} "
                     f"| {k['index_mib']:.0f} | {k['default']} |")
    lines += ["", "| series | knob | ms | vs exact | recall@10 | random-direction queries: ms / recall@10 |",
              "|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        near, far = r["near documents"], r["random directions"]
        lines.append(f"| {r['series']} | {r['knob']} | {near['ms']:.2f} | **{near['speedup']:.1f}x** | "
                     f"{near['recall']:.3f} | {far['ms']:.2f} / {far['recall']:.3f} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, name in zip(axes, ("near documents", "random directions"), strict=True):
        series: dict[str, list[dict[str, Any]]] = {}
        for r in result["rows"]:
            if r["knob"] != "exact":
                series.setdefault(r["series"], []).append(r)
        for label, rows in series.items():
            ax.plot([r[name]["ms"] for r in rows], [r[name]["recall"] for r in rows], marker="o", ms=3, label=label)
        ax.axvline(result["baseline_ms"][name], color="gray", ls="--", lw=1, label="exact (flat): recall 1")
        ax.set_xscale("log")
        ax.set_xlabel("ms per top-10 search (median, log)")
        ax.set_title(f"queries: {name}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall@10 vs brute force")
    axes[0].legend(fontsize=7, loc="lower right")
    save_figure(fig, path, f"Search effort on {result['documents']:,} documents: each kind's knob swept")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_effort.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/search_effort.png"))
    args = parser.parse_args()
    write_results(run(args.documents, args.queries), args.out, args.plot, to_markdown, plot)


if __name__ == "__main__":
    main()

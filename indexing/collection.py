"""Named collections: a document store (source of truth) plus an ANN index snapshot per collection.

On disk, `<data_dir>/collections/<name>/` holds `store.sqlite3` (documents, vectors, config),
`manifest.json` and `index-<seq>.npz`. Opening a collection loads the snapshot and replays the
store writes made after it (acknowledged upserts and deletes a crash kept out of the snapshot),
so the index always ends up equal to the store. A snapshot that is corrupt or does not match the
store's configuration makes that one collection unavailable with the reason; `reload(rebuild=True)`
rebuilds it from the store's vectors (no re-embedding).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexing.ann import INDEX_KINDS, METRICS, RESCORE_OVERSAMPLE, EffortUsed, SearchParams, VectorIndex
from indexing.diversity import Diversify, mmr_order
from indexing.errors import (
    InvalidCollectionName,
    InvalidDocument,
)
from indexing.feedback import FEEDBACK_FILE, FeedbackLog
from indexing.filter_plan import EXACT_FILTER_MAX, FilterPlan, filtered_ef, first_depth, next_depth
from indexing.filters import check_index
from indexing.grouping import GROUP_MAX_DEPTH, GROUP_OVERFETCH, Group, Grouping, group_depth, members, pick
from indexing.lexical import TOKENIZERS, LexicalUnavailable
from indexing.snapshot import SnapshotError, read_manifest, read_snapshot, write_snapshot
from indexing.store import Chunk, ChunkRef, Document, DocumentStore, Write, chunk_vector_id, vector_id

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SEARCH_MODES = ("dense", "lexical", "hybrid")
EXACT_BLOCK = 16_384  # vectors scored per block by exact search (bounds its memory)
MAX_METADATA_INDEXES = 32  # each one is written on every upsert
STORE_FILE = "store.sqlite3"


def validate_name(name: str) -> str:
    """Collection names are single safe path components: letters, digits, '_' and '-' (<= 64)."""
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise InvalidCollectionName(
            f"name: {name!r} is not a valid collection name (1-64 characters: letters, digits, '_' or '-',"
            " starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class CollectionConfig:
    """What a collection was created with; fixed for its lifetime."""

    name: str
    model: str
    dim: int
    metric: str = "cosine"
    index_kind: str = "auto"
    created_at: float = field(default_factory=time.time)
    # Documents longer than this many text tokens are embedded as overlapping chunks (None: one
    # vector per document, the text beyond the model's window unembedded).
    chunk_tokens: int | None = None
    chunk_overlap: int = 0
    # The lexical index's stemming: "none" (language-neutral tokens) or "porter" (English).
    lexical_stemmer: str = "none"


@dataclass
class Hit:
    """One search result; `relevance` is filled by a calibrator when the collection has one."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    vid: int
    relevance: float | None = None
    rerank_score: float | None = None
    chunk: ChunkRef | None = None  # the chunk that matched, for a document stored as several
    lexical_score: float | None = None  # BM25 (lexical and hybrid searches, when the lexical side found it)
    fused_score: float | None = None  # reciprocal rank fusion score (hybrid searches)

    @property
    def passage(self) -> str:
        """The text that matched: the chunk of a chunked document, else the whole text."""
        return self.text if self.chunk is None else self.text[self.chunk.start : self.chunk.end]


@dataclass
class Nearest:
    """Document-level search result: per query, the best score of each document, the document's
    vector id, and the vector id of the chunk that scored it (the document's own when unchunked)."""

    scores: np.ndarray
    doc_vids: np.ndarray
    vids: np.ndarray
    chunks: dict[int, ChunkRef]
    unfiltered: Nearest | None = None  # a post-filtered search's unfiltered list, deeper than k
    effort: EffortUsed | None = None  # what the vector search ran with

    def chunk_of(self, vid: int) -> ChunkRef | None:
        return self.chunks.get(vid)


@dataclass
class SearchResult:
    """Hits of one query; `candidates` counts hits before the relevance cut (equal without one)."""

    hits: list[Hit]
    candidates: int
    filtered_count: int | None = None  # documents matching the metadata filter, when one was given
    filtered_count_exact: bool | None = None  # False: at least `filtered_count` (counting stopped there)
    min_relevance: float | None = None  # the relevance cut applied (request value or fitted default)
    relevance_filtered: int = 0  # candidates removed by that cut
    effort: EffortUsed | None = None  # the dense side's index kind and knobs (None for lexical search)
    groups: list[tuple[Any, list[str]]] | None = None  # grouped searches: (value, member ids) in rank order
    score_filtered: int = 0  # candidates removed by the score cut (`min_score`)


class Calibrator(Protocol):
    """The seam for the relevance-calibration stage: fills `relevance` on each hit."""

    threshold: float  # the fitted global threshold: the default `min_relevance`
    n_candidates: int  # depth of the unfiltered candidate list its features read

    def calibrate(
        self, query_vector: np.ndarray, hits: list[Hit], candidates: tuple[np.ndarray, np.ndarray] | None = None
    ) -> list[Hit]:
        """`candidates`: the query's unfiltered top-n (scores, vector ids) when the caller has it already."""
        ...


class Collection:
    """One collection: writes go to the store first (durable), then to the in-memory index."""

    def __init__(
        self,
        folder: Path,
        config: CollectionConfig,
        store: DocumentStore,
        index: VectorIndex,
        snapshot_seq: int,
        snapshot_every: int = 1000,
        device: str = "cpu",
    ) -> None:
        self.folder = folder
        self.config = config
        self.store = store
        self.index = index
        self.snapshot_seq = snapshot_seq
        self.snapshot_every = snapshot_every
        self.device = device
        self.calibrator: Calibrator | None = None
        self._lock = threading.RLock()
        self._unsnapshotted = 0
        self._feedback: FeedbackLog | None = None
        self._chunked = store.chunk_count() > 0  # some document is stored as several vectors
        self.exact_filter_max = EXACT_FILTER_MAX  # search knobs (tests and benchmarks move them)
        self.post_filter = True  # False: a broad filter's matches are read whole, as before post-filtering

    @property
    def feedback(self) -> FeedbackLog:
        """The collection's relevance-feedback log, opened on first use (most collections have none)."""
        with self._lock:
            if self._feedback is None:
                self._feedback = FeedbackLog(self.folder / FEEDBACK_FILE)
            return self._feedback

    @property
    def name(self) -> str:
        return self.config.name

    # ---- lifecycle ----
    @classmethod
    def create(
        cls,
        folder: Path,
        config: CollectionConfig,
        snapshot_every: int = 1000,
        device: str = "cpu",
        metadata_indexes: Sequence[str] = (),
    ) -> Collection:
        """A new empty collection in `folder`, with a metadata index on each of `metadata_indexes`."""
        fields = _index_fields(metadata_indexes)
        if config.metric not in METRICS:
            raise InvalidDocument(f"metric: unknown metric {config.metric!r}; one of {', '.join(METRICS)}")
        if config.index_kind not in INDEX_KINDS:
            raise InvalidDocument(
                f"index: unknown kind {config.index_kind!r}; one of {', '.join(INDEX_KINDS)}"
            )
        if config.dim < 1:
            raise InvalidDocument("dimension: must be positive")
        if config.lexical_stemmer not in TOKENIZERS:
            raise InvalidDocument(
                f"lexical_stemmer: one of {', '.join(TOKENIZERS)}, got {config.lexical_stemmer!r}"
            )
        folder.mkdir(parents=True, exist_ok=False)
        store = DocumentStore(folder / STORE_FILE, config.dim, config.lexical_stemmer)
        store.set_meta("config", json.dumps(asdict(config)))
        for name in fields:
            store.create_metadata_index(name)
        index = VectorIndex.build(config.dim, config.metric, config.index_kind, 0, lambda: iter(()), device)
        coll = cls(folder, config, store, index, 0, snapshot_every, device)
        coll.snapshot()
        return coll

    @classmethod
    def open(
        cls, folder: Path, snapshot_every: int = 1000, device: str = "cpu", rebuild: bool = False
    ) -> Collection:
        """Open from disk; raises SnapshotError when the snapshot is unusable (unless `rebuild`)."""
        store = DocumentStore(folder / STORE_FILE)
        try:
            raw = store.get_meta("config")
            if raw is None:
                raise SnapshotError(f"{folder / STORE_FILE}: store has no collection configuration")
            config = CollectionConfig(**json.loads(raw))
            store.dim = config.dim
            manifest = None if rebuild else read_manifest(folder)
            if manifest is None:
                index = _build_from_store(store, config, device)
                coll = cls(folder, config, store, index, store.last_seq, snapshot_every, device)
                coll.snapshot()
                return coll
            _check_manifest(folder, manifest, config)
            arrays = read_snapshot(folder, manifest)
            try:
                index = VectorIndex.deserialize(
                    arrays, config.dim, config.metric, manifest["built_kind"], device
                )
            except (RuntimeError, ValueError, KeyError) as exc:
                raise SnapshotError(f"{folder / manifest['index_file']}: cannot load index ({exc})") from exc
            coll = cls(folder, config, store, index, int(manifest["seq"]), snapshot_every, device)
            coll._replay()
            return coll
        except BaseException:
            store.close()
            raise

    def _replay(self) -> None:
        """Apply store writes newer than the snapshot; a count mismatch after it means rebuild."""
        since = self.snapshot_seq
        replayed = 0
        dead = self.store.tombstones_since(since)
        if len(dead):
            self.index.remove(dead)
            replayed += len(dead)
        for vids, vectors in self.store.iter_vectors(since_seq=since):
            self.index.add(vids, vectors)
            replayed += len(vids)
        if len(self.index) != self.store.vector_count():  # e.g. a store restored from an older backup
            self.index = _build_from_store(self.store, self.config, self.device)
            self.snapshot()  # a rebuild is worth keeping at once
        elif replayed:  # the snapshot policy decides, as for writes made while serving: a replay of
            self._after_write(replayed)  # fewer writes than it waits for costs less than a snapshot

    def snapshot(self) -> dict[str, Any]:
        """Persist the index (atomically) as of the store's current sequence."""
        with self._lock:
            seq = self.store.last_seq
            manifest = {
                "name": self.config.name,
                "model": self.config.model,
                "dim": self.config.dim,
                "metric": self.config.metric,
                "index_kind": self.config.index_kind,
                "built_kind": self.index.kind,
                "count": len(self.index),
                "seq": seq,
                "written_at": time.time(),
            }
            written = write_snapshot(self.folder, self.index.serialize(), manifest)
            self.store.prune_tombstones(seq)
            self.store.refresh_statistics()
            self.snapshot_seq = seq
            self._unsnapshotted = 0
            return written

    def rebuild(self) -> None:
        """Rebuild the index from the store's vectors (new kind, dead slots dropped) and snapshot it."""
        with self._lock:
            self.index = _build_from_store(self.store, self.config, self.device)
            self.snapshot()

    def _after_write(self, changed: int) -> None:
        self._unsnapshotted += changed
        if self._unsnapshotted >= max(self.snapshot_every, len(self.index) // 10):
            if self.index.needs_rebuild(self.config.index_kind):
                self.rebuild()
            else:
                self.snapshot()

    def close(self, snapshot: bool = True) -> None:
        with self._lock:
            if snapshot and self._unsnapshotted:
                self.snapshot()
            self.store.close()
            if self._feedback is not None:
                self._feedback.close()
                self._feedback = None

    # ---- writes ----
    def upsert(
        self, docs: Sequence[Document], vectors: np.ndarray, chunks: Sequence[Sequence[Chunk]] | None = None
    ) -> list[int]:
        """Store (durably) then index `docs`; replaces documents with the same id.

        `chunks[i]`: every chunk of document i (chunk 0's vector is `vectors[i]`), when it has several.
        """
        if not docs:
            return []
        x = self.index.prepare(vectors)  # validates dimension and finiteness before anything is written
        if chunks is not None:
            chunks = _prepared_chunks(self.index, chunks)
        with self._lock:
            write = self.store.upsert(docs, x, chunks)
            if write.remove_vids:
                self.index.remove(np.asarray(write.remove_vids, dtype=np.int64))
            self.index.add(write.add_vids, write.add_vectors)
            self._chunked = self._chunked or len(write.add_vids) > len(write.vids)
            self._after_write(len(write.add_vids) + len(write.remove_vids))
        return write.vids

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id (with their chunks) from the store and the index; returns how many existed."""
        with self._lock:
            return self._removed(self.store.delete(list(ids)))

    def delete_where(self, filter_: dict[str, Any]) -> int:
        """Delete the documents a metadata filter matches; returns how many."""
        if not filter_:
            raise InvalidDocument("filter: must hold at least one condition (delete the collection to empty it)")
        with self._lock:
            return self._removed(self.store.delete_matching(filter_))

    # ---- metadata indexes ----
    def metadata_indexes(self) -> list[str]:
        return self.store.metadata_indexes()

    def create_metadata_index(self, field_name: str) -> bool:
        """Index a metadata field so filters on it read an index instead of every document's metadata;
        False when it was indexed already. Writes wait while a large collection's index is built."""
        check_index(field_name, "field")
        with self._lock:  # the count and the creation in one step: two requests cannot both pass the cap
            have = self.store.metadata_indexes()
            if field_name not in have and len(have) >= MAX_METADATA_INDEXES:
                raise InvalidDocument(
                    f"field: collection {self.name!r} already has {MAX_METADATA_INDEXES} metadata indexes "
                    "(each one slows every write); drop one first"
                )
            return self.store.create_metadata_index(field_name)

    def drop_metadata_index(self, field_name: str) -> bool:
        with self._lock:
            return self.store.drop_metadata_index(field_name)

    def _removed(self, write: Write) -> int:
        self.index.remove(np.asarray(write.remove_vids, dtype=np.int64))
        if write.remove_vids:
            self._after_write(len(write.remove_vids))
        return write.documents

    # ---- search ----
    def search(
        self,
        query_vectors: np.ndarray | None,
        top_k: int,
        filter_: dict[str, Any] | None = None,
        min_relevance: float | None = None,
        *,
        text: str | None = None,
        mode: str = "dense",
        fusion_depth: int = 100,
        fusion_k: int = 60,
        lexical_weight: float = 1.0,
        exclude: Sequence[str] = (),
        exact_count: bool = False,
        params: SearchParams | None = None,
        group: Grouping | None = None,
        diversify: Diversify | None = None,
        min_score: float | None = None,
    ) -> list[SearchResult]:
        """Top-k documents (joined with text and metadata) for each query.

        `mode`: "dense" (the query vectors), "lexical" (BM25 over `text`, one query) or "hybrid"
        (reciprocal rank fusion of the dense and lexical top-`fusion_depth`, the lexical ranks weighted
        by `lexical_weight`, one query). `exclude`: document ids never returned (dense mode; a search
        by a stored document's own vector leaves that document out). `exact_count`: count every
        document the filter matches, however many (by default counting stops at `exact_filter_max`).
        `params`: this search's ANN effort (HNSW ef, IVF nprobe, or exact), else the index's defaults.
        `group`: return the best `top_k` groups of documents sharing a metadata value, `group.size`
        hits each (grouping.py); `hits` then holds their members in group order. `diversify`: dense
        mode, the top_k picked by MMR (diversity.py) from a deeper pool of candidates that passed the
        relevance cut. `min_score`: hits whose raw score (cosine, inner product, -squared L2; BM25 in
        lexical mode) is below it are dropped before calibration, a cut for collections without one.
        """
        if mode not in SEARCH_MODES:
            raise InvalidDocument(f"mode: one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        if mode != "dense" and (text is None or not text.strip()):
            raise InvalidDocument(f"mode: {mode} search needs `query` text")
        if diversify is not None and (mode != "dense" or group is not None):
            raise InvalidDocument("mmr: dense, ungrouped searches only")
        if mode == "lexical":
            assert text is not None
            return [self._lexical(text, top_k, filter_, min_relevance, exact_count, group, min_score)]
        if query_vectors is None:
            raise InvalidDocument(f"query: {mode} search needs a query vector")
        queries = self.index.prepare(query_vectors)
        plan = self.plan_filter(filter_, exact_count) if filter_ else None
        if mode == "hybrid":
            assert text is not None
            return [self._hybrid(queries[:1], text, top_k, plan, min_relevance, fusion_depth, fusion_k,
                                 lexical_weight, params, group, min_score)]
        # A calibrator reads the unfiltered top-n: without a filter, one search of that depth serves both.
        # Its first top_k are the top_k hits (exact and IVF: the same search; HNSW: efSearch is
        # max(ef, k), the same for k up to ef and a wider beam beyond).
        skip = {vector_id(doc_id) for doc_id in exclude}
        if group is not None:
            return self._grouped(queries, top_k, plan, min_relevance, params, skip, group, min_score)
        keep = top_k if diversify is None else max(top_k, diversify.pool(top_k))
        wide = keep + len(skip)
        found = self.nearest(queries, self._depth(wide, plan), plan, params)
        scores, doc_vids = found.scores[:, :wide], found.doc_vids[:, :wide]
        docs = self.store.get_by_vids(np.unique(doc_vids[doc_vids >= 0]).tolist())
        matched: dict[int, int] = {}  # per hit (document vid): the vector that scored it (a chunk's, or its own)
        results = []
        for row in range(len(queries)):
            hits = [
                Hit(d.id, float(s), d.text, d.metadata, int(v), chunk=found.chunk_of(int(best)))
                for s, v, best in zip(scores[row], doc_vids[row], found.vids[row, :wide], strict=True)
                if v >= 0 and int(v) not in skip and (d := docs.get(int(v)))
            ][:keep]
            if diversify is not None:
                matched.update((h.vid, _matched_vid(h)) for h in hits)
            results.append(self._relevance_cut(queries[row], hits, self._deep(found, row, plan), min_relevance,
                                               plan, found.effort, min_score))
        if diversify is not None:
            self._diversified(queries, results, matched, top_k, diversify.diversity)
        return results

    def _diversified(self, queries: np.ndarray, results: list[SearchResult], matched: dict[int, int], top_k: int,
                     diversity: float) -> None:
        """Each result's hits (the candidates that passed the relevance cut) cut to `top_k` by MMR, in
        place; a hit is represented by the vector that matched the query."""
        found, rows = self.store.vectors_for(sorted(set(matched.values())))
        by_vid = dict(zip(found.tolist(), rows, strict=True))
        for query, result in zip(queries, results, strict=True):
            if not result.hits:
                continue
            vectors = np.stack([by_vid.get(matched[h.vid], np.zeros(self.config.dim, np.float32))
                                for h in result.hits])
            result.hits = [result.hits[i] for i in mmr_order(query, vectors, top_k, diversity)]

    def _grouped(
        self, queries: np.ndarray, groups: int, plan: FilterPlan | None, min_relevance: float | None,
        params: SearchParams | None, skip: set[int], group: Grouping, min_score: float | None = None,
    ) -> list[SearchResult]:
        """Dense grouped search: candidates deepened until every query's groups are full (or the index
        has no more, or `GROUP_MAX_DEPTH`), then each group's members as hits. With a metadata index on
        the field, groups the first search opened are completed by one search filtered to their values."""
        depth = group_depth(groups, group.size)
        fields = self.metadata_indexes()  # one schema read per grouped search
        indexed, arrays = group.field in fields, f"{group.field}[]" in fields
        while True:
            wide = depth + len(skip)
            found = self.nearest(queries, self._depth(wide, plan), plan, params)
            ranked = [[d for d in found.doc_vids[row, :wide].tolist() if d >= 0 and d not in skip]
                      for row in range(len(queries))]
            keys = self.store.group_keys(sorted({d for r in ranked for d in r}), group.field)
            picked = [pick(r, keys, groups, group.size) for r in ranked]
            opened = [len(chosen) == groups or len(r) + len(skip) < wide
                      for (chosen, _), r in zip(picked, ranked, strict=True)]
            if indexed and all(opened):
                break  # every group is known: the filtered search below completes them
            done = all(complete or len(r) + len(skip) < wide for (_, complete), r in zip(picked, ranked, strict=True))
            if done or depth >= GROUP_MAX_DEPTH:
                break
            depth = min(GROUP_MAX_DEPTH, depth * GROUP_OVERFETCH)
        scored = [_scored(found, row) for row in range(len(queries))]
        if indexed:
            for row, (chosen, complete) in enumerate(picked):
                if not complete and chosen:
                    scored[row].update(self._complete_groups(queries[row], chosen, group, plan, params, skip,
                                                             arrays))
        chosen_vids = [members(chosen) for chosen, _ in picked]
        docs = self.store.get_by_vids(sorted({v for vids in chosen_vids for v in vids}))
        results = []
        for row, ((chosen, _), vids) in enumerate(zip(picked, chosen_vids, strict=True)):
            hits = [Hit(d.id, scored[row][v][0], d.text, d.metadata, v, chunk=scored[row][v][1])
                    for v in vids if (d := docs.get(v))]
            result = self._relevance_cut(queries[row], hits, self._deep(found, row, plan), min_relevance, plan,
                                         found.effort, min_score)
            results.append(_with_groups(result, chosen, docs))
        return results

    def _complete_groups(
        self, query: np.ndarray, chosen: list[Group], group: Grouping, plan: FilterPlan | None,
        params: SearchParams | None, skip: set[int], arrays: bool,
    ) -> dict[int, tuple[float, ChunkRef | None]]:
        """Fill the short groups (in place) from one search filtered to their values (read from the
        field's metadata index), or one per group when they hold more documents together than an
        exact search takes; returns the candidates' (score, matched chunk). `arrays`: the field also has
        an array index, which matches array elements."""
        short = [g for g in chosen if len(g.vids) < group.size]

        def holding(values: list[Any]) -> dict[str, Any]:
            flt: dict[str, Any] = {group.field: {"$in": values}}
            if arrays:
                flt = {"$or": [flt, *({group.field: {"$contains": v}} for v in values)]}
            return flt if plan is None else {"$and": [plan.filter, flt]}

        union = self.plan_filter(holding([g.value for g in short]))
        if union.allowed is not None:  # few enough documents in all of them: one exact search
            searches = [(short, union, min(GROUP_MAX_DEPTH, max(union.matching, 1)))]
        else:  # a large group among them: one search per group, each only `size` deep
            searches = [([g], self.plan_filter(holding([g.value])), group.size) for g in short]
        scored: dict[int, tuple[float, ChunkRef | None]] = {}
        for targets, sub, k in searches:
            near = self.nearest(query[None, :], k + len(skip), sub, params)
            ranked = [d for d in near.doc_vids[0].tolist() if d >= 0 and d not in skip]
            keys = self.store.group_keys(ranked, group.field)
            for g in targets:
                g.vids = [d for d in ranked if g.key in keys.get(d, ())][: group.size]
            scored.update(_scored(near, 0))
        return scored

    def plan_filter(self, filter_: dict[str, Any], exact_count: bool = False) -> FilterPlan:
        """Read the matches of a filter that has few; of a broad one, only that there are many."""
        allowed, matching = self.store.vids_matching(filter_, limit=self.exact_filter_max if self.post_filter else None)
        if matching < self.exact_filter_max or not self.post_filter:
            return FilterPlan(filter_, matching, True, allowed)
        if exact_count:
            return FilterPlan(filter_, self.store.count_matching(filter_), True)
        return FilterPlan(filter_, matching, False)

    def _depth(self, k: int, plan: FilterPlan | None) -> int:
        """Dense depth: k, or the calibrator's n when it reads this same (unfiltered) list."""
        return max(k, self.calibrator.n_candidates) if self.calibrator is not None and plan is None else k

    def _deep(self, found: Nearest, row: int, plan: FilterPlan | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The unfiltered top-n the calibrator reads, when this search produced it (unfiltered, or
        post-filtered from a deep enough unfiltered list); else the calibrator searches for it."""
        if self.calibrator is None:
            return None
        n = self.calibrator.n_candidates
        source = found if plan is None else found.unfiltered
        if source is None or source.scores.shape[1] < n:
            return None
        return source.scores[row, :n], source.vids[row, :n]

    def _relevance_cut(
        self,
        query: np.ndarray,
        hits: list[Hit],
        deep: tuple[np.ndarray, np.ndarray] | None,
        min_relevance: float | None,
        plan: FilterPlan | None,
        effort: EffortUsed | None = None,
        min_score: float | None = None,
    ) -> SearchResult:
        """The score cut (`min_score`, when asked), calibrated relevance on each hit left, then the relevance
        cut (the request's, else the fitted threshold)."""
        candidates = len(hits)
        hits, score_filtered = _score_cut(hits, min_score)
        cut = min_relevance
        if self.calibrator is not None:
            hits = self.calibrator.calibrate(query, hits, deep)
            cut = self.calibrator.threshold if cut is None else cut
        if cut is not None and self.calibrator is None:
            if cut > 0:
                raise InvalidDocument(f"min_relevance: collection {self.name!r} has no relevance calibration fitted")
            cut = None  # 0 keeps every hit, calibrated or not: one request serves any collection
        if cut is not None:
            hits = [h for h in hits if h.relevance is not None and h.relevance >= cut]
        matching, exact = (None, None) if plan is None else (plan.matching, plan.exact)
        return SearchResult(hits, candidates, matching, exact, cut, candidates - score_filtered - len(hits), effort,
                            score_filtered=score_filtered)

    def _lexical(
        self, text: str, top_k: int, filter_: dict[str, Any] | None, min_relevance: float | None,
        exact_count: bool = False, group: Grouping | None = None, min_score: float | None = None,
    ) -> SearchResult:
        """BM25 hits; calibration maps cosine scores, so lexical hits carry no relevance. Grouped: the
        groups of the BM25 top `GROUP_MAX_DEPTH` at most (one ranking, read once)."""
        if min_relevance:  # 0 keeps every hit, which lexical search does anyway
            raise InvalidDocument("min_relevance: lexical search has no calibrated relevance (use mode hybrid)")
        depth = top_k if group is None else GROUP_MAX_DEPTH
        try:
            scores, vids = self.store.lexical_search(text, depth, filter_)
        except LexicalUnavailable as exc:
            raise InvalidDocument(f"mode: {exc}") from None
        chosen: list[Group] | None = None
        if group is not None:
            ranked = vids.tolist()
            chosen = pick(ranked, self.store.group_keys(ranked, group.field), top_k, group.size)[0]
            by_vid = {int(v): float(sc) for sc, v in zip(scores, vids, strict=True)}
            vids = np.asarray(members(chosen), np.int64)
            scores = np.asarray([by_vid[int(v)] for v in vids], np.float32)
        docs = self.store.get_by_vids(vids.tolist())
        hits = [Hit(d.id, float(s), d.text, d.metadata, int(v), lexical_score=float(s))
                for s, v in zip(scores, vids, strict=True) if (d := docs.get(int(v)))]
        kept, score_filtered = _score_cut(hits, min_score)
        result = SearchResult(kept, len(hits), score_filtered=score_filtered)
        if filter_ and exact_count:
            result.filtered_count, result.filtered_count_exact = self.store.count_matching(filter_), True
        elif filter_:
            matching = self.store.count_matching(filter_, limit=self.exact_filter_max)
            result.filtered_count, result.filtered_count_exact = matching, matching < self.exact_filter_max
        return result if chosen is None else _with_groups(result, chosen, docs)

    def _hybrid(
        self,
        query: np.ndarray,
        text: str,
        top_k: int,
        plan: FilterPlan | None,
        min_relevance: float | None,
        depth: int,
        rrf_k: int,
        lexical_weight: float = 1.0,
        params: SearchParams | None = None,
        group: Grouping | None = None,
        min_score: float | None = None,
    ) -> SearchResult:
        """Reciprocal rank fusion: each document scores sum(w / (rrf_k + rank)) over the two rankings
        (w = 1 for the dense one, `lexical_weight` for the lexical one).

        Every fused hit keeps its cosine `score` (exact, from the stored vectors, for documents only
        the lexical side found), so calibration reads it as it reads a dense hit's. Grouped: the groups
        of the fused list, both rankings read `group_depth` deep, then 4x deeper while a group is short
        and either ranking has more (up to `GROUP_MAX_DEPTH`).
        """
        depth = max(depth, top_k if group is None else group_depth(top_k, group.size))
        chosen: list[Group] | None = None
        while True:
            found = self.nearest(query, self._depth(depth, plan), plan, params)
            try:
                lex_scores, lex_vids = self.store.lexical_search(text, depth, None if plan is None else plan.filter)
            except LexicalUnavailable as exc:
                raise InvalidDocument(f"mode: {exc}") from None
            fused, dense, lexical = _fused(found, depth, lex_scores, lex_vids, rrf_k, lexical_weight)
            order = sorted(fused, key=lambda d: -fused[d])
            if group is None:
                order = order[:top_k]
                break
            chosen, complete = pick(order, self.store.group_keys(order, group.field), top_k, group.size)
            more = int((found.doc_vids[0, :depth] >= 0).sum()) == depth or len(lexical) == depth
            if complete or not more or depth >= GROUP_MAX_DEPTH:
                break
            depth = min(GROUP_MAX_DEPTH, depth * GROUP_OVERFETCH)  # a group is short: both rankings deeper
        if chosen is not None:
            order = members(chosen)
        dense.update(self._exact_document_scores(query[0], [d for d in order if d not in dense]))
        exact_refs = self.store.chunk_refs([dense[d][1] for d in order if d in dense])
        refs = {**found.chunks, **{vid: ref for vid, (_, ref) in exact_refs.items()}}
        docs = self.store.get_by_vids(order)
        hits = [
            Hit(doc.id, dense[d][0], doc.text, doc.metadata, d, chunk=refs.get(dense[d][1]),
                lexical_score=lexical.get(d), fused_score=fused[d])
            for d in order if (doc := docs.get(d)) and d in dense
        ]
        result = self._relevance_cut(query[0], hits, self._deep(found, 0, plan), min_relevance, plan, found.effort,
                                     min_score)
        return result if chosen is None else _with_groups(result, chosen, docs)

    def _exact_document_scores(self, query: np.ndarray, doc_vids: list[int]) -> dict[int, tuple[float, int]]:
        """(score, best vector id) of each document, its chunks included, from the stored vectors."""
        if not doc_vids:
            return {}
        owner = {d: d for d in doc_vids}
        for doc, extra in self.store.chunk_vids(doc_vids).items():
            owner.update((v, doc) for v in extra)
        scores, vids = self._exact_over(query[None, :], np.asarray(list(owner), np.int64), len(owner))
        out: dict[int, tuple[float, int]] = {}
        for s, vid in zip(scores[0].tolist(), vids[0].tolist(), strict=True):
            if vid >= 0 and owner[vid] not in out:  # best first: a document's first vector is its best
                out[owner[vid]] = (float(s), vid)
        return out

    def nearest(
        self, queries: np.ndarray, k: int, plan: FilterPlan | None = None, params: SearchParams | None = None
    ) -> Nearest:
        """The k best documents per query, a document scoring as its best chunk (max over chunks).

        A collection without chunked documents is one vector search. Otherwise the vector search is
        widened until each query has k distinct documents (or every allowed vector was ranked).
        A broad filter (`plan` without its matches read) is applied after an unfiltered search.
        """
        queries = self.index.prepare(queries)
        if plan is not None and plan.allowed is None:
            found = self._post_filtered(queries, k, plan, params)
            if found is not None:
                return found
            plan.allowed = self.store.vids_matching(plan.filter)[0]  # the fallback: read every match
        allowed = None if plan is None else plan.allowed
        if not self._chunked:
            scores, vids, effort = self._vector_search(queries, k, allowed, params)
            return Nearest(scores, vids, vids, {}, effort=effort)
        available = len(self.index) if allowed is None else len(allowed)
        fetch = min(max(2 * k, k + 16), max(available, k))
        while True:
            scores, vids, effort = self._vector_search(queries, fetch, allowed, params)
            refs = self.store.chunk_refs(np.unique(vids[vids >= 0]).tolist())
            out_s = np.full((len(queries), k), -np.inf, np.float32)
            out_d = np.full((len(queries), k), -1, np.int64)
            out_v = np.full((len(queries), k), -1, np.int64)
            short = False
            for row in range(len(queries)):
                seen: set[int] = set()
                for s, v in zip(scores[row], vids[row], strict=True):
                    if v < 0 or len(seen) == k:
                        continue
                    doc = refs[int(v)][0] if int(v) in refs else int(v)
                    if doc in seen:
                        continue
                    out_s[row, len(seen)], out_d[row, len(seen)], out_v[row, len(seen)] = s, doc, v
                    seen.add(doc)
                short = short or len(seen) < k
            if not short or fetch >= available:
                return Nearest(out_s, out_d, out_v, {v: ref for v, (_, ref) in refs.items()}, effort=effort)
            fetch = min(2 * fetch, available)

    def _post_filtered(
        self, queries: np.ndarray, k: int, plan: FilterPlan, params: SearchParams | None = None
    ) -> Nearest | None:
        """The k best documents the filter passes, from unfiltered searches deepened until every row
        has k (see filter_plan); None when the filter passes too few of them to be found this way."""
        vectors = len(self.index)
        depth = first_depth(k, plan.matching, vectors)
        if self.calibrator is not None:  # one list serves both: the calibrator reads the unfiltered top-n
            depth = min(vectors, max(depth, self.calibrator.n_candidates))
        cheap_read = self.store.reads_from_indexes(plan.filter)  # else reading every match is a scan
        while True:
            found = self.nearest(queries, depth, params=params)
            passing = set(self.store.documents_passing(plan.filter, np.unique(found.doc_vids[found.doc_vids >= 0]))
                          .tolist())
            out_s = np.full((len(queries), k), -np.inf, np.float32)
            out_d = np.full((len(queries), k), -1, np.int64)
            out_v = np.full((len(queries), k), -1, np.int64)
            fewest, passed = k, 0
            for row in range(len(queries)):
                cols = [c for c, d in enumerate(found.doc_vids[row].tolist()) if d in passing]
                passed += len(cols)
                cols = cols[:k]
                out_s[row, : len(cols)] = found.scores[row, cols]
                out_d[row, : len(cols)] = found.doc_vids[row, cols]
                out_v[row, : len(cols)] = found.vids[row, cols]
                fewest = min(fewest, len(cols))
            if fewest == k or depth >= vectors:  # every row has k, or every vector was ranked
                return Nearest(out_s, out_d, out_v, found.chunks, unfiltered=found, effort=found.effort)
            deeper = next_depth(k, depth, fewest, vectors, passed / len(queries) if cheap_read else None)
            if deeper is None:
                return None
            depth = deeper

    def _vector_search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, params: SearchParams | None = None
    ) -> tuple[np.ndarray, np.ndarray, EffortUsed]:
        """Top-k vectors: exact over a small allowed set, else the ANN index (exact if a probe came back
        short); with what it ran."""
        exact = EffortUsed(self.index.kind, None, None, True)
        if allowed is not None and len(allowed) < self.exact_filter_max:
            return *self._exact_over(queries, allowed, k), exact
        if params is not None and params.exact and not self.index.searches_exactly:
            return *self._exact_over(queries, self.index.live_vids() if allowed is None else allowed, k), exact
        params = params or SearchParams()
        if allowed is not None and self.index.kind == "hnsw" and params.ef is None:  # (an `ef` asked for stands)
            params = replace(params, ef=filtered_ef(k, len(allowed), len(self.index), self.index.ef_search))
        fetch = k
        if self.index.kind == "ivf_pq" and params.rescore and not params.exact:
            fetch = k * (params.oversample or RESCORE_OVERSAMPLE)
        scores, vids = self.index.search(queries, fetch, allowed, params)
        if allowed is not None and (vids[:, :k] < 0).any() and len(allowed) > (vids >= 0).sum(1).min():
            return *self._exact_over(queries, allowed, k), exact  # an IVF probe missed filtered docs
        effort = self.index.effort(k, params)
        if fetch > k:
            scores, vids = self._rescored(queries, vids, k)
            effort = replace(effort, rescored=fetch)
        return scores, vids, effort

    def document_vectors(self, doc_vids: Sequence[int]) -> dict[int, np.ndarray]:
        """Each stored document's vector as a whole (missing ones are absent): its own, or for a chunked
        document the mean of its chunks' (unit chunks first on cosine collections), which reads the
        whole text where chunk 0 alone reads its opening."""
        extra = self.store.chunk_vids(doc_vids)
        found, rows = self.store.vectors_for([*doc_vids, *(v for vids in extra.values() for v in vids)])
        by_vid = dict(zip(found.tolist(), rows, strict=True))
        out: dict[int, np.ndarray] = {}
        for vid in doc_vids:
            if (own := by_vid.get(int(vid))) is None:
                continue
            parts = np.stack([own, *(by_vid[c] for c in extra.get(int(vid), ()) if c in by_vid)])
            if len(parts) > 1 and self.config.metric == "cosine":
                parts = parts / np.maximum(np.linalg.norm(parts, axis=1, keepdims=True), 1e-12)
            out[int(vid)] = parts.mean(axis=0).astype(np.float32)
        return out

    def _similarities(self, queries: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(queries, vectors) scores in the index's convention: higher is better for every metric."""
        if self.config.metric == "l2":
            return -((queries[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return queries @ x.T

    def _rescored(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's best k of its candidates, by exact scores on the stored vectors."""
        wanted = np.unique(candidates[candidates >= 0])
        found, vectors = self.store.vectors_for(wanted.tolist())
        order = np.argsort(found)
        found, x = found[order], self.index.prepare(vectors[order]) if len(found) else vectors
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_v = np.full((len(queries), k), -1, np.int64)
        for row, cand in enumerate(candidates):
            cand = cand[cand >= 0]
            pos = np.searchsorted(found, cand)
            held = pos < len(found)
            held[held] = found[pos[held]] == cand[held]  # a candidate the store no longer holds is dropped
            cand, pos = cand[held], pos[held]
            sims = self._similarities(queries[row : row + 1], x[pos])[0]
            best = np.argsort(-sims, kind="stable")[:k]
            out_s[row, : len(best)], out_v[row, : len(best)] = sims[best], cand[best]
        return out_s, out_v

    def _exact_over(self, queries: np.ndarray, vids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k restricted to `vids` (filters lose nothing), on the index's own vectors when it
        keeps them uncompressed, else on the store's."""
        out_s = np.full((len(queries), k), -np.inf, np.float32)
        out_v = np.full((len(queries), k), -1, np.int64)
        for start in range(0, len(vids), EXACT_BLOCK):
            part = vids[start : start + EXACT_BLOCK]
            held = self.index.exact_vectors(part)  # from memory when the index keeps them whole
            found, vectors = held if held is not None else self.store.vectors_for(part)
            if not len(found):
                continue
            x = vectors if held is not None else self.index.prepare(vectors)
            sims = self._similarities(queries, x)
            all_v = np.broadcast_to(found, sims.shape)
            if sims.shape[1] > k:  # keep each row's best k before merging: a partition, not a sort
                best = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                sims, all_v = np.take_along_axis(sims, best, 1), np.take_along_axis(all_v, best, 1)
            all_s = np.concatenate([out_s, sims], axis=1)
            all_v = np.concatenate([out_v, all_v], axis=1)
            order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            out_s = np.take_along_axis(all_s, order, 1)
            out_v = np.take_along_axis(all_v, order, 1)
        out_v[~np.isfinite(out_s)] = -1
        return out_s, out_v

    # ---- reporting ----
    def stats(self) -> dict[str, Any]:
        return {
            **asdict(self.config),
            "status": "ready",
            "count": self.store.count(),
            "indexed": len(self.index),
            "built_kind": self.index.kind,
            "snapshot_seq": self.snapshot_seq,
            "store_seq": self.store.last_seq,
            "calibrated": self.calibrator is not None,
            "chunks": self.store.chunk_count(),
            "metadata_indexes": self.metadata_indexes(),
        }


def _fused(found: Nearest, depth: int, lex_scores: np.ndarray, lex_vids: np.ndarray, rrf_k: int,
           lexical_weight: float) -> tuple[dict[int, float], dict[int, tuple[float, int]], dict[int, float]]:
    """Reciprocal rank fusion of the dense top `depth` and the BM25 ranking: each document's fused
    score, the dense side's (score, best vector id), and the lexical side's BM25 score."""
    fused: dict[int, float] = {}
    dense: dict[int, tuple[float, int]] = {}
    for rank, (s, doc, best) in enumerate(
        zip(found.scores[0, :depth], found.doc_vids[0, :depth], found.vids[0, :depth], strict=True)
    ):
        if doc >= 0:
            fused[int(doc)] = fused.get(int(doc), 0.0) + 1.0 / (rrf_k + rank + 1)
            dense[int(doc)] = (float(s), int(best))
    lexical = {int(v): float(s) for s, v in zip(lex_scores, lex_vids, strict=True)}
    for rank, doc in enumerate(lexical):
        fused[doc] = fused.get(doc, 0.0) + lexical_weight / (rrf_k + rank + 1)
    return fused, dense, lexical


def _score_cut(hits: list[Hit], min_score: float | None) -> tuple[list[Hit], int]:
    """Hits whose raw score reaches `min_score` (all when None), and how many fell short."""
    if min_score is None:
        return hits, 0
    kept = [h for h in hits if h.score >= min_score]
    return kept, len(hits) - len(kept)


def _matched_vid(hit: Hit) -> int:
    """The vector id of the chunk that scored a hit (the document's own for chunk 0 or no chunks)."""
    return hit.vid if hit.chunk is None or hit.chunk.part == 0 else chunk_vector_id(hit.id, hit.chunk.part)


def _scored(found: Nearest, row: int) -> dict[int, tuple[float, ChunkRef | None]]:
    """Document vector id -> (score, matched chunk) of one row of a search."""
    cols = zip(found.scores[row].tolist(), found.doc_vids[row].tolist(), found.vids[row].tolist(), strict=True)
    return {d: (s, found.chunk_of(v)) for s, d, v in reversed(list(cols)) if d >= 0}  # a document's best wins


def _with_groups(result: SearchResult, chosen: list[Group], docs: dict[int, Document]) -> SearchResult:
    """The groups of a grouped search, holding the members that survived the relevance cut."""
    kept = {h.vid for h in result.hits}
    groups = [(g.value, [docs[v].id for v in g.vids if v in kept]) for g in chosen]
    result.groups = [(value, ids) for value, ids in groups if ids]
    return result


def _index_fields(fields: Sequence[str]) -> list[str]:
    """Metadata index fields of a new collection, checked (and deduplicated) before anything is made."""
    if len(set(fields)) > MAX_METADATA_INDEXES:
        raise InvalidDocument(f"metadata_indexes: at most {MAX_METADATA_INDEXES} fields")
    return list(dict.fromkeys(check_index(f, f"metadata_indexes[{i}]") for i, f in enumerate(fields)))


def _prepared_chunks(index: VectorIndex, chunks: Sequence[Sequence[Chunk]]) -> list[list[Chunk]]:
    """Chunk vectors validated and normalised like document vectors, in one pass."""
    given = [c.vector for parts in chunks for c in parts if c.vector is not None]
    if not given:
        return [list(parts) for parts in chunks]
    prepared = iter(index.prepare(np.stack(given)))
    return [[c if c.vector is None else Chunk(c.start, c.end, next(prepared)) for c in parts] for parts in chunks]


def _check_manifest(folder: Path, manifest: dict[str, Any], config: CollectionConfig) -> None:
    for key in ("model", "dim", "metric"):
        if manifest.get(key) != getattr(config, key):
            raise SnapshotError(
                f"{folder / 'manifest.json'}: {key} {manifest.get(key)!r} does not match the store's "
                f"{getattr(config, key)!r}"
            )
    if "seq" not in manifest or "built_kind" not in manifest:
        raise SnapshotError(f"{folder / 'manifest.json'}: missing seq/built_kind")


def _build_from_store(store: DocumentStore, config: CollectionConfig, device: str) -> VectorIndex:
    def batches() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        return store.iter_vectors(since_seq=0)

    return VectorIndex.build(config.dim, config.metric, config.index_kind, store.vector_count(), batches, device)

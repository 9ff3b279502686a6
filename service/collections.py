"""CollectionService: the collections API over `indexing.CollectionCatalog` and the embedder.

Blocking work (SQLite, FAISS) runs in worker threads; text goes through the shared
`EmbeddingService` batcher (documents with input_type=document, queries with input_type=query).
Indexing-layer errors are mapped here, once, onto the service's error hierarchy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import faiss
import numpy as np

from indexing.ann import SearchParams
from indexing.backup import (
    BACKUP_FILE,
    BackupError,
    archive,
    backup_folder,
    backup_path,
    fill_from_backup,
    list_backups,
    read_backup,
)
from indexing.batch import read_jsonl
from indexing.calibration.serving import (
    attach_stored_calibration,
    calibration_removed,
    install_calibration,
)
from indexing.calibration.shipped import shipped_calibration
from indexing.catalog import CollectionCatalog
from indexing.chunks import assemble, plan_chunks, resolve_chunking, stored_chunks
from indexing.collection import Collection, CollectionConfig, Hit, SearchResult
from indexing.diversity import Diversify
from indexing.errors import (
    CollectionExists,
    CollectionNotFound,
    CollectionUnavailable,
    IndexingError,
    InvalidCollectionName,
    InvalidDocument,
)
from indexing.facets import FacetValue
from indexing.feedback import default_query_id
from indexing.filters import check_field
from indexing.grouping import Grouping
from indexing.relevance_feedback import MAX_EXAMPLES, rocchio
from indexing.store import Chunk, Document, chunk_vector_id, embedding_key, vector_id
from service.embedding import EmbeddingService
from service.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
)
from service.schemas.collections import DocumentIn, SearchRequest, SearchRerank
from service.schemas.feedback import FeedbackRequest
from service.settings import Settings
from service.timing import StageTimings

log = logging.getLogger(__name__)
T = TypeVar("T")
DEMO_CORPUS = Path(__file__).parent / "demo" / "demo_corpus.jsonl"

# The rerank cascade's seam: (query text, hits, stage) -> (reordered hits with rerank_score, report).
RerankStage = Callable[[str, list[Hit], SearchRerank], Awaitable[tuple[list[Hit], Any]]]


def _params_of(req: SearchRequest) -> SearchParams | None:
    """The request's ANN effort as the index layer takes it (hashable: batch searches group by it)."""
    p = req.search_params
    return None if p is None else SearchParams(p.ef, p.nprobe, p.exact, p.rescore, p.oversample)


def _excluded(req: SearchRequest) -> list[str]:
    """Documents a search leaves out of its hits: the ones it searches by (`document_id`, examples)."""
    return [*([req.document_id] if req.document_id is not None else []), *(req.like or []), *(req.unlike or [])]


def _grouping_of(req: SearchRequest) -> Grouping | None:
    return None if req.group_by is None else Grouping(req.group_by, req.group_size)


def _paged(req: SearchRequest, result: SearchResult) -> SearchResult:
    """The page `offset` asks for: hits (or groups, with their members) past the first `offset`."""
    if not req.offset:
        return result
    if result.groups is None:
        result.hits = result.hits[req.offset : req.offset + req.top_k]
        return result
    result.groups = result.groups[req.offset : req.offset + req.top_k]
    kept = {doc_id for _, ids in result.groups for doc_id in ids}
    result.hits = [h for h in result.hits if h.id in kept]
    return result


def _diversify_of(req: SearchRequest) -> Diversify | None:
    return None if req.mmr is None else Diversify(req.mmr.diversity, req.mmr.candidates)


@contextmanager
def _named(i: int) -> Iterator[None]:
    """Prefix an indexing-layer input error with the batch position it came from."""
    try:
        yield
    except InvalidDocument as exc:
        raise InvalidRequest(f"searches[{i}].{exc}") from None


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except CollectionNotFound as exc:
        raise NotFound(str(exc)) from None
    except CollectionExists as exc:
        raise Conflict(str(exc)) from None
    except CollectionUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from None
    except (InvalidCollectionName, InvalidDocument) as exc:
        raise InvalidRequest(str(exc)) from None
    except BackupError as exc:  # a damaged or incomplete backup: the request was fine, the files are not
        raise Unprocessable(str(exc)) from None
    except IndexingError as exc:  # any other indexing error is still about this request's input
        raise InvalidRequest(str(exc)) from None
    except sqlite3.ProgrammingError:  # the collection was deleted (its store closed) mid-request
        raise ServiceUnavailable("collection was deleted or reloaded during the request; retry") from None


@dataclass
class _DocumentVectors:
    """An upsert's vectors: per document its vector and chunks, which were cut (not embedded whole),
    the embedding keys of the texts the server embeds, and which of them kept their stored vectors."""

    vectors: np.ndarray
    chunks: list[list[Chunk]]
    cut: set[int] = field(default_factory=set)
    keys: dict[int, str] = field(default_factory=dict)
    reused: set[int] = field(default_factory=set)


class CollectionService:
    """Owns the catalog; one public coroutine per endpoint."""

    def __init__(self, settings: Settings, embedding: EmbeddingService) -> None:
        self.settings = settings
        self.embedding = embedding
        self.catalog = CollectionCatalog(settings.data_dir, settings.snapshot_every, settings.index_device)
        self.catalog.on_open.append(attach_stored_calibration)  # relevance calibration from the manifest
        self.rerank_stage: RerankStage | None = None
        self.opened = False

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking SQLite/FAISS work in a worker thread with the configured OpenMP threads.

        OpenMP's thread count is per calling thread, so it is set in the worker itself.
        """
        threads = self.settings.faiss_threads

        def call() -> T:
            faiss.omp_set_num_threads(threads)
            return fn(*args)

        return await anyio.to_thread.run_sync(call)

    # ---- lifecycle ----
    async def start(self) -> None:
        """Open every collection on disk (broken ones are reported, not fatal), then the demo."""
        errors = await self._in_worker(self.catalog.open_all)
        for name, error in errors.items():
            if error:
                log.error("collection %s is unavailable: %s", name, error)
        if self.settings.demo_collection:
            if self.settings.demo_collection_name not in self.catalog.names():
                await self.index_demo()
            elif await self._demo_in_another_space():
                await self.index_demo()
            else:
                await self._calibrate_existing_demo()
        self.opened = True

    def stop(self) -> None:
        self.catalog.close()

    async def index_demo(self) -> None:
        """Create and fill the demo collection from the shipped corpus, so a search answers at once."""
        rows = read_jsonl(DEMO_CORPUS)
        config = CollectionConfig(self.settings.demo_collection_name, self.embedding.space, self.embedding.dim)
        await self.create(self.chunking_for(config, None, None))
        docs = [DocumentIn(id=r["id"], text=r["text"], metadata=r.get("metadata", {})) for r in rows]
        await self.upsert(self.settings.demo_collection_name, docs)
        log.info("indexed the demo collection %r (%d documents)", self.settings.demo_collection_name, len(docs))
        await self._install_demo_calibration(self.collection(self.settings.demo_collection_name))

    async def _demo_in_another_space(self) -> bool:
        """A demo embedded by another model or TempScale temperature is rebuilt (it is shipped data).

        Its text searches would otherwise be refused (or, worse, compare vectors of two spaces).
        """
        try:
            coll = self.catalog.get(self.settings.demo_collection_name)
        except IndexingError:
            return False
        if self._in_served_space(coll):
            return False
        log.warning("demo collection was embedded as %r, the server embeds as %r: rebuilding it",
                    coll.config.model, self.embedding.space)
        await self.delete(self.settings.demo_collection_name)
        return True

    async def _calibrate_existing_demo(self) -> None:
        """Give a demo collection left by an older rrs the shipped calibration it was created without.

        Only when it has none: a fitted one is never replaced, and one removed with DELETE (the
        manifest records that) stays removed.
        """
        try:
            coll = self.catalog.get(self.settings.demo_collection_name)
        except IndexingError:  # unavailable: already reported by open_all
            return
        if coll.calibrator is None and not await self._in_worker(calibration_removed, coll):
            await self._install_demo_calibration(coll)

    async def _install_demo_calibration(self, coll: Collection) -> None:
        if not self.settings.demo_calibration:
            return
        shipped = shipped_calibration(coll.config.model, coll.config.dim)
        if shipped is None:
            return
        calibration = await self._in_worker(install_calibration, coll, shipped)
        log.info("demo collection: shipped calibration installed (min_relevance %.3f)", calibration.threshold)

    # ---- collections ----
    def chunking_for(self, config: CollectionConfig, tokens: int | None, overlap: int | None) -> CollectionConfig:
        """The config with its chunking settled: the served model's window by default, off with 0.

        A collection of another model holds client vectors, which are never chunked.
        """
        if not (config.model in self.embedding.space_aliases and config.dim == self.embedding.dim):
            if tokens or overlap:
                raise InvalidRequest(
                    f"chunk_tokens: collection model {config.model!r} is not the served "
                    f"{self.embedding.space!r}; its documents come as vectors and cannot be chunked"
                )
            return replace(config, chunk_tokens=None, chunk_overlap=0)
        try:
            chunk_tokens, chunk_overlap = resolve_chunking(self.embedding.chunk_budget(), tokens, overlap)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        return replace(config, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)

    async def create(self, config: CollectionConfig, metadata_indexes: Sequence[str] = ()) -> dict[str, Any]:
        with _mapped_errors():
            coll = await self._in_worker(self.catalog.create, config, metadata_indexes)
            return self.catalog.describe(coll.name)

    async def create_metadata_index(self, name: str, field_name: str) -> tuple[bool, list[str]]:
        """Index a metadata field (built in a worker thread: on a large collection it takes a while)."""
        with _mapped_errors():
            coll = self.catalog.get(name)
            created = await self._in_worker(coll.create_metadata_index, field_name)
            return created, coll.metadata_indexes()

    async def drop_metadata_index(self, name: str, field_name: str) -> None:
        with _mapped_errors():
            coll = self.catalog.get(name)
            if not await self._in_worker(coll.drop_metadata_index, field_name):
                raise NotFound(f"field: collection {name!r} has no metadata index on {field_name!r}")

    def list(self) -> list[dict[str, Any]]:
        return [self.catalog.describe(name) for name in self.catalog.names()]

    def gauges(self) -> list[dict[str, Any]]:
        """Every collection's stats for /metrics; one deleted or closing meanwhile is skipped, not an error."""
        out = []
        for name in self.catalog.names():
            try:
                out.append(self.catalog.describe(name))
            except (IndexingError, sqlite3.Error):
                continue
        return out

    def describe(self, name: str) -> dict[str, Any]:
        with _mapped_errors():
            return self.catalog.describe(name)

    async def delete(self, name: str) -> None:
        with _mapped_errors():
            await self._in_worker(self.catalog.delete, name)

    async def reload(self, name: str, rebuild: bool = False) -> dict[str, Any]:
        with _mapped_errors():
            coll = await self._in_worker(self.catalog.reload, name, rebuild)
            return self.catalog.describe(coll.name)

    # ---- backups ----
    @property
    def backup_root(self) -> Path:
        return self.settings.backups_path

    def _backup(self, backup_id: str) -> Path:
        """The folder of a complete backup; a malformed id is a 400, a missing one a 404."""
        path = backup_path(self.backup_root, backup_id)
        if not (path / BACKUP_FILE).exists():
            raise NotFound(f"backup {backup_id!r} does not exist")
        return path

    async def backup(self, name: str, include_index: bool = True) -> dict[str, Any]:
        """A consistent copy of the collection's store (and feedback log, and index snapshot), taken
        while it serves."""
        with _mapped_errors():
            coll = self.catalog.get(name)
            return await self._in_worker(backup_folder, coll.folder, coll.name, self.backup_root, include_index)

    def backups(self, collection: str | None = None) -> list[dict[str, Any]]:
        found = list_backups(self.backup_root)
        return [b for b in found if collection is None or b["collection"] == collection]

    async def restore(self, backup_id: str, name: str) -> dict[str, Any]:
        """A new collection `name` from a backup (checked against its checksums first)."""
        with _mapped_errors():
            path = self._backup(backup_id)

            def run() -> Collection:
                info = read_backup(path)
                return self.catalog.adopt(name, lambda target: fill_from_backup(info, path, target, name))

            coll = await self._in_worker(run)
            return self.catalog.describe(coll.name)

    def backup_archive(self, backup_id: str) -> tuple[int, Iterator[bytes]]:
        """A backup as a tar stream (its length and bytes), to keep a copy off this machine."""
        with _mapped_errors():
            return archive(self._backup(backup_id), backup_id.replace("/", "-"))

    async def delete_backup(self, backup_id: str) -> None:
        with _mapped_errors():
            await self._in_worker(shutil.rmtree, self._backup(backup_id))

    # ---- aliases ----
    def aliases(self) -> dict[str, str]:
        return self.catalog.aliases.items()

    async def point_alias(self, alias: str, collection: str) -> str | None:
        """Create or move an alias (an atomic file replace, off the event loop: it fsyncs)."""
        with _mapped_errors():
            return await self._in_worker(self.catalog.point_alias, alias, collection)

    async def remove_alias(self, alias: str) -> str:
        with _mapped_errors():
            return await self._in_worker(self.catalog.remove_alias, alias)

    def resolve(self, name: str) -> str:
        """The collection `name` means (an alias's target, else itself); a bad name is a 400."""
        with _mapped_errors():
            return self.catalog.resolve(name)

    def collection(self, name: str) -> Collection:
        with _mapped_errors():
            return self.catalog.get(name)

    # ---- documents ----
    async def upsert(self, name: str, documents: list[DocumentIn]) -> tuple[list[str], list[str], int]:
        """Store documents; returns their ids, the ids whose text was cut to the model's max length, and
        how many kept their stored vectors (same text as stored: nothing embedded)."""
        coll = self.collection(name)
        self._check_documents([d.id for d in documents])
        made = await self._document_vectors(coll, documents)
        docs = [
            Document(d.id, d.text, d.metadata, embedding_key=made.keys.get(i), embedding_cut=i in made.cut)
            for i, d in enumerate(documents)
        ]
        with _mapped_errors():
            await self._in_worker(coll.upsert, docs, made.vectors, made.chunks)
        return [d.id for d in documents], [documents[i].id for i in sorted(made.cut)], len(made.reused)

    def _embedding_key(self, coll: Collection, text: str) -> str:
        c = coll.config
        return embedding_key(c.model, c.dim, c.chunk_tokens, c.chunk_overlap, self.settings.max_chunks_per_document,
                             text)

    async def _document_vectors(self, coll: Collection, documents: list[DocumentIn]) -> _DocumentVectors:
        """Given vectors where sent, embeddings of the text otherwise (batched, on the bulk lane).

        A chunked collection embeds each chunk of a long text; chunk 0 is the document's vector. A
        document stored with the same text, embedded by this server under the same model and
        chunking (the same embedding key), keeps its stored vectors and is not embedded again.
        """
        made = _DocumentVectors(np.zeros((len(documents), coll.config.dim), dtype=np.float32),
                                [[] for _ in documents])
        to_embed: list[int] = []
        for i, doc in enumerate(documents):
            if doc.vector is not None:
                if len(doc.vector) != coll.config.dim:
                    raise InvalidRequest(
                        f"documents[{i}].vector: expected dimension {coll.config.dim}, got {len(doc.vector)}"
                    )
                made.vectors[i] = doc.vector
            elif not doc.text.strip():
                raise InvalidRequest(f"documents[{i}]: needs a non-empty `text` or a `vector`")
            else:
                to_embed.append(i)
        if not to_embed:
            return made
        self._check_embeddable(coll, "documents")
        made.keys = {i: self._embedding_key(coll, documents[i].text) for i in to_embed}
        with _mapped_errors():
            stored = await self._in_worker(coll.store.reusable, {documents[i].id: made.keys[i] for i in to_embed})
        for i in to_embed:
            if (old := stored.get(documents[i].id)) is not None:
                made.vectors[i] = old.vector
                made.chunks[i] = old.chunks
                if old.cut:
                    made.cut.add(i)
                made.reused.add(i)
        to_embed = [i for i in to_embed if i not in made.reused]
        if not to_embed:
            return made
        chunks: list[list[Chunk]] = [[] for _ in documents]
        texts = [documents[i].text for i in to_embed]
        if coll.config.chunk_tokens:
            spans = await self.embedding.split(texts, coll.config.chunk_tokens, coll.config.chunk_overlap)
        else:
            spans = [[(0, len(t))] for t in texts]
        plan = plan_chunks(to_embed, spans, self.settings.max_chunks_per_document)
        made.cut.update(plan.capped)
        step = self.settings.max_inputs_per_request
        for start in range(0, len(plan.pieces), step):
            batch = plan.pieces[start : start + step]
            result = await self.embedding.embed(
                [documents[p.doc].text[p.start : p.end] for p in batch],
                input_type="document", use_cache=False, bulk=True,
            )
            made.cut.update(batch[j].doc for j in result.truncated)
            assemble(batch, result.vectors, made.vectors, chunks)
        for i, doc_chunks in zip(to_embed, stored_chunks([chunks[i] for i in to_embed]), strict=True):
            made.chunks[i] = doc_chunks
        return made

    def _in_served_space(self, coll: Collection) -> bool:
        """The collection holds vectors of the space the server embeds text into (model, TempScale, dim)."""
        return coll.config.model in self.embedding.space_aliases and coll.config.dim == self.embedding.dim

    def _check_embeddable(self, coll: Collection, field: str) -> None:
        if not self._in_served_space(coll):
            raise InvalidRequest(
                f"{field}: collection {coll.name!r} uses model {coll.config.model!r} "
                f"(dim {coll.config.dim}), "
                f"not the served {self.embedding.space!r}; send vectors instead of text"
            )

    async def update_metadata(self, name: str, updates: list[tuple[str, dict[str, Any]]], merge: bool) -> list[str]:
        """Change stored documents' metadata without re-embedding; returns the ids that were stored."""
        coll = self.collection(name)
        self._check_documents([doc_id for doc_id, _ in updates])
        with _mapped_errors():
            return await self._in_worker(coll.store.update_metadata, updates, merge)

    def _check_documents(self, ids: list[str]) -> None:
        """A write's documents: at most RRS_MAX_DOCUMENTS_PER_UPSERT (413), no id twice."""
        if len(ids) > self.settings.max_documents_per_upsert:
            raise PayloadTooLarge(
                f"documents: {len(ids)} documents exceed the limit of "
                f"{self.settings.max_documents_per_upsert} per request (RRS_MAX_DOCUMENTS_PER_UPSERT)"
            )
        seen: set[str] = set()
        for i, doc_id in enumerate(ids):
            if doc_id in seen:
                raise InvalidRequest(f"documents[{i}].id: duplicate id {doc_id!r} in one request")
            seen.add(doc_id)

    async def delete_documents(self, name: str, ids: list[str] | None, filter_: dict[str, Any] | None = None) -> int:
        """Delete by ids or by metadata filter (exactly one); returns how many documents existed."""
        coll = self.collection(name)
        if (ids is None) == (filter_ is None):
            raise InvalidRequest("ids: send exactly one of `ids` or `filter`")
        with _mapped_errors():
            if ids is not None:
                return await self._in_worker(coll.delete, ids)
            assert filter_ is not None
            return await self._in_worker(coll.delete_where, filter_)

    async def get_documents(self, name: str, ids: list[str], include_vectors: bool = False) -> list[dict[str, Any]]:
        """The stored documents of `ids` that exist, in the order asked (with their chunks' spans)."""
        coll = self.collection(name)
        if len(ids) > self.settings.max_documents_per_upsert:
            raise InvalidRequest(
                f"ids: {len(ids)} ids exceed the limit of {self.settings.max_documents_per_upsert} per request "
                "(RRS_MAX_DOCUMENTS_PER_UPSERT)"
            )
        with _mapped_errors():
            return await self._in_worker(
                lambda: self._stored_views(coll, coll.store.get_by_ids(ids), include_vectors)
            )

    async def count(self, name: str, filter_: dict[str, Any] | None) -> int:
        """Documents the filter matches, counted exactly (searches stop counting at 4,096)."""
        with _mapped_errors():
            coll = self.collection(name)
            return await self._in_worker(coll.store.count_matching, filter_ or {})

    async def facets(
        self, name: str, field_name: str, filter_: dict[str, Any] | None, limit: int
    ) -> tuple[list[FacetValue], int]:
        """The most frequent values of a metadata field among the documents the filter matches."""
        with _mapped_errors():
            coll = self.collection(name)
            return await self._in_worker(coll.store.facets, field_name, filter_, limit)

    async def list_documents(
        self, name: str, limit: int, after: str | None, filter_: dict[str, Any] | None, include_vectors: bool
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of documents in id order, and the cursor of the next page (None after the last)."""
        coll = self.collection(name)
        cap = self.settings.max_documents_per_upsert
        if not 1 <= limit <= cap:
            raise InvalidRequest(f"limit: must be between 1 and {cap} (RRS_MAX_DOCUMENTS_PER_UPSERT), got {limit}")

        def page() -> tuple[list[dict[str, Any]], str | None]:
            docs = coll.store.page(limit + 1, after, filter_)
            more = len(docs) > limit
            docs = docs[:limit]
            return self._stored_views(coll, docs, include_vectors), (docs[-1].id if more else None)

        with _mapped_errors():
            return await self._in_worker(page)

    @staticmethod
    def _stored_views(coll: Collection, docs: list[Document], include_vectors: bool) -> list[dict[str, Any]]:
        spans = coll.store.chunk_spans([d.vid for d in docs])
        vectors: dict[int, np.ndarray] = {}
        if include_vectors:
            wanted = [d.vid for d in docs] + [
                chunk_vector_id(d.id, c.part) for d in docs for c in spans.get(d.vid, []) if c.part > 0
            ]
            found, rows = coll.store.vectors_for(wanted)
            vectors = {int(v): row for v, row in zip(found, rows, strict=True)}

        def vector_of(vid: int) -> list[float] | None:
            return vectors[vid].tolist() if vid in vectors else None

        out = []
        for d in docs:
            chunks = [
                {
                    "index": c.part, "start": c.start, "end": c.end,
                    "vector": vector_of(d.vid if c.part == 0 else chunk_vector_id(d.id, c.part)),
                }
                for c in spans.get(d.vid, [])
            ]
            out.append({
                "id": d.id, "text": d.text, "metadata": d.metadata,
                "vector": vector_of(d.vid), "chunks": chunks or None,
            })
        return out

    # ---- relevance feedback ----
    async def record_feedback(self, name: str, req: FeedbackRequest) -> tuple[str, dict[str, int]]:
        """Validate one query's judgments against the collection and store them; returns (query id, summary)."""
        coll = self.collection(name)
        if not req.query.strip():
            raise InvalidRequest("query: must be a non-empty string")
        ids = [j.id for j in req.judgments]
        seen: set[str] = set()
        for i, doc_id in enumerate(ids):
            if doc_id in seen:
                raise InvalidRequest(f"judgments[{i}].id: {doc_id!r} is judged twice in one request")
            seen.add(doc_id)
        stored = await self._in_worker(coll.store.existing_ids, ids)
        for i, doc_id in enumerate(ids):
            if doc_id not in stored:
                raise InvalidRequest(f"judgments[{i}].id: no document {doc_id!r} in collection {name!r}")
        query_id = req.query_id or default_query_id(req.query)
        pairs = [(j.id, j.relevance) for j in req.judgments]
        await self._in_worker(coll.feedback.record, query_id, req.query, pairs)
        return query_id, await self.feedback_summary(name)

    async def feedback_summary(self, name: str) -> dict[str, int]:
        return asdict(await self._in_worker(self.collection(name).feedback.summary))

    async def clear_feedback(self, name: str) -> int:
        return await self._in_worker(self.collection(name).feedback.clear)

    # ---- search ----
    def _check_search(self, coll: Collection, req: SearchRequest) -> None:
        """Refuse a malformed search before anything is embedded (messages name the field)."""
        if not 1 <= req.top_k <= self.settings.max_top_k:
            raise InvalidRequest(f"top_k: must be between 1 and {self.settings.max_top_k}, got {req.top_k}")
        if req.offset:
            if req.offset + req.top_k > self.settings.max_top_k:
                raise InvalidRequest(f"offset: offset + top_k must be at most {self.settings.max_top_k} "
                                     f"(RRS_MAX_TOP_K), got {req.offset + req.top_k}")
            if req.rerank is not None:
                raise InvalidRequest("offset: not combined with `rerank` (page with `rerank.top_n` instead)")
        given = sum(x is not None for x in (req.query, req.vector, req.document_id))
        if req.like or req.unlike:
            self._check_examples(req, given)
        elif given != 1:
            raise InvalidRequest("query: send exactly one of `query` (text), `vector` or `document_id`")
        if req.query is not None and not req.query.strip():
            raise InvalidRequest("query: must be a non-empty string")
        if req.mode != "dense" and req.query is None:
            sent = ("a `vector`" if req.vector is not None else "a `document_id`" if req.document_id is not None
                    else "only `like` documents")
            raise InvalidRequest(f"mode: {req.mode} search needs `query` text, not {sent}")
        if req.group_by is not None:
            try:
                check_field(req.group_by, "group_by")
            except InvalidDocument as exc:
                raise InvalidRequest(str(exc)) from None
            if req.rerank is not None:
                raise InvalidRequest("group_by: not combined with `rerank` (reranking reorders hits across groups)")
        if req.mmr is not None:
            self._check_mmr(req)
        if req.mode == "lexical" and req.search_params is not None:
            raise InvalidRequest("search_params: lexical search reads no ANN index (use mode dense or hybrid)")
        if req.vector is not None and len(req.vector) != coll.config.dim:
            raise InvalidRequest(f"vector: expected dimension {coll.config.dim}, got {len(req.vector)}")
        if req.query is not None and req.mode != "lexical":
            self._check_embeddable(coll, "query")
        if req.rerank is not None and (self.rerank_stage is None or req.query is None):
            raise InvalidRequest(
                "rerank: needs `query` text and a server with a rerank stage"
                if self.rerank_stage is not None
                else "rerank: not available on this server"
            )

    @staticmethod
    def _check_examples(req: SearchRequest, given: int) -> None:
        """`like`/`unlike`: with one query (text or vector) or none; not with `document_id`, not lexical."""
        like, unlike = req.like or [], req.unlike or []
        if req.document_id is not None:
            raise InvalidRequest("document_id: not combined with `like`/`unlike` (send the document in `like`)")
        if given > 1:
            raise InvalidRequest("query: send at most one of `query` (text) or `vector` with `like`/`unlike`")
        if given == 0 and not like:
            raise InvalidRequest("unlike: a search without `query` or `vector` needs at least one document in `like`")
        if len(like) + len(unlike) > MAX_EXAMPLES:
            raise InvalidRequest(f"like: at most {MAX_EXAMPLES} documents in `like` and `unlike` together")
        if req.mode == "lexical":
            raise InvalidRequest("like: lexical search takes no example documents (use mode dense or hybrid)")
        if both := sorted(set(like) & set(unlike)):
            raise InvalidRequest(f"unlike: {both[0]!r} is also in `like`")

    @staticmethod
    def _check_mmr(req: SearchRequest) -> None:
        """MMR reorders one dense ranking; other stages that reorder or regroup hits would undo it."""
        if req.mode != "dense":
            raise InvalidRequest(f"mmr: dense search only ({req.mode} ranks are not similarities to diversify)")
        if req.group_by is not None:
            raise InvalidRequest("mmr: not combined with `group_by` (groups are diverse by construction)")
        if req.rerank is not None:
            raise InvalidRequest("mmr: not combined with `rerank` (reranking would reorder the diverse hits)")
        assert req.mmr is not None
        if req.mmr.candidates is not None and req.mmr.candidates < req.top_k + req.offset:
            raise InvalidRequest(f"mmr.candidates: must be at least top_k + offset ({req.top_k + req.offset}), "
                                 f"got {req.mmr.candidates}")

    @staticmethod
    def _depth_of(req: SearchRequest) -> int:
        """Hits to retrieve: top_k past the offset, or the rerank stage's candidates when more."""
        return req.top_k + req.offset if req.rerank is None else max(req.top_k, req.rerank.candidates or req.top_k)

    def _search_one(self, coll: Collection, req: SearchRequest, qvec: np.ndarray | None) -> SearchResult:
        k = self._depth_of(req)
        return _paged(req, coll.search(
            qvec, k, req.filter, req.min_relevance, text=req.query, mode=req.mode,
            fusion_depth=max(k, self.settings.hybrid_depth), lexical_weight=req.lexical_weight,
            exclude=_excluded(req), exact_count=req.exact_count,
            params=_params_of(req), group=_grouping_of(req), diversify=_diversify_of(req), min_score=req.min_score,
        )[0])

    async def _query_vectors(
        self, coll: Collection, reqs: list[SearchRequest], timings: StageTimings
    ) -> dict[int, np.ndarray]:
        """Each search's query vector (lexical searches need none): sent, a stored document's, or the
        query text embedded (all texts in one call)."""
        vectors: dict[int, np.ndarray] = {
            i: np.asarray(r.vector, dtype=np.float32) for i, r in enumerate(reqs) if r.vector is not None
        }
        by_doc = {i: r.document_id for i, r in enumerate(reqs) if r.document_id is not None}
        examples = {i: (r.like or [], r.unlike or []) for i, r in enumerate(reqs) if r.like or r.unlike}
        wanted = {*by_doc.values(), *(d for like, unlike in examples.values() for d in (*like, *unlike))}
        stored: dict[int, np.ndarray] = {}
        if wanted:
            with _mapped_errors():
                stored = await self._in_worker(coll.document_vectors, [vector_id(d) for d in sorted(wanted)])

        def stored_vector(i: int, name: str, doc_id: str) -> np.ndarray:
            if (vec := stored.get(vector_id(doc_id))) is None:
                where = f"searches[{i}].{name}" if len(reqs) > 1 else name
                raise NotFound(f"{where}: no document {doc_id!r} in collection {coll.name!r}")
            return vec

        for i, doc_id in by_doc.items():
            vectors[i] = stored_vector(i, "document_id", doc_id)
        to_embed = [i for i, r in enumerate(reqs) if r.query is not None and r.mode != "lexical"]
        for i, (like, unlike) in examples.items():  # every example must exist before anything is embedded
            for name, ids in (("like", like), ("unlike", unlike)):
                for j, doc_id in enumerate(ids):
                    stored_vector(i, f"{name}[{j}]", doc_id)
        if to_embed:
            texts = [reqs[i].query or "" for i in to_embed]
            embedded = (await self.embedding.embed(texts, input_type="query", timings=timings)).vectors
            vectors.update(zip(to_embed, embedded, strict=True))
        dim = coll.config.dim
        for i, (like, unlike) in examples.items():
            liked = np.array([stored[vector_id(d)] for d in like], np.float32).reshape(-1, dim)
            unliked = np.array([stored[vector_id(d)] for d in unlike], np.float32).reshape(-1, dim)
            with _mapped_errors(), _named(i) if len(reqs) > 1 else contextlib.nullcontext():
                vectors[i] = rocchio(vectors.get(i), liked, unliked, coll.config.metric)
        return vectors

    async def _reranked(self, req: SearchRequest, result: SearchResult) -> tuple[SearchResult, Any]:
        if req.rerank is None or self.rerank_stage is None or req.query is None:
            return result, None
        reranked, report = await self.rerank_stage(req.query, result.hits, req.rerank)
        result.hits = reranked[: req.rerank.top_n or req.top_k]
        return result, report

    async def search(
        self, name: str, req: SearchRequest, timings: StageTimings | None = None
    ) -> tuple[SearchResult, Any]:
        """Hits of one query, plus the rerank stage's report (None when no stage was asked for).

        Embeds the query (or takes the vector; lexical search embeds nothing), searches, then runs the
        optional rerank stage.
        """
        timings = timings or StageTimings()
        coll = self.collection(name)
        self._check_search(coll, req)
        vectors = await self._query_vectors(coll, [req], timings)
        qvec = vectors[0][None] if 0 in vectors else None
        with _mapped_errors(), timings.measure("search"):
            result = await self._in_worker(self._search_one, coll, req, qvec)
        if req.rerank is None:
            return result, None
        with timings.measure("rerank"):
            return await self._reranked(req, result)

    async def search_batch(
        self, name: str, reqs: list[SearchRequest], timings: StageTimings | None = None
    ) -> list[tuple[SearchResult, Any]]:
        """Many searches of one collection in one call: every query text embedded in one batch, and the
        dense searches that share top_k, filter, min_relevance, exact_count and search_params run as one
        multi-query index search.

        Each answer equals the single search's; an invalid search fails the whole batch, naming it.
        """
        timings = timings or StageTimings()
        coll = self.collection(name)
        if not reqs:
            raise InvalidRequest("searches: must hold at least one search")
        if len(reqs) > self.settings.max_searches_per_batch:
            raise PayloadTooLarge(
                f"searches: {len(reqs)} searches exceed the limit of {self.settings.max_searches_per_batch} "
                "per request (RRS_MAX_SEARCHES_PER_BATCH)"
            )
        for i, req in enumerate(reqs):
            try:
                self._check_search(coll, req)
            except InvalidRequest as exc:
                raise InvalidRequest(f"searches[{i}].{exc.message}") from None
        vectors = await self._query_vectors(coll, reqs, timings)

        def run() -> list[SearchResult]:
            out: list[SearchResult | None] = [None] * len(reqs)
            groups: dict[tuple[Any, ...], list[int]] = {}
            for i, req in enumerate(reqs):
                if req.mode == "dense" and not _excluded(req):
                    key = (self._depth_of(req), json.dumps(req.filter, sort_keys=True), req.min_relevance,
                           req.exact_count, _params_of(req), _grouping_of(req), _diversify_of(req), req.min_score)
                    groups.setdefault(key, []).append(i)
                    continue
                with _named(i):
                    out[i] = self._search_one(coll, req, vectors[i][None] if i in vectors else None)
            for (k, _, min_relevance, exact_count, params, grouping, diversify, min_score), rows in groups.items():
                with _named(rows[0]):
                    found = coll.search(np.stack([vectors[i] for i in rows]), k, reqs[rows[0]].filter, min_relevance,
                                        exact_count=exact_count, params=params, group=grouping, diversify=diversify,
                                        min_score=min_score)
                for i, result in zip(rows, found, strict=True):
                    out[i] = _paged(reqs[i], result)
            return [r for r in out if r is not None]

        with _mapped_errors(), timings.measure("search"):
            results = await self._in_worker(run)
        if all(r.rerank is None for r in reqs):
            return [(res, None) for res in results]
        with timings.measure("rerank"):
            return list(await asyncio.gather(*(self._reranked(r, res) for r, res in zip(reqs, results, strict=True))))

    @property
    def ready(self) -> bool:
        return self.opened

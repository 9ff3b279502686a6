"""The batch indexing job: stream a JSONL/CSV/Parquet file into a collection, resumably.

Records are read in chunks (bounded memory) and compared with the store: a document stored with the
same text (same embedding key) is skipped, or only its metadata updated, so a rerun after an
interruption resumes where the store left off and a rerun on an edited file syncs it; new and changed
texts are embedded and written through `Collection.upsert`: the same durable store and snapshot
format the server opens. Ids missing from the file are left alone (a sync does not delete). A running server
picks the result up with `POST /v1/collections/{name}/reload` (or at its next start).
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexing.aliases import resolve as resolve_alias
from indexing.chunks import assemble, plan_chunks, resolve_chunking, stored_chunks
from indexing.collection import Collection, CollectionConfig, validate_name
from indexing.errors import InvalidDocument
from indexing.filters import check_index
from indexing.store import Chunk, Document, embedding_key

FORMATS = ("jsonl", "csv", "parquet")


class DocumentEncoder(Protocol):
    """What the job needs of an embedder (models.embedder's class satisfies it)."""

    name: str
    dim: int

    def encode(self, texts: list[str], input_type: str | None = None, batch_size: int = 32) -> np.ndarray: ...

    def encode_with_truncation(self, texts: list[str], input_type: str | None = None,
                               batch_size: int = 32) -> tuple[np.ndarray, list[int]]:
        """Vectors, and the positions of texts longer than the model reads (embedded from their start)."""
        ...

    def chunk_budget(self, input_type: str | None = "document") -> int:
        """Text tokens one input holds."""
        ...

    def split(self, texts: list[str], max_tokens: int, overlap: int) -> list[list[tuple[int, int]]]:
        """Chunk spans of each text."""
        ...


@dataclass
class IndexReport:
    collection: str
    read: int = 0
    indexed: int = 0  # documents embedded and written: new ones, and stored ones whose text changed
    updated: int = 0  # of those, the ones that replaced a stored document
    metadata_updated: int = 0  # stored documents with the same text whose metadata changed (not embedded)
    skipped: int = 0  # stored documents with the same text and metadata
    truncated: int = 0  # indexed documents longer than the model reads: found by their start only
    chunked: int = 0  # indexed documents stored as several chunks
    vectors: int = 0  # vectors written (documents plus their extra chunks)
    seconds: float = 0.0
    count: int = 0
    built_kind: str = ""
    metadata_indexes_built: list[str] = field(default_factory=list)  # indexes this run created
    deleted: int = 0  # stored documents not in the file, deleted (prune)
    errors: list[str] = field(default_factory=list)

    @property
    def docs_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0


def same_space(stored: str, given: str) -> bool:
    """Two model names of one vector space: equal up to the hub owner or folder they are given with.

    `sentence-transformers/all-MiniLM-L6-v2`, `all-MiniLM-L6-v2` and a local folder of that name
    match; another model, or the same one at another TempScale temperature, does not.
    """
    def base(name: str) -> str:
        return name.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]

    return base(stored) == base(given)


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if ".csv" in suffixes or ".tsv" in suffixes:
        return "csv"
    if ".jsonl" in suffixes or ".json" in suffixes or ".ndjson" in suffixes:
        return "jsonl"
    raise InvalidDocument(
        f"input: cannot tell the format of {path.name}; expected one of {', '.join(FORMATS)}"
    )


def count_records(path: Path, fmt: str) -> int | None:
    """Record count for the progress bar's ETA (a line count; exact for JSONL, close for CSV)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(0, lines - (1 if fmt == "csv" else 0))


def _raw_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InvalidDocument(
                            f"input: line {lineno} of {path.name} is not JSON ({exc})"
                        ) from exc
    elif fmt == "csv":
        with open(path, encoding="utf-8", newline="") as fh:
            dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
            yield from csv.DictReader(fh, dialect=dialect)
    else:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file, split on newlines only.

    Not `str.splitlines()`: that also splits at U+2028, U+0085 and other separators that JSON
    strings may hold raw (MS MARCO passages do), cutting a record in two.
    """
    return list(_raw_rows(Path(path), "jsonl"))


def read_documents(
    path: Path,
    id_field: str | None = None,
    text_field: str = "text",
    title_field: str | None = "title",
    chunk_size: int = 1024,
    fmt: str | None = None,
) -> Iterator[list[Document]]:
    """Chunks of documents; BEIR `corpus.jsonl` works as is (`_id`, title + text).

    Fields other than id/text become metadata (the title is kept there too).
    """
    fmt = fmt or detect_format(path)
    chunk: list[Document] = []
    for n, row in enumerate(_raw_rows(path, fmt), 1):
        key = id_field or ("_id" if "_id" in row else "id")
        if row.get(key) in (None, "") or text_field not in row:
            raise InvalidDocument(
                f"input: record {n} of {path.name} lacks the id field {key!r} or the text "
                f"field {text_field!r} (use --id-field/--text-field)"
            )
        text = str(row[text_field] or "")
        title = str(row.get(title_field) or "") if title_field else ""
        if title:
            text = f"{title} {text}" if text else title
        metadata = {k: _missing_as_null(v) for k, v in row.items() if k not in (key, text_field) and _jsonable(v)}
        chunk.append(Document(str(row[key]), text, metadata))
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def _missing_as_null(value: Any) -> Any:
    """A NaN cell of a CSV or Parquet column means a missing value: null (NaN is not JSON)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class _JobLock:
    """An exclusive lock file: two jobs writing one collection at once would interleave snapshots.

    A second job (say, several `rrs eval` runs sharing a corpus) waits for the first, then finds
    its documents stored and skips them.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(folder / ".index-job.lock", os.O_CREAT | os.O_RDWR)

    def __enter__(self) -> _JobLock:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another `rrs index` job is writing this collection; waiting for it", file=sys.stderr)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def index_file(
    data_dir: Path,
    collection: str,
    path: Path,
    encoder: DocumentEncoder,
    *,
    id_field: str | None = None,
    text_field: str = "text",
    title_field: str | None = "title",
    index_kind: str = "auto",
    metric: str = "cosine",
    model_name: str | None = None,
    batch_size: int = 64,
    chunk_size: int = 1024,
    progress: bool = True,
    limit: int | None = None,
    snapshot_every: int = 50_000,
    chunk_tokens: int | None = None,
    chunk_overlap: int | None = None,
    max_chunks: int = 512,
    lexical_stemmer: str | None = None,
    metadata_indexes: Sequence[str] = (),
    prune: bool = False,
) -> IndexReport:
    """Index `path` into `<data_dir>/collections/<collection>`; safe to rerun (resumes).

    A new collection chunks documents longer than `chunk_tokens` (default: the model's window; 0:
    no chunking) and stems its lexical index with `lexical_stemmer` (default none); an existing one
    keeps the settings it was created with. Each of `metadata_indexes` is indexed once the records are
    written (one pass over the table is cheaper than keeping the index up to date row by row).
    `prune` deletes the stored documents whose id the file does not hold, once it was read whole.
    """
    validate_name(collection)
    if prune and limit is not None:
        raise InvalidDocument("prune: needs the whole file read; it cannot be combined with a limit")
    for i, name in enumerate(metadata_indexes):
        check_index(name, f"metadata_indexes[{i}]")
    path = Path(path)
    if not path.exists():
        raise InvalidDocument(f"input: {path} does not exist")
    fmt = detect_format(path)
    root = Path(data_dir) / "collections"
    collection = resolve_alias(root, collection)  # indexing into an alias fills the collection it names
    folder = root / collection
    report = IndexReport(collection)
    root.mkdir(parents=True, exist_ok=True)
    with _JobLock(root / f".{collection}.job"):
        if (folder / "store.sqlite3").exists():
            coll = Collection.open(folder, snapshot_every=snapshot_every)
            if coll.config.dim != encoder.dim:
                coll.close(snapshot=False)
                raise InvalidDocument(
                    f"collection: {collection!r} has dimension {coll.config.dim}, the encoder {encoder.dim}"
                )
            if not same_space(coll.config.model, model_name or encoder.name):
                coll.close(snapshot=False)
                raise InvalidDocument(
                    f"collection: {collection!r} holds vectors of {coll.config.model!r}, the encoder writes "
                    f"{model_name or encoder.name!r}; index into a new collection"
                )
            given = (chunk_tokens, chunk_overlap)
            if given != (None, None) and given != (coll.config.chunk_tokens or 0, coll.config.chunk_overlap):
                coll.close(snapshot=False)
                raise InvalidDocument(
                    f"chunk_tokens: {collection!r} was created with chunk_tokens {coll.config.chunk_tokens or 0} "
                    f"and chunk_overlap {coll.config.chunk_overlap}; index into a new collection to change them"
                )
            if lexical_stemmer is not None and lexical_stemmer != coll.config.lexical_stemmer:
                coll.close(snapshot=False)
                raise InvalidDocument(
                    f"lexical_stemmer: {collection!r} was created with lexical_stemmer "
                    f"{coll.config.lexical_stemmer!r}; index into a new collection to change it"
                )
        else:
            try:
                tokens, overlap = resolve_chunking(encoder.chunk_budget("document"), chunk_tokens, chunk_overlap)
            except ValueError as exc:
                raise InvalidDocument(str(exc)) from None
            config = CollectionConfig(collection, model_name or encoder.name, encoder.dim, metric, index_kind,
                                      chunk_tokens=tokens, chunk_overlap=overlap,
                                      lexical_stemmer=lexical_stemmer or "none")
            coll = Collection.create(folder, config, snapshot_every=snapshot_every)
        total = count_records(path, fmt)
        if limit is not None and total is not None:
            total = min(total, limit)
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit="doc",
            unit_scale=True,
            disable=not progress,
            dynamic_ncols=True,
            desc=f"index {collection}",
            smoothing=0.1,
        )
        started = time.perf_counter()
        seen: set[str] = set()
        try:
            for chunk in read_documents(path, id_field, text_field, title_field, chunk_size, fmt):
                if limit is not None:
                    chunk = chunk[: max(0, limit - report.read)]
                    if not chunk:
                        break
                report.read += len(chunk)
                if prune:
                    seen.update(d.id for d in chunk)
                docs = _dedupe(chunk)
                report.skipped += len(chunk) - len(docs)  # earlier records of an id repeated in the chunk
                todo, metadata = _changes(coll, docs, max_chunks, report)
                if metadata:
                    coll.store.update_metadata(metadata)
                if todo:
                    vectors, chunks, cut = _embed(encoder, coll.config, todo, batch_size, max_chunks)
                    for i, d in enumerate(todo):
                        d.embedding_cut = i in cut
                    coll.upsert(todo, vectors, chunks)
                    report.indexed += len(todo)
                    report.truncated += len(cut)
                    report.chunked += sum(1 for c in chunks if c)
                    report.vectors += len(todo) + sum(max(0, len(c) - 1) for c in chunks)
                bar.update(len(chunk))
                bar.set_postfix(indexed=report.indexed, skipped=report.skipped, chunked=report.chunked,
                                truncated=report.truncated, refresh=False)
            report.metadata_indexes_built = [f for f in metadata_indexes if coll.create_metadata_index(f)]
            if prune:
                report.deleted = _prune(coll, seen)
        finally:  # also on Ctrl-C: what the store holds gets a snapshot, and a rerun resumes from it
            bar.close()
            report.seconds = time.perf_counter() - started
            if coll.index.needs_rebuild(coll.config.index_kind):
                coll.rebuild()
            report.count = coll.store.count()
            report.built_kind = coll.index.kind
            coll.close(snapshot=True)
    return report


def _embed(
    encoder: DocumentEncoder, config: CollectionConfig, docs: list[Document], batch_size: int, max_chunks: int
) -> tuple[np.ndarray, list[list[Chunk]], set[int]]:
    """Documents' vectors and chunks (chunked collections), plus positions not embedded whole."""
    texts = [d.text for d in docs]
    if not config.chunk_tokens:
        vectors, cut = encoder.encode_with_truncation(texts, input_type="document", batch_size=batch_size)
        return vectors, [[] for _ in docs], set(cut)
    spans = encoder.split(texts, config.chunk_tokens, config.chunk_overlap)
    plan = plan_chunks(range(len(docs)), spans, max_chunks)
    flat, cut = encoder.encode_with_truncation(
        [texts[p.doc][p.start : p.end] for p in plan.pieces], input_type="document", batch_size=batch_size
    )
    out = np.zeros((len(docs), config.dim), dtype=np.float32)
    chunks: list[list[Chunk]] = [[] for _ in docs]
    assemble(plan.pieces, flat, out, chunks)
    return out, stored_chunks(chunks), plan.capped | {plan.pieces[j].doc for j in cut}


def _changes(
    coll: Collection, docs: list[Document], max_chunks: int, report: IndexReport
) -> tuple[list[Document], list[tuple[str, dict[str, Any]]]]:
    """What a record changes against the store: documents to embed (new, or their text changed) and
    metadata-only updates; unchanged ones are counted as skipped.

    A stored text counts as unchanged when its embedding key is the record's (same text, model and
    chunking), or, for documents stored before keys existed, when the text is the same (a rerun
    then resumes as it always did).
    """
    c = coll.config
    state = coll.store.stored_state([d.id for d in docs])
    todo: list[Document] = []
    metadata: list[tuple[str, dict[str, Any]]] = []
    for d in docs:
        d.embedding_key = embedding_key(c.model, c.dim, c.chunk_tokens, c.chunk_overlap, max_chunks, d.text)
        old = state.get(d.id)
        if old is None or not (old[0] == d.embedding_key or (old[0] is None and old[1] == d.text)):
            todo.append(d)
            report.updated += old is not None
        elif old[2] != d.metadata:
            metadata.append((d.id, d.metadata))
            report.metadata_updated += 1
        else:
            report.skipped += 1
    return todo, metadata


def _prune(coll: Collection, keep: set[str], page: int = 5000) -> int:
    """Delete the stored documents whose id is not in `keep`; returns how many."""
    gone: list[str] = []
    after = None
    while ids := coll.store.ids(page, after):
        gone += [i for i in ids if i not in keep]
        after = ids[-1]
    return sum(coll.delete(gone[b : b + 1000]) for b in range(0, len(gone), 1000))


def _dedupe(docs: list[Document]) -> list[Document]:
    """Keep the last record of an id repeated within one chunk (later lines win, as with upserts)."""
    last = {d.id: i for i, d in enumerate(docs)}
    return [d for i, d in enumerate(docs) if last[d.id] == i]

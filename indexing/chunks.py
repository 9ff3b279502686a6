"""From documents' chunk spans to the texts to embed, and from their vectors back to documents.

The HTTP upsert path and the batch job embed differently (the server's batcher, the encoder's own
batches) but lay chunks out the same way: every chunk of every document is one text to embed,
chunk 0's vector is the document's own, and the others are stored as its extra chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from indexing.store import Chunk


def check_chunking(max_tokens: int, overlap: int, limit: int) -> None:
    """Raises ValueError naming the field when a window cannot fit the model or cannot advance."""
    if not 8 <= max_tokens <= limit:
        raise ValueError(f"chunk_tokens: must be between 8 and the model's window of {limit} tokens, "
                         f"got {max_tokens}")
    if not 0 <= overlap <= max_tokens // 2:
        raise ValueError(f"chunk_overlap: must be between 0 and half of chunk_tokens ({max_tokens // 2}), "
                         f"got {overlap}")


def default_overlap(max_tokens: int) -> int:
    """One eighth of the window: enough to keep a typical sentence whole across a cut."""
    return max_tokens // 8


def resolve_chunking(budget: int, tokens: int | None, overlap: int | None) -> tuple[int | None, int]:
    """(chunk_tokens, chunk_overlap) for a new collection whose model reads `budget` text tokens.

    None takes the model's whole window (and an eighth of it as overlap); `tokens` 0 turns chunking off.
    """
    if tokens == 0:
        if overlap:
            raise ValueError("chunk_overlap: chunking is off (chunk_tokens 0)")
        return None, 0
    tokens = budget if tokens is None else tokens
    overlap = default_overlap(tokens) if overlap is None else overlap
    check_chunking(tokens, overlap, budget)
    return tokens, overlap


@dataclass(frozen=True)
class Piece:
    """One text to embed: chunk `part` of the document at position `doc`, `text[start:end]`."""

    doc: int
    part: int
    start: int
    end: int


@dataclass
class ChunkPlan:
    pieces: list[Piece]
    capped: set[int] = field(default_factory=set)  # documents with more chunks than the limit


def plan_chunks(
    positions: Sequence[int], spans: Sequence[Sequence[tuple[int, int]]], limit: int | None = None
) -> ChunkPlan:
    """Pieces for the documents at `positions` (one span list each), at most `limit` chunks a document."""
    plan = ChunkPlan([])
    for doc, doc_spans in zip(positions, spans, strict=True):
        if limit is not None and len(doc_spans) > limit:
            doc_spans = doc_spans[:limit]
            plan.capped.add(doc)
        plan.pieces += [Piece(doc, part, a, b) for part, (a, b) in enumerate(doc_spans)]
    return plan


def assemble(
    pieces: Sequence[Piece], vectors: np.ndarray, out: np.ndarray, chunks: list[list[Chunk]]
) -> None:
    """Write pieces' vectors into `out` (documents' vectors) and `chunks` (per document, in order)."""
    for piece, vec in zip(pieces, vectors, strict=True):
        if piece.part == 0:
            out[piece.doc] = vec
        chunks[piece.doc].append(Chunk(piece.start, piece.end, None if piece.part == 0 else vec))


def stored_chunks(chunks: list[list[Chunk]]) -> list[list[Chunk]]:
    """A document of one chunk is stored whole (no chunk rows): the same as without chunking."""
    return [c if len(c) > 1 else [] for c in chunks]

"""Rerank API shapes: Cohere/Jina field names, so their official clients work unchanged.

`/v1/rerank` and `/v2/rerank` share these models. Beyond the Cohere fields, a request may pick the
reranking `method`; the response adds `model`, `method` and `usage` next to Cohere's `id`/`meta`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RerankDocument(BaseModel):
    """A document given as an object; only `text` is ranked, other fields are ignored."""

    model_config = ConfigDict(extra="allow")
    text: str


class RerankRequest(BaseModel):
    query: str = Field(..., description="The search query.")
    documents: list[str | RerankDocument] = Field(
        ..., description="Texts to rank: strings or objects with a `text` field."
    )
    top_n: int | None = Field(None, ge=1, description="Return only the best `top_n` results (default: all).")
    return_documents: bool = Field(False, description="Echo each document's text in its result.")
    model: str | None = Field(None, description="Reranker model; defaults to the method's served model.")
    method: str | None = Field(
        None,
        description="pointwise, graded, listwise, first, pairwise, embedding or cross-encoder; "
        "defaults to the server's RRS_DEFAULT_RERANK_METHOD (or the method of `model`).",
    )
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="Truncate each document to this many tokens (of the reranker's tokenizer)."
    )


class RerankResultDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(..., description="Position of the document in the request.")
    relevance_score: float = Field(..., description="The method's score; higher is more relevant.")
    document: RerankResultDocument | None = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = 1


class TokenCount(BaseModel):
    input_tokens: int


class RerankMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits = Field(default_factory=BilledUnits)
    tokens: TokenCount
    warnings: list[str] = Field(default_factory=list)


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult] = Field(..., description="Sorted by relevance_score, best first.")
    model: str
    method: str
    meta: RerankMeta
    usage: RerankUsage


def document_text(document: str | RerankDocument | dict[str, Any]) -> str:
    """The rankable text of one request document."""
    if isinstance(document, str):
        return document
    if isinstance(document, dict):
        return str(document.get("text", ""))
    return document.text

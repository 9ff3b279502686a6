"""Collections API shapes: create/list collections, upsert/delete documents, search."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from indexing.ann import MAX_EF_SEARCH, MAX_OVERSAMPLE, RESCORE_OVERSAMPLE
from indexing.diversity import DEFAULT_DIVERSITY, MAX_MMR_CANDIDATES, MMR_CANDIDATE_FACTOR, MMR_MIN_CANDIDATES
from indexing.grouping import GROUP_MAX_DEPTH, MAX_GROUP_SIZE


class CreateCollectionRequest(BaseModel):
    name: str = Field(..., description="1-64 characters: letters, digits, '_' or '-', starting alphanumeric.")
    model: str | None = Field(
        None,
        description="Embedding model; defaults to the served one. Collections of another model "
        "accept only raw `vector`s (the server cannot embed their text).",
    )
    dimension: int | None = Field(
        None, ge=1, le=65536, description="Vector dimension; defaults to the served model's."
    )
    metric: Literal["cosine", "ip", "l2"] = "cosine"
    index: Literal["auto", "flat", "hnsw", "ivf_flat", "ivf_pq"] = Field(
        "auto", description="ANN index kind; `auto` is exact below 50k documents and HNSW above."
    )
    chunk_tokens: int | None = Field(
        None, ge=0, description="Documents longer than this many tokens are embedded as overlapping chunks, "
        "each its own vector; a document scores as its best chunk. Default: the model's window; 0: no "
        "chunking (text past the window is then not embedded)."
    )
    chunk_overlap: int | None = Field(
        None, ge=0, description="Tokens shared by consecutive chunks (default: chunk_tokens / 8)."
    )
    lexical_stemmer: Literal["none", "porter"] = Field(
        "none", description="Stemming of the lexical (BM25) index: `none` is language-neutral; `porter` stems "
        "English words (\"bridges\" finds \"bridge\"). Fixed at creation."
    )
    metadata_indexes: list[str] = Field(
        default_factory=list, max_length=32,
        description="Metadata fields (dots reach nested ones) to index for filters: equality, `$in` and "
        "comparisons on them read an index instead of every document's metadata. Also added later with "
        "PUT /v1/collections/{name}/metadata_indexes/{field}.",
    )


class CollectionInfo(BaseModel):
    name: str
    status: Literal["ready", "unavailable"]
    error: str | None = None
    model: str | None = None
    dim: int | None = None
    metric: str | None = None
    index_kind: str | None = None
    built_kind: str | None = None
    count: int | None = Field(None, description="Documents in the store (the source of truth).")
    indexed: int | None = Field(
        None, description="Vectors live in the ANN index: one per document plus `chunks` (equals their sum)."
    )
    chunks: int | None = Field(None, description="Vectors beyond one per document: extra chunks of long ones.")
    chunk_tokens: int | None = Field(None, description="Chunk window in tokens; null when not chunked.")
    chunk_overlap: int | None = None
    lexical_stemmer: str | None = None
    metadata_indexes: list[str] | None = Field(None, description="Metadata fields indexed for filters.")
    aliases: list[str] = Field(default_factory=list, description="Aliases that point at this collection.")
    calibrated: bool = False
    created_at: float | None = None


class MetadataIndexResponse(BaseModel):
    collection: str
    field: str
    created: bool = Field(..., description="False when the field was indexed already (nothing changed).")
    metadata_indexes: list[str] = Field(..., description="Every indexed field of the collection, after this call.")


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionInfo]


class DocumentIn(BaseModel):
    id: str = Field(..., min_length=1, max_length=512)
    text: str = Field("", description="Embedded with input_type=document unless `vector` is given.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    vector: list[float] | None = Field(None, description="A precomputed vector; skips embedding.")


class UpsertRequest(BaseModel):
    documents: list[DocumentIn] = Field(..., min_length=1)


class UpsertResponse(BaseModel):
    collection: str
    upserted: int
    ids: list[str]
    truncated: list[str] = Field(
        default_factory=list,
        description="Ids whose text is longer than the embedding model reads: stored whole, but embedded "
        "(so found) by its first max-length tokens only. Split such documents to make all of them searchable.",
    )
    unchanged: int = Field(
        0, description="Documents whose text was already stored, embedded by this server under the same model and "
        "chunking: they kept their stored vectors (nothing was embedded for them; metadata is still replaced)."
    )


class MetadataUpdate(BaseModel):
    id: str = Field(..., min_length=1, max_length=512)
    metadata: dict[str, Any]


class UpdateMetadataRequest(BaseModel):
    documents: list[MetadataUpdate] = Field(..., min_length=1)
    merge: bool = Field(
        False, description="Merge into the stored metadata (top-level keys; a null value removes the key) "
        "instead of replacing it."
    )


class UpdateMetadataResponse(BaseModel):
    collection: str
    updated: int
    missing: list[str] = Field(default_factory=list, description="Ids not stored (nothing is created).")


class DeleteDocumentsRequest(BaseModel):
    ids: list[str] | None = Field(None, min_length=1, description="Delete these ids (unknown ones are ignored).")
    filter: dict[str, Any] | None = Field(
        None, description="Or delete every document this metadata filter matches (the search filter language)."
    )


class DeleteDocumentsResponse(BaseModel):
    collection: str
    deleted: int


class StoredChunk(BaseModel):
    """One chunk of a long document as stored (offsets are Unicode code points into `text`)."""

    index: int
    start: int
    end: int
    vector: list[float] | None = Field(None, description="Its indexed vector, with `include_vectors=true`.")


class StoredDocument(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]
    vector: list[float] | None = Field(
        None, description="The indexed vector (normalised for cosine collections), with `include_vectors=true`."
    )
    chunks: list[StoredChunk] | None = Field(None, description="Present when the document is stored as chunks.")


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    data: list[StoredDocument]
    next_after: str | None = Field(
        None, description="Pass as `after` for the next page; null on the last page (and for `ids` lookups)."
    )
    missing: list[str] = Field(default_factory=list, description="Requested `ids` that are not stored.")


class SearchRerank(BaseModel):
    """Optional second stage over the retrieved hits (wired by the rerank service)."""

    method: str | None = Field(None, description="Reranker method; the server's default when omitted.")
    model: str | None = None
    top_n: int | None = Field(None, ge=1, description="Keep this many hits after reranking.")
    candidates: int | None = Field(None, ge=1, description="Rerank this many retrieved hits (default top_k).")
    force: bool = Field(False, description="Rerank even when calibrated relevance already separates the list.")
    timeout_s: float | None = Field(
        None, gt=0, description="Deadline for the stage (capped by RRS_RERANK_TIMEOUT_S); past it, first-stage order."
    )


class SearchRerankReport(BaseModel):
    """What the rerank stage did."""

    applied: bool = Field(..., description="False when skipped by the cascade or past its deadline.")
    reason: str
    method: str | None = None
    model: str | None = None
    candidates: int = 0
    seconds: float = 0.0


class SearchMMR(BaseModel):
    """Diversify the hits by maximal marginal relevance (docs/COLLECTIONS.md, "Diverse results")."""

    model_config = ConfigDict(extra="forbid")

    diversity: float = Field(
        DEFAULT_DIVERSITY, ge=0.0, le=1.0, description="0 ranks by similarity to the query alone (the plain order); "
        "towards 1, a candidate close to a hit already picked counts for less. Both similarities are cosines; "
        "0.5 and above cost much relevance (docs/BENCHMARKS.md, \"Diverse results\")."
    )
    candidates: int | None = Field(
        None, ge=1, le=MAX_MMR_CANDIDATES, description=f"Best hits to pick from (at least top_k + offset; default "
        f"{MMR_CANDIDATE_FACTOR} x top_k, at least {MMR_MIN_CANDIDATES}). The relevance cut applies to them first."
    )


class SearchParams(BaseModel):
    """This search's ANN effort: recall against latency (docs/COLLECTIONS.md, "Search effort")."""

    model_config = ConfigDict(extra="forbid")

    ef: int | None = Field(
        None, ge=1, le=MAX_EF_SEARCH, description="HNSW beam width (efSearch; default 128, at least top_k is "
        "used): wider finds more of the true nearest neighbours, slower. Ignored by other index kinds."
    )
    nprobe: int | None = Field(
        None, ge=1, le=1_000_000, description="IVF lists visited (default about 1/16 of them; capped at the "
        "lists there are). Ignored by other index kinds."
    )
    exact: bool = Field(
        False, description="Score every document (brute force): the true top_k, at the cost of reading all "
        "vectors. Collections below 50k documents (`auto`) are exact already."
    )
    rescore: bool = Field(
        True, description="IVF-PQ: re-score the candidates on the stored float vectors (exact scores, better "
        "order); false ranks by the compressed codes alone. Ignored by other index kinds."
    )
    oversample: int | None = Field(
        None, ge=1, le=MAX_OVERSAMPLE, description=f"IVF-PQ with `rescore`: candidates re-scored per hit "
        f"(default {RESCORE_OVERSAMPLE}: top_k * {RESCORE_OVERSAMPLE} read from the store)."
    )


class SearchParamsUsed(BaseModel):
    """What the dense search ran with."""

    index: str = Field(..., description="The index kind searched: flat, hnsw, ivf_flat or ivf_pq.")
    ef: int | None = Field(None, description="HNSW efSearch used (null unless an approximate HNSW search).")
    nprobe: int | None = Field(None, description="IVF lists visited (null unless an IVF search).")
    exact: bool = Field(..., description="Whether the hits are the exact top_k (flat index, `exact`, every IVF "
                        "list of an ivf_flat index, or a filter matching few enough documents to score them all).")
    rescored: int | None = Field(None, description="Candidates re-scored on stored vectors (IVF-PQ), else null.")


class SearchRequest(BaseModel):
    query: str | None = Field(None, description="Query text (embedded with input_type=query).")
    vector: list[float] | None = Field(None, description="A query vector instead of `query` text.")
    document_id: str | None = Field(
        None, description="Or search with this stored document's vector (more like it; a chunked document's is "
        "the mean of its chunks'); the document itself is left out of the hits. Dense mode only."
    )
    like: list[str] | None = Field(
        None, max_length=64, description="Stored documents the result should resemble: with `query`/`vector`, the "
        "query vector moves towards them (Rocchio relevance feedback); alone, their mean is the query. They are "
        "left out of the hits. Dense and hybrid modes."
    )
    unlike: list[str] | None = Field(
        None, max_length=64, description="Stored documents the result should move away from (weighed less than "
        "`like`: 0.15 against 0.75); left out of the hits. Needs `like`, `query` or `vector`."
    )
    top_k: int = Field(10, description="Hits to return (1..RRS_MAX_TOP_K); with `group_by`, groups.")
    filter: dict[str, Any] | None = Field(
        None, description="Metadata filter: every `field: value` must hold ('a.b' is nested). A value is "
        "equality, or an object of operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $contains; "
        "`$and`/`$or` take lists of filters. See docs/COLLECTIONS.md."
    )
    min_relevance: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Drop hits whose calibrated relevance is below this (default: the collection's fitted "
        "threshold; 0 keeps every hit, on any collection). Above 0, a 400 when the collection has no calibration.",
    )
    min_score: float | None = Field(
        None, allow_inf_nan=False, description="Drop hits whose `score` is below this: cosine or inner product "
        "(-squared L2 for l2 collections), BM25 in lexical mode. A cut for collections without calibration; it "
        "applies before calibration, `mmr` and paging."
    )
    offset: int = Field(
        0, ge=0, description="Skip this many hits (groups, with `group_by`) of the ranking: the page after them. "
        "offset + top_k is at most RRS_MAX_TOP_K. Not with `rerank`."
    )
    rerank: SearchRerank | None = None
    mode: Literal["dense", "lexical", "hybrid"] = Field(
        "dense", description="`dense`: embedding similarity; `lexical`: BM25 over the documents' text (no "
        "embedding, no calibrated relevance); `hybrid`: reciprocal rank fusion of both rankings (RRF, k=60), "
        "each hit keeping its cosine `score` and calibrated `relevance`."
    )
    lexical_weight: float = Field(
        1.0, ge=0.0, le=100.0, description="Hybrid mode: weight of the lexical ranking in the fusion (the dense "
        "one weighs 1). Below 1 trusts the embeddings more; `rrs eval --feedback` compares settings on your labels."
    )
    exact_count: bool = Field(
        False, description="Count every document `filter` matches in `filtered_count`. By default counting "
        "stops at 4,096 (`filtered_count_exact` false: at least that many), as a broad filter is searched "
        "without reading its matches; the exact count reads them all."
    )
    search_params: SearchParams | None = Field(
        None, description="ANN effort of this search (HNSW `ef`, IVF `nprobe`, or `exact`); the index's defaults "
        "when omitted. Dense and hybrid modes."
    )
    group_by: str | None = Field(
        None, description="A metadata field ('a.b' is nested): return the best `top_k` groups of documents sharing "
        "its value, `group_size` hits each, instead of the best `top_k` hits (`groups` in the answer). A document "
        "without the field is in no group; an array puts it in each element's group. Candidates are read up to "
        f"{GROUP_MAX_DEPTH:,} deep. Not combined with `rerank`."
    )
    group_size: int = Field(1, ge=1, le=MAX_GROUP_SIZE, description="Hits per group, with `group_by`.")
    mmr: SearchMMR | None = Field(
        None, description="Diverse hits: the top_k picked from a deeper pool by maximal marginal relevance, so "
        "near-copies of a hit make way for other documents. Dense mode; not with `group_by` or `rerank`."
    )


class HitChunk(BaseModel):
    """The chunk of a long document that matched (offsets are Unicode code points into `text`)."""

    index: int = Field(..., description="Chunk number within the document, from 0.")
    start: int
    end: int
    text: str = Field(..., description="`text[start:end]`: the passage to show or to pass on.")


class SearchHit(BaseModel):
    id: str
    score: float = Field(
        ..., description="Similarity (cosine or inner product; -squared L2 for l2); BM25 in lexical mode."
    )
    relevance: float | None = Field(None, description="Calibrated relevance probability, when fitted.")
    rerank_score: float | None = None
    lexical_score: float | None = Field(None, description="BM25 score, when the lexical side found the document.")
    fused_score: float | None = Field(None, description="Reciprocal rank fusion score (hybrid mode): the order.")
    text: str
    metadata: dict[str, Any]
    chunk: HitChunk | None = Field(None, description="Present when the document is stored as several chunks.")


class SearchGroup(BaseModel):
    value: str | int | float | bool | None = Field(..., description="The group's value of `group_by`.")
    ids: list[str] = Field(..., description="Its members among `hits`, best first.")


class SearchResponse(BaseModel):
    object: Literal["search_result"] = "search_result"
    collection: str
    model: str
    hits: list[SearchHit]
    candidates: int = Field(..., description="Hits retrieved before the score and relevance cuts (`offset` + "
                            "`top_k` deep, or the `mmr` pool).")
    min_relevance: float | None = Field(None, description="The relevance cut applied, when calibrated.")
    relevance_filtered: int = Field(0, description="Candidates removed by the relevance cut.")
    score_filtered: int = Field(0, description="Candidates removed by `min_score`.")
    filtered_count: int | None = Field(
        None, description="Documents that matched `filter`: exactly, or at least this many when "
        "`filtered_count_exact` is false (see `exact_count`)."
    )
    filtered_count_exact: bool | None = Field(None, description="Whether `filtered_count` is exact (with a filter).")
    rerank: SearchRerankReport | None = Field(None, description="Present when a rerank stage was requested.")
    search_params: SearchParamsUsed | None = Field(
        None, description="The index kind and knobs the dense search ran with (null in lexical mode)."
    )
    groups: list[SearchGroup] | None = Field(
        None, description="With `group_by`: the groups, best first (by their best member); `hits` then holds their "
        "members in this order, each once."
    )


class SearchBatchRequest(BaseModel):
    searches: list[SearchRequest] = Field(
        ..., min_length=1, description="Searches of this collection (1..RRS_MAX_SEARCHES_PER_BATCH), each as "
        "the single search's body; their query texts are embedded in one batch."
    )


class SearchBatchResponse(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    model: str
    results: list[SearchResponse] = Field(..., description="One result per search, in the order sent.")


class ReloadResponse(BaseModel):
    collection: CollectionInfo


class CountRequest(BaseModel):
    filter: dict[str, Any] | None = Field(
        None, description="Metadata filter (as in search); none counts every document."
    )


class CountResponse(BaseModel):
    object: Literal["count"] = "count"
    collection: str
    count: int = Field(..., description="Documents the filter matches, exactly (from a metadata index when one "
                       "serves the filter, else by reading every document's metadata).")


class FacetRequest(BaseModel):
    field: str = Field(..., description="The metadata field to count values of ('a.b' is nested).")
    filter: dict[str, Any] | None = Field(None, description="Count only documents this filter matches.")
    limit: int = Field(10, ge=1, le=1000, description="Return this many of the most frequent values.")


class FacetValueCount(BaseModel):
    value: str | int | float | bool | None = Field(..., description="A value, typed as filters compare it.")
    count: int = Field(..., description="Documents holding it (an array field: holding it as an element).")


class FacetResponse(BaseModel):
    object: Literal["facets"] = "facets"
    collection: str
    field: str
    values: list[FacetValueCount] = Field(..., description="Most frequent first; ties by type, then value.")
    distinct: int = Field(..., description="How many different values the documents hold (`values` may be "
                          "fewer: see `limit`).")

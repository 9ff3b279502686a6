"""The one configuration object: every knob is an `RRS_*` environment variable and a CLI flag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.embedder.onnx import default_cache_dir as default_onnx_cache_dir
from models.llm.gguf_cache import default_cache_dir

# A list from the environment: a JSON list ('["a","b"]') or a comma-separated string ('a,b').
EnvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Server configuration. Built once (CLI or env) and handed to `create_app`."""

    model_config = SettingsConfigDict(env_prefix="RRS_", env_file=None, extra="ignore")

    # network
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # models
    embed_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embed_device: str = "auto"
    embed_dtype: str = "auto"
    embed_attention_temperature: float = Field(
        1.0, gt=0, le=10, description="TempScale: divide the embedder's attention logits by this (< 1 sharpens "
        "attention against length-induced collapse on long inputs; 1 is the model as trained). Collections "
        "record it: text is only embedded into collections made at the same temperature."
    )
    embed_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="Runtime of the embedder's transformer. auto: on CPU, batches up to "
        "`embed_onnx_max_tokens` padded tokens (a search's query) run on ONNX Runtime, which is faster "
        "than torch there, and longer ones on torch; torch everywhere on GPU. torch: torch "
        "only. onnx: ONNX Runtime for every batch (CPU only). The runtimes agree within float32 rounding."
    )
    embed_onnx_max_tokens: int | None = Field(
        None, ge=0, description="With embed_runtime auto (or onnx): the largest padded batch, in tokens, "
        "run on ONNX Runtime; unset: measured at the first batch on this machine (one-row inputs, up to 512 "
        "tokens); 0: never."
    )
    onnx_cache_dir: Path = Field(default_factory=default_onnx_cache_dir,
                                 description="Where the embedder's ONNX export is kept (default ~/.cache/rrs/onnx).")
    allow_untrained_truncation: bool = Field(
        False, description="Allow `dimensions` on models not trained for Matryoshka truncation."
    )
    rerank_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    cross_encoder_model: str | None = None
    default_rerank_method: str = "embedding"
    load_reranker_at_startup: bool = False

    # batching and admission
    max_batch_tokens: int | None = Field(
        None, ge=16, description="Padded tokens per forward pass; default 2048 on CPU (faster per token "
        "than large batches there), 16384 on GPU."
    )
    max_padding_ratio: float | None = Field(
        1.1, ge=1.0, description="Cut a length-sorted round where padding would exceed this multiple of "
        "the real tokens; unset packs by the token budget alone."
    )
    max_batch_size: int = Field(256, ge=1)
    max_queue_requests: int = Field(1024, ge=1)
    max_inputs_per_request: int = Field(2048, ge=1)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(30.0, gt=0)
    batch_wait_ms: float = Field(2.0, ge=0, description="How long the batcher lingers for more work, when "
                                 "requests arrive closer together than this; a request arriving alone runs at once.")
    stall_timeout_s: float = Field(60.0, gt=0, description="A batch running longer marks the server unready.")
    query_cache_size: int = Field(4096, ge=0)
    torch_threads: int | None = None

    # collections
    data_dir: Path = Path("var/rrs")
    demo_collection: bool = True
    demo_calibration: bool = Field(
        True, description="Install the calibration rrs ships for the embedding model (if any) on a new demo "
        "collection, so its hits carry `relevance` and cut at the shipped threshold."
    )
    max_top_k: int = Field(1000, ge=1)
    max_searches_per_batch: int = Field(256, ge=1, description="Searches one batch-search request may hold.")
    max_documents_per_upsert: int = Field(4096, ge=1)
    hybrid_depth: int = Field(
        100, ge=1, description="Hybrid search fuses the dense and the lexical top-n of this depth (at least top_k)."
    )
    max_chunks_per_document: int = Field(
        512, ge=1, description="A chunked document beyond this many chunks (~128k tokens at 254 a chunk) is "
        "embedded from its start only, and the upsert lists it under `truncated`."
    )
    snapshot_every: int = Field(1000, ge=1, description="Write an index snapshot after this many changes.")
    backup_dir: Path | None = Field(
        None, description="Where POST /v1/collections/{name}/backups writes backups (default: <data_dir>/backups)."
    )
    demo_collection_name: str = "demo"
    index_device: str = Field(
        "auto", description="Search mirror: auto (faiss-gpu, else torch on CUDA, else CPU FAISS), cpu, "
        "cuda[:N], or torch:<device> for the torch exact-search backend."
    )
    faiss_threads: int = Field(
        1, ge=1, description="OpenMP threads per FAISS call; requests run in parallel threads instead "
        "(OpenMP barriers spin-wait and stall single-query searches on a busy machine)."
    )

    # reranking
    max_rerank_documents: int = Field(1000, ge=1)
    max_rerank_tokens_per_doc: int = Field(4096, ge=1)
    rerank_timeout_s: float = Field(30.0, gt=0)
    rerank_max_coalesced: int = Field(
        32, ge=1, description="Pointwise/graded requests waiting for one model that are scored in one call."
    )
    cascade_skip_separated: bool = Field(
        True, description="Search skips its rerank stage when calibrated relevance already separates the list."
    )
    cascade_low: float = Field(0.1, ge=0, le=1, description="Relevance at or below this counts as settled.")
    cascade_high: float = Field(0.9, ge=0, le=1, description="Relevance at or above this counts as settled.")
    extra_rerank_models: EnvList = Field(
        default_factory=list, description="More causal LMs the LLM rerank methods may be asked for by name."
    )
    rerank_device: str = "auto"
    rerank_dtype: str = "auto"
    rerank_engine: str = Field(
        "auto", description="LLM scoring engine: cache (prefix KV reuse), packed (GPU varlen), padded, auto."
    )
    gguf_cache: bool = Field(
        True, description="Keep GGUF models de-quantised on disk, so only the first load converts (~35 s)."
    )
    gguf_cache_dir: Path = Field(default_factory=default_cache_dir, description="Where (default ~/.cache/rrs/gguf).")

    # security
    api_keys: EnvList = Field(default_factory=list)
    read_only_api_keys: EnvList = Field(
        default_factory=list, description="Keys that may only read: embeddings, rerank, searches and GETs "
        "(a search front end's key); any other call answers 403. Setting either list turns auth on."
    )
    cors_origins: EnvList = Field(default_factory=list)

    # observability
    offline: bool = Field(
        True,
        description="No network at run time: the hub is not contacted (set false to download models by name).",
    )
    log_level: str = "info"

    # overload protection (service/admission.py)
    max_inflight_requests: int = Field(
        256, ge=1, description="Requests served at once; more are shed with 503 + Retry-After at once."
    )
    overload_retry_after_s: int = Field(1, ge=1, description="The Retry-After a shed request gets.")
    shutdown_grace_s: int = Field(
        30, ge=1, description="On SIGTERM, how long in-flight requests may take to finish before exit."
    )

    @property
    def backups_path(self) -> Path:
        """Where backups go: RRS_BACKUP_DIR, else `<data_dir>/backups`."""
        return self.backup_dir or Path(self.data_dir) / "backups"

    @field_validator("api_keys", "read_only_api_keys", "cors_origins", "extra_rerank_models", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

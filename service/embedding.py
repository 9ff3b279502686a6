"""Embedding service: validation, query cache, token-budget batching, Matryoshka truncation."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import numpy as np

from models.embedder import SentenceTransformerEmbedder, TokenizedText, load_embedder
from models.embedder.tempscale import space_id
from models.embedder.torch import InputTooLong, Truncate, truncate_dimensions
from service.batching import TokenBudgetBatcher
from service.errors import InvalidRequest, NotFound, PayloadTooLarge
from service.metrics import Metrics
from service.settings import Settings
from service.timing import StageTimings

# Below this many characters tokenization is cheaper than a hop to a worker thread.
_INLINE_TOKENIZE_CHARS = 4096


@dataclass
class EmbedResult:
    vectors: np.ndarray  # (n, d) float32, L2-normalised when the model normalises
    prompt_tokens: int
    cache_hits: int = 0
    truncated: list[int] = field(default_factory=list)  # inputs cut to the model's max length


class QueryEmbeddingCache:
    """Exact LRU of embeddings keyed by (model, input_type, truncate, text), before truncation."""

    def __init__(self, capacity: int, metrics: Metrics) -> None:
        self.capacity = capacity
        self._data: OrderedDict[tuple, tuple[np.ndarray, int, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self._metrics = metrics

    def get(self, key: tuple) -> tuple[np.ndarray, int, bool] | None:
        """(vector, tokens embedded, whether the text was cut to the model's max length)."""
        if self.capacity == 0:
            return None
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
        self._metrics.cache.labels("hit" if hit is not None else "miss").inc()
        return hit

    def put(self, key: tuple, vector: np.ndarray, tokens: int, truncated: bool = False) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._data[key] = (vector, tokens, truncated)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class EmbeddingService:
    """Owns the embedder and its batcher; `embed` is the one public coroutine."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 embedder: SentenceTransformerEmbedder | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.embedder = embedder or load_embedder(settings.embed_model, settings.embed_device,
                                                  settings.embed_dtype, settings.embed_attention_temperature,
                                                  runtime=settings.embed_runtime,
                                                  onnx_max_tokens=settings.embed_onnx_max_tokens,
                                                  onnx_cache_dir=settings.onnx_cache_dir)
        if self.embedder.attention_temperature != settings.embed_attention_temperature:
            raise ValueError(
                f"embed_attention_temperature: the settings say {settings.embed_attention_temperature:g}, "
                f"the embedder given runs at {self.embedder.attention_temperature:g}"
            )
        self.model_name = settings.embed_model
        # Names a request's `model` may use; TempScale is the operator's choice and keeps them.
        self.aliases = {self.model_name, self.model_name.split("/")[-1], self.embedder.name}
        # Names of the vector space stored vectors must come from before text is embedded beside them.
        temperature = self.embedder.attention_temperature
        self.space = space_id(self.model_name, temperature)
        self.space_aliases = {space_id(name, temperature) for name in self.aliases}
        self.cache = QueryEmbeddingCache(settings.query_cache_size, metrics)
        self.batcher: TokenBudgetBatcher[TokenizedText] = TokenBudgetBatcher(
            "embed", self.embedder.embed_tokenized, metrics=metrics,
            max_batch_tokens=settings.max_batch_tokens or self._default_batch_tokens(),
            max_batch_size=settings.max_batch_size, max_queue=settings.max_queue_requests,
            linger_s=settings.batch_wait_ms / 1000, stall_timeout_s=settings.stall_timeout_s,
            max_padding_ratio=settings.max_padding_ratio,
        )
        self.warmed_up = False

    def _default_batch_tokens(self) -> int:
        """CPU: ~2k-token passes keep activations in cache; GPU: large passes fill the device."""
        return 2048 if self.embedder.device.type == "cpu" else 16384

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()

    @property
    def ready(self) -> bool:
        return self.warmed_up and self.batcher.healthy

    async def warmup(self) -> None:
        """One real inference through the batcher; /ready stays false until it succeeds."""
        await self.embed(["warm-up"], input_type="query", use_cache=False)
        self.warmed_up = True

    def chunk_budget(self) -> int:
        """Text tokens of a document one embedding reads (the model's window less its overhead)."""
        return self.embedder.chunk_budget("document")

    async def split(self, texts: list[str], max_tokens: int, overlap: int) -> list[list[tuple[int, int]]]:
        """Chunk spans of each document text (tokenizing in a worker thread when the texts are long)."""
        if sum(len(t) for t in texts) <= _INLINE_TOKENIZE_CHARS:
            return self.embedder.split(texts, max_tokens, overlap)
        return await anyio.to_thread.run_sync(self.embedder.split, texts, max_tokens, overlap)

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.aliases:
            raise NotFound(f"model '{model}' is not served here; served embedding models: "
                           f"['{self.model_name}']")

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is None:
            return
        if dimensions > self.dim:
            raise InvalidRequest(f"dimensions: {dimensions} is larger than the model's {self.dim}")
        if dimensions < self.dim and not (self.embedder.supports_truncation
                                          or self.settings.allow_untrained_truncation):
            raise InvalidRequest(
                f"dimensions: model '{self.model_name}' was not trained for Matryoshka truncation; "
                "the operator can allow it with RRS_ALLOW_UNTRAINED_TRUNCATION=true"
            )

    async def embed(self, texts: list[str], *, model: str | None = None, input_type: str | None = None,
                    dimensions: int | None = None, truncate: Truncate = "end",
                    timings: StageTimings | None = None,
                    is_disconnected: Callable[[], Awaitable[bool]] | None = None,
                    use_cache: bool = True, bulk: bool = False) -> EmbedResult:
        """`bulk`: the batcher's low-priority lane (collection upserts), which queries overtake."""
        self.check_model(model)
        self.check_dimensions(dimensions)
        if not texts:
            raise InvalidRequest("input: must contain at least one text")
        if len(texts) > self.settings.max_inputs_per_request:
            raise PayloadTooLarge(f"input: {len(texts)} inputs exceed the limit of "
                                  f"{self.settings.max_inputs_per_request} per request "
                                  "(RRS_MAX_INPUTS_PER_REQUEST)")
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidRequest(f"input[{i}]: must be a non-empty string")
        timings = timings or StageTimings()
        deadline = time.monotonic() + self.settings.request_timeout_s

        vectors: list[np.ndarray | None] = [None] * len(texts)
        tokens = [0] * len(texts)
        cut = [False] * len(texts)
        keys = [(self.model_name, input_type, truncate, t) for t in texts]
        if use_cache and input_type != "document":
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is not None:
                    vectors[i], tokens[i], cut[i] = hit
        missing = [i for i, v in enumerate(vectors) if v is None]
        hits = len(texts) - len(missing)

        if missing:
            todo = [texts[i] for i in missing]
            t0 = time.perf_counter()
            try:
                if sum(len(t) for t in todo) <= _INLINE_TOKENIZE_CHARS:
                    toks = self.embedder.tokenize(todo, input_type, truncate)
                else:
                    toks = await anyio.to_thread.run_sync(self.embedder.tokenize, todo, input_type, truncate)
            except InputTooLong as exc:
                raise PayloadTooLarge(
                    f"input[{missing[exc.index]}]: {exc.tokens} tokens exceed the model's limit of "
                    f"{exc.limit} and truncate is 'none'") from None
            tok_s = time.perf_counter() - t0
            timings.add("tokenize", tok_s)
            self.metrics.stage.labels("tokenize").observe(tok_s)
            result = await self.batcher.submit(toks, deadline, is_disconnected, bulk=bulk)
            timings.add("queue", result.queue_s)
            timings.add("inference", result.inference_s)
            self.metrics.stage.labels("queue").observe(result.queue_s)
            for row, i in enumerate(missing):
                vectors[i], tokens[i], cut[i] = result.rows[row], len(toks[row]), toks[row].truncated
                if use_cache and input_type != "document":
                    self.cache.put(keys[i], result.rows[row], len(toks[row]), toks[row].truncated)

        matrix = np.stack(vectors).astype(np.float32, copy=False)  # type: ignore[arg-type]
        matrix = truncate_dimensions(matrix, dimensions, renormalize=self.embedder.normalized)
        return EmbedResult(matrix, sum(tokens), hits, [i for i, c in enumerate(cut) if c])

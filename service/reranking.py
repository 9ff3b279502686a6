"""The rerank service: method/model resolution, limits, lazy model cache, work off the event loop.

`RerankService.rerank` is the one public coroutine, used by `/v1/rerank`, `/v2/rerank` and the
search cascade. Models load lazily on first use and are cached: rerankers per (method, model),
causal LMs per model (so pointwise and listwise over one LLM cost one load). Inference runs in a
worker thread, one at a time per model (two threads on one model only fight over the cores),
while requests for other models proceed. A reranker that raises answers 503 for that request and
leaves the server and its other models untouched.

Pointwise and graded requests are coalesced: those waiting while their model is busy go to it
together in its next call (`JudgeReranker.score_many`), their documents packed into shared
length-sorted batches, each query's prefix still computed once. They queue in a
`TokenBudgetBatcher`, so they get its bounded queue (503 when full) and deadline handling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import numpy as np

from models.llm.loading import CausalLM, load_causal_lm
from models.rerankers import LLM_METHODS, METHODS, Reranker, build_reranker, order_by_score
from models.rerankers.pointwise import JudgeReranker
from service.batching import TokenBudgetBatcher
from service.embedding import EmbeddingService
from service.errors import (
    DeadlineExceeded,
    InvalidRequest,
    PayloadTooLarge,
    ServiceError,
    ServiceUnavailable,
    Unprocessable,
)
from service.metrics import Metrics
from service.settings import Settings
from service.timing import StageTimings

log = logging.getLogger(__name__)


@dataclass
class RerankOutcome:
    """Scores in input order plus the ranking actually returned (best first, cut to top_n)."""

    method: str
    model: str
    scores: list[float]
    order: list[int]
    input_tokens: int
    warnings: list[str] = field(default_factory=list)


JUDGE_METHODS = ("pointwise", "graded")  # one forward pass per document: coalesced across requests


@dataclass(frozen=True, eq=False)
class _JudgeRequest:
    """One request waiting for a judge model; sized by its document tokens for the batcher."""

    query: str
    documents: list[str]
    tokens: int

    def __len__(self) -> int:
        return max(self.tokens, 1)


def _same_model(a: str, b: str) -> bool:
    """Names match exactly or by their last path component ("SmolLM2-135M-Instruct")."""
    a, b = a.strip().lower(), b.strip().lower()
    return a == b or a.rstrip("/").split("/")[-1] == b.rstrip("/").split("/")[-1]


class RerankService:
    """Owns the reranker models; `rerank` is the one public coroutine."""

    def __init__(self, settings: Settings, metrics: Metrics, embedding: EmbeddingService | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.embedding = embedding
        self._rerankers: dict[tuple[str, str], Reranker] = {}
        self._lms: dict[str, CausalLM] = {}
        self._load_lock = threading.Lock()
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        # Held by whichever thread runs a model, so coalesced and per-request calls never overlap.
        self._model_locks: dict[str, threading.Lock] = {}
        self._judges: dict[tuple[str, str], TokenBudgetBatcher[_JudgeRequest]] = {}
        if settings.default_rerank_method not in METHODS:
            raise ValueError(f"RRS_DEFAULT_RERANK_METHOD={settings.default_rerank_method!r}; "
                             f"valid methods: {', '.join(METHODS)}")

    # ---- what is served -------------------------------------------------------------------
    def served_models(self, method: str) -> list[str]:
        """The model names a request may ask for with `method` (the first is the default)."""
        if method in LLM_METHODS:
            return [self.settings.rerank_model, *self.settings.extra_rerank_models]
        if method == "embedding":
            return [self.embedding.model_name] if self.embedding is not None else []
        if method == "cross-encoder":
            return [self.settings.cross_encoder_model] if self.settings.cross_encoder_model else []
        return []

    def resolve(self, method: str | None, model: str | None) -> tuple[str, str]:
        """(method, canonical model name) for a request, or a 400 that lists the valid choices."""
        if method is not None and method not in METHODS:
            raise InvalidRequest(f"method: unknown rerank method '{method}'; valid methods: {', '.join(METHODS)}")
        if method is None:
            method = self.settings.default_rerank_method
            if model is not None and not any(_same_model(model, m) for m in self.served_models(method)):
                # A client that names only a model (Cohere clients always do) gets that model's method.
                method = next((m for m in ("cross-encoder", "embedding", "pointwise")
                               if any(_same_model(model, s) for s in self.served_models(m))), method)
        served = self.served_models(method)
        if not served:
            hint = "RRS_CROSS_ENCODER_MODEL" if method == "cross-encoder" else "the embedding service"
            raise InvalidRequest(f"method: '{method}' has no model on this server (configure {hint})")
        if model is None:
            return method, served[0]
        for name in served:
            if _same_model(model, name):
                return method, name
        raise InvalidRequest(f"model: '{model}' is not served for method '{method}'; valid models: {served}")

    # ---- the public coroutine ---------------------------------------------------------------
    async def rerank(self, query: str, documents: Sequence[str], *, method: str | None = None,
                     model: str | None = None, top_n: int | None = None, max_tokens_per_doc: int | None = None,
                     deadline: float | None = None, timings: StageTimings | None = None) -> RerankOutcome:
        """Score `documents` against `query`; `deadline` is a `time.monotonic()` instant."""
        method, model = self.resolve(method, model)
        self._check_limits(query, documents, top_n, max_tokens_per_doc)
        timings = timings or StageTimings()
        deadline = deadline if deadline is not None else time.monotonic() + self.settings.rerank_timeout_s
        family = self._family(method, model)
        limiter = self._limiters.setdefault(family, anyio.CapacityLimiter(1))
        model_lock = self._model_locks.setdefault(family, threading.Lock())

        def job() -> RerankOutcome:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("rerank: the deadline passed while waiting for the model")
            with model_lock:
                return self._score(method, model, query, list(documents), top_n, max_tokens_per_doc, timings)

        remaining = deadline - time.monotonic()
        try:
            with anyio.fail_after(max(remaining, 0.0)):
                if method in JUDGE_METHODS:
                    return await self._coalesced(method, model, query, list(documents), top_n,
                                                 max_tokens_per_doc, deadline, timings)
                # abandon_on_cancel: a request past its deadline answers now; the thread finishes
                # its batch in the background, holding the model lock until it is done.
                return await anyio.to_thread.run_sync(job, limiter=limiter, abandon_on_cancel=True)
        except TimeoutError:
            raise DeadlineExceeded(f"rerank: no answer within the deadline ({method}, {len(documents)} "
                                   f"documents; RRS_RERANK_TIMEOUT_S={self.settings.rerank_timeout_s:g})") from None

    async def _coalesced(self, method: str, model: str, query: str, documents: list[str], top_n: int | None,
                         max_tokens_per_doc: int | None, deadline: float, timings: StageTimings) -> RerankOutcome:
        """A judge request: queued with the others waiting for this model, scored in one call."""
        with timings.measure("rerank_load"):
            reranker = await anyio.to_thread.run_sync(self._reranker, method, model)
        warnings: list[str] = []
        with timings.measure("rerank_tokenize"):
            documents, doc_tokens = await anyio.to_thread.run_sync(
                self._fit_documents, reranker, documents, max_tokens_per_doc, warnings)
        batcher = self._judge_batcher(method, model, reranker)
        try:
            result = await batcher.submit([_JudgeRequest(query, documents, sum(doc_tokens))], deadline)
        except ServiceError:
            raise
        except Exception as exc:
            log.error("reranker %s/%s failed on a coalesced call: %s", method, model, exc)
            raise ServiceUnavailable(f"rerank: method '{method}' failed on this request: "
                                     f"{type(exc).__name__}: {exc}") from None
        timings.add("rerank_queue", result.queue_s)
        timings.add("rerank", result.inference_s)
        self.metrics.stage.labels("rerank").observe(result.inference_s)
        return self._outcome(method, model, reranker, query, result.rows[0, 0], doc_tokens, top_n, warnings)

    def _judge_batcher(self, method: str, model: str, reranker: Reranker) -> TokenBudgetBatcher[_JudgeRequest]:
        key = (method, model)
        with self._load_lock:
            batcher = self._judges.get(key)
            if batcher is not None:
                return batcher
            assert isinstance(reranker, JudgeReranker)
            model_lock = self._model_locks.setdefault(self._family(method, model), threading.Lock())

            def run(requests: list[_JudgeRequest]) -> np.ndarray:
                with model_lock:
                    results = reranker.score_many([(r.query, r.documents) for r in requests])
                rows = np.empty((len(requests), 1), dtype=object)  # one list of scores per request
                for i, scores in enumerate(results):
                    rows[i, 0] = scores
                return rows

            s = self.settings
            batcher = TokenBudgetBatcher(
                f"rerank_{method}", run, metrics=self.metrics,
                # The engine cuts its own token-budget batches; this bounds one coalesced call.
                max_batch_tokens=s.max_rerank_documents * 512, max_batch_size=s.rerank_max_coalesced,
                max_queue=s.max_queue_requests, linger_s=0.0, stall_timeout_s=s.rerank_timeout_s,
            )
            batcher.start()
            self._judges[key] = batcher
            return batcher

    def close(self) -> None:
        """Stop the coalescing workers (their queued requests fail as the server shuts down)."""
        with self._load_lock:
            batchers, self._judges = list(self._judges.values()), {}
        for batcher in batchers:
            batcher.stop()

    async def preload(self, method: str | None = None) -> None:
        """Load the default (or given) method's model now instead of on the first request."""
        method, model = self.resolve(method, None)
        await anyio.to_thread.run_sync(self._reranker, method, model)

    # ---- internals --------------------------------------------------------------------------
    def _check_limits(self, query: str, documents: Sequence[str], top_n: int | None,
                      max_tokens_per_doc: int | None) -> None:
        if not query.strip():
            raise InvalidRequest("query: must be a non-empty string")
        if not documents:
            raise InvalidRequest("documents: must contain at least one document")
        limit = self.settings.max_rerank_documents
        if len(documents) > limit:
            raise PayloadTooLarge(f"documents: {len(documents)} documents exceed the limit of {limit} per "
                                  "request (RRS_MAX_RERANK_DOCUMENTS)")
        if top_n is not None and top_n < 1:
            raise Unprocessable("top_n: must be >= 1")
        token_limit = self.settings.max_rerank_tokens_per_doc
        if max_tokens_per_doc is not None and not 1 <= max_tokens_per_doc <= token_limit:
            raise Unprocessable(f"max_tokens_per_doc: {max_tokens_per_doc} is outside 1..{token_limit} "
                                "(RRS_MAX_RERANK_TOKENS_PER_DOC)")

    @staticmethod
    def _family(method: str, model: str) -> str:
        """Requests sharing one loaded model share its worker slot."""
        return f"llm:{model}" if method in LLM_METHODS else f"{method}:{model}"

    def _reranker(self, method: str, model: str) -> Reranker:
        key = (method, model)
        with self._load_lock:
            if key in self._rerankers:
                return self._rerankers[key]
            start = time.perf_counter()
            try:
                reranker = self._build(method, model)
            except Exception as exc:  # not cached: a later request retries the load
                log.exception("loading reranker %s/%s failed", method, model)
                raise ServiceUnavailable(f"rerank: could not load model '{model}' for method '{method}': "
                                         f"{type(exc).__name__}: {exc}") from None
            self._rerankers[key] = reranker
            log.info("reranker %s/%s loaded in %.1fs", method, model, time.perf_counter() - start)
            return reranker

    def _build(self, method: str, model: str) -> Reranker:
        s = self.settings
        if method in LLM_METHODS:
            if model not in self._lms:
                self._lms[model] = load_causal_lm(model, s.rerank_device, s.rerank_dtype,
                                                  gguf_cache=s.gguf_cache, gguf_cache_dir=s.gguf_cache_dir)
            return build_reranker(method, lm=self._lms[model], engine=s.rerank_engine)
        if method == "embedding":
            assert self.embedding is not None
            embedder = self.embedding.embedder
            return build_reranker(method, model=model, encode=embedder.encode, tokenizer=embedder.tokenizer)
        return build_reranker(method, model=model, device=s.rerank_device)

    def _score(self, method: str, model: str, query: str, documents: list[str], top_n: int | None,
               max_tokens_per_doc: int | None, timings: StageTimings) -> RerankOutcome:
        with timings.measure("rerank_load"):
            reranker = self._reranker(method, model)
        warnings: list[str] = []
        with timings.measure("rerank_tokenize"):
            documents, doc_tokens = self._fit_documents(reranker, documents, max_tokens_per_doc, warnings)
        start = time.perf_counter()
        try:
            scores = reranker.score(query, documents)
        except ServiceError:
            raise
        except Exception as exc:
            log.exception("reranker %s/%s failed on %d documents", method, model, len(documents))
            raise ServiceUnavailable(f"rerank: method '{method}' failed on this request: "
                                     f"{type(exc).__name__}: {exc}") from None
        seconds = time.perf_counter() - start
        timings.add("rerank", seconds)
        self.metrics.stage.labels("rerank").observe(seconds)
        return self._outcome(method, model, reranker, query, scores, doc_tokens, top_n, warnings)

    @staticmethod
    def _outcome(method: str, model: str, reranker: Reranker, query: str, raw_scores: Sequence[float],
                 doc_tokens: list[int], top_n: int | None, warnings: list[str]) -> RerankOutcome:
        """Scores made finite (NaN ranks last), the ranking cut to `top_n`, and the token count."""
        scores = [float(s) if np.isfinite(s) else float("-inf") for s in raw_scores]
        order = order_by_score(scores)[: top_n or len(scores)]
        tokens = reranker.count_tokens(query) + sum(doc_tokens)
        return RerankOutcome(method, model, scores, order, tokens, warnings)

    def _fit_documents(self, reranker: Reranker, documents: list[str], max_tokens_per_doc: int | None,
                       warnings: list[str]) -> tuple[list[str], list[int]]:
        """Truncate to `max_tokens_per_doc` when asked; otherwise refuse documents over the limit."""
        counts = [reranker.count_tokens(d) for d in documents]
        if max_tokens_per_doc is not None:
            cut = [i for i, c in enumerate(counts) if c > max_tokens_per_doc]
            for i in cut:
                documents[i] = reranker.truncate(documents[i], max_tokens_per_doc)
                counts[i] = max_tokens_per_doc
            if cut:
                warnings.append(f"{len(cut)} documents truncated to max_tokens_per_doc={max_tokens_per_doc}")
            return documents, counts
        limit = self.settings.max_rerank_tokens_per_doc
        for i, c in enumerate(counts):
            if c > limit:
                raise PayloadTooLarge(f"documents[{i}]: {c} tokens exceed the limit of {limit} tokens per "
                                      "document (RRS_MAX_RERANK_TOKENS_PER_DOC); send max_tokens_per_doc "
                                      "to truncate")
        return documents, counts




def cascade_score_fn(service: RerankService) -> Callable[[str, list[str], str | None, str | None],
                                                         Awaitable[tuple[str, list[float]]]]:
    """`service/cascade.py`'s ScoreFn over this service: a missed deadline reads as a timeout there,
    so the cascade keeps the first-stage order instead of failing the search."""

    async def score(query: str, texts: list[str], method: str | None, model: str | None) -> tuple[str, list[float]]:
        try:
            outcome = await service.rerank(query, texts, method=method, model=model)
        except DeadlineExceeded as exc:
            raise TimeoutError(str(exc)) from None
        return outcome.method, outcome.scores

    return score

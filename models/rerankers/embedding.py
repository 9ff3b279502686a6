"""E2Rank-style listwise reranking with the embedding model: pseudo-relevance feedback + cosine.

E2Rank turns an embedding model into a listwise reranker: the query and its top first-stage
candidates are put together into one prompt, that prompt is embedded as an *enriched query*
(pseudo-relevance feedback), and every candidate is rescored by cosine against it. The cost is
one extra query embedding per request (document embeddings are needed anyway), so it runs at
near-retrieval speed.

E2Rank fine-tunes its encoder for such prompts; an off-the-shelf encoder such as all-MiniLM-L6-v2
was not, so the enriched-query cosine is blended with the plain query cosine
(`feedback_weight`, 1.0 = the enriched query alone, as in E2Rank). The defaults were set before
any evaluation, not tuned on the evaluation slice.

The embedding function is passed in (`encode(texts, input_type) -> L2-normalised float32 rows`),
so this module depends on no particular embedder or server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from models.rerankers.base import Reranker

Encode = Callable[[list[str], "str | None"], np.ndarray]


class EmbeddingReranker(Reranker):
    """Cosine against a query enriched with its top `feedback_docs` candidates."""

    method = "embedding"

    def __init__(self, encode: Encode, *, model_name: str = "embedding", feedback_docs: int = 3,
                 feedback_weight: float = 0.5, max_feedback_words: int = 60,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        if feedback_docs < 1:
            raise ValueError("feedback_docs must be >= 1")
        if not 0.0 <= feedback_weight <= 1.0:
            raise ValueError("feedback_weight must be within [0, 1]")
        self.encode = encode
        self.model_name = model_name
        self.feedback_docs, self.feedback_weight = feedback_docs, feedback_weight
        self.max_feedback_words = max_feedback_words
        self.tokenizer = tokenizer

    def enriched_query(self, query: str, documents: Sequence[str], first_stage: np.ndarray) -> str:
        """The listwise pseudo-relevance-feedback prompt: the query, then its top candidates."""
        top = sorted(range(len(documents)), key=lambda i: (-first_stage[i], i))[: self.feedback_docs]
        passages = "\n".join(f"[{rank + 1}] " + " ".join(documents[i].split()[: self.max_feedback_words])
                             for rank, i in enumerate(top))
        return f"{query}\n{passages}"

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        if not documents:
            return []
        docs = np.asarray(self.encode(list(documents), "document"), dtype=np.float32)
        q = np.asarray(self.encode([query], "query"), dtype=np.float32)[0]
        first_stage = docs @ q
        enriched = np.asarray(self.encode([self.enriched_query(query, documents, first_stage)], "query"),
                              dtype=np.float32)[0]
        scores = (1.0 - self.feedback_weight) * first_stage + self.feedback_weight * (docs @ enriched)
        return [float(s) for s in scores]

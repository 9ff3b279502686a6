"""Cross-encoder reranking through sentence-transformers' `CrossEncoder`, for any model path or name.

Cross-encoders (bge-reranker, ms-marco-MiniLM, mxbai-rerank, ...) are the standard accurate
reranker; sentence-transformers already loads them with the right head and activation, so this
backend only resolves the name, batches the pairs and turns the output into one score per pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.device import pick_device
from models.rerankers.base import Reranker
from models.resolve import resolve_model
from models.safety import check_safe_weights


class CrossEncoderReranker(Reranker):
    """Score = the model's relevance output for (query, document)."""

    method = "cross-encoder"

    def __init__(self, model_name: str, *, device: str = "auto", batch_size: int = 32,
                 max_length: int | None = None) -> None:
        from sentence_transformers import CrossEncoder

        resolved = resolve_model(model_name)
        kwargs = {"local_files_only": True} if resolved.is_local else {}
        if resolved.is_local:  # never unpickle weights from a user-supplied path
            check_safe_weights(resolved.path)
        self.model = CrossEncoder(resolved.path, device=str(pick_device(device)), max_length=max_length, **kwargs)
        self.model.eval()
        self.model_name = model_name
        self.tokenizer = self.model.tokenizer
        self.batch_size = batch_size

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        if not documents:
            return []
        out = np.asarray(self.model.predict([(query, d) for d in documents], batch_size=self.batch_size,
                                            convert_to_numpy=True, show_progress_bar=False), dtype=np.float64)
        if out.ndim == 2:  # several labels (e.g. a 2-way relevant/irrelevant head): take "relevant"
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out = out[:, -1] / out.sum(axis=1)
        return [float(s) for s in out]

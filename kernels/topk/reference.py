"""PyTorch references for similarity top-k: the plain full-matrix version and a corpus-chunked one."""

from __future__ import annotations

import torch


def similarity_topk_reference(queries: torch.Tensor, corpus: torch.Tensor,
                              k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(queries @ corpus.T).topk(k)`: the specification (materialises the whole score matrix)."""
    scores, ids = (queries @ corpus.T).topk(k, dim=1)
    return scores, ids.to(torch.int64)


def similarity_topk_chunked(queries: torch.Tensor, corpus: torch.Tensor, k: int,
                            chunk_rows: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k with the score matrix bounded to (queries x chunk_rows): the matmul path for any k.

    Each corpus chunk's top-k is merged with the running top-k, so memory stays flat in corpus size.
    """
    best_scores: torch.Tensor | None = None
    best_ids: torch.Tensor | None = None
    for start in range(0, corpus.shape[0], chunk_rows):
        chunk = corpus[start:start + chunk_rows]
        scores, ids = (queries @ chunk.T).topk(min(k, chunk.shape[0]), dim=1)
        ids = ids.to(torch.int64) + start
        if best_scores is None or best_ids is None:
            best_scores, best_ids = scores, ids
            continue
        merged_scores = torch.cat([best_scores, scores], dim=1)
        merged_ids = torch.cat([best_ids, ids], dim=1)
        best_scores, order = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
        best_ids = merged_ids.gather(1, order)
    if best_scores is None or best_ids is None:
        raise ValueError("corpus is empty")
    return best_scores, best_ids

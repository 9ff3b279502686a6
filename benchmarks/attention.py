"""Reranker scoring throughput on the shipped SmolLM2: packed shared-prefix vs padded per-pair.

Every engine computes the same thing (the final hidden state at each (query prefix + document)
sequence's last token, then yes/no logits); they differ in how much work they do: the padded
baseline runs every full sequence right-padded, the cache engine runs the prefix once and pads
the document batches, the packed engine runs the prefix once and packs all documents in one
varlen batch with no padding (fused kernel on GPU, exact SDPA path on CPU).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_DATASET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "msmarco-dl-5k"
INSTRUCTION = ("Judge whether the passage answers the search query. Reply with yes or no only; a passage "
               "that merely mentions the topic without answering it is not relevant.\nQuery: {query}\nPassage: ")


def _documents(dataset: Path, count: int, tokenizer: Any, target_tokens: int) -> tuple[str, list[str]]:
    """The first `count` corpus passages (truncated to ~target_tokens) and the first query."""
    docs: list[str] = []
    with open(dataset / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:target_tokens]
            if len(ids) >= target_tokens // 2:
                docs.append(tokenizer.decode(ids))
            if len(docs) == count:
                break
    with open(dataset / "queries.jsonl", encoding="utf-8") as fh:
        query = json.loads(fh.readline())["text"]
    return query, docs


def run(dataset: Path, docs: int = 100, doc_tokens: int = 100, engines: tuple[str, ...] = ("padded", "cache", "packed"),
        repeats: int = 1) -> dict[str, Any]:
    from models.llm.loading import load_causal_lm
    from models.llm.packed_scoring import PackedPrefixScorer
    from models.llm.prefix_scoring import PaddedScorer, PrefixScorer

    lm = load_causal_lm("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu", dtype="float32",
                        attn_implementation="sdpa")
    model, tokenizer = lm.model, lm.tokenizer
    query, texts = _documents(dataset, docs, tokenizer, doc_tokens)
    prefix = tokenizer(INSTRUCTION.format(query=query), add_special_tokens=False)["input_ids"]
    suffixes = [tokenizer(t + "\nRelevant:", add_special_tokens=False)["input_ids"] for t in texts]
    yes_no = [tokenizer(" yes", add_special_tokens=False)["input_ids"][-1],
              tokenizer(" no", add_special_tokens=False)["input_ids"][-1]]
    factories = {"padded": lambda: PaddedScorer(model), "cache": lambda: PrefixScorer(model),
                 "packed": lambda: PackedPrefixScorer(model)}
    rows: dict[str, dict[str, float]] = {}
    scores: dict[str, torch.Tensor] = {}
    for name in engines:
        scorer = factories[name]()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            hidden = scorer.last_hidden_states(prefix, suffixes)
            best = min(best, time.perf_counter() - t0)
        with torch.inference_mode():
            scores[name] = (hidden @ model.lm_head.weight[yes_no].T).float().softmax(-1)[:, 0]
        rows[name] = {"seconds": best, "pairs_per_s": len(suffixes) / best}
    base = rows[engines[0]]["seconds"]
    for name in engines:
        rows[name]["speedup_vs_" + engines[0]] = base / rows[name]["seconds"]
        rows[name]["max_score_diff_vs_" + engines[0]] = float((scores[name] - scores[engines[0]]).abs().max())
    return {"docs": len(suffixes), "prefix_tokens": len(prefix),
            "mean_doc_tokens": sum(map(len, suffixes)) / len(suffixes), "threads": torch.get_num_threads(),
            "engines": rows}

"""RankGPT-style listwise reranking: sliding windows that generate a permutation.

Windows of `window` passages slide from the back of the first-stage list to the front by `step`
(RankGPT order), so a relevant passage found late can bubble up through overlapping windows. Each
window prompt lists the passages as [1]..[w] and asks for "[3] > [1] > ..."; the generated text
goes through `parse_permutation`, which never loses or duplicates a passage whatever the model
writes. What overlapping windows can reuse, they do: the instruction + query prefix is computed
once per window size and its KV cache copied into each window's generation, and a window whose
passages arrive in an order already ranked is answered from memory. Per-document scores come
from the final rank (`scores_from_order`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from models.llm.loading import CausalLM
from models.rerankers.base import Reranker, ScoresFromRank, truncate_text

ANSWER_START = "["
_NUMBER = re.compile(r"\d+")

RANKGPT_SYSTEM = ("You are RankGPT, an intelligent assistant that can rank passages based on their "
                  "relevancy to the query.")


def parse_permutation(text: str, n: int) -> list[int]:
    """A permutation of range(n) from model output such as "[2] > [1] > [3]".

    Numbers are read in order as 1-based passage ids; ids out of range are ignored, repeats keep
    their first position, and passages the model never named follow in their original order.
    The result always holds every index exactly once.
    """
    seen: set[int] = set()
    order: list[int] = []
    for match in _NUMBER.finditer(text):
        digits = match.group().lstrip("0")
        if not digits or len(digits) > len(str(n)):  # "0", "007", absurdly long numbers
            continue
        index = int(digits) - 1
        if index < n and index not in seen:
            seen.add(index)
            order.append(index)
    order.extend(i for i in range(n) if i not in seen)
    return order


def window_starts(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """(start, end) of each window, back to front, the last one always starting at 0."""
    if window < 2 or not 1 <= step <= window:
        raise ValueError("window must be >= 2 and 1 <= step <= window (else windows leave gaps)")
    spans: list[tuple[int, int]] = []
    end = n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step


class ListwiseReranker(ScoresFromRank, Reranker):
    """Sliding-window permutation generation (RankGPT prompt, greedy decoding)."""

    method = "listwise"

    def __init__(self, lm: CausalLM, *, window: int = 20, step: int = 10, max_passage_tokens: int = 100) -> None:
        window_starts(0, window, step)  # validates window and step
        self.lm = lm
        self.model_name = lm.name
        self.tokenizer = lm.tokenizer
        self.window, self.step, self.max_passage_tokens = window, step, max_passage_tokens

    def _prompt(self, query: str, passages: Sequence[str]) -> tuple[str, str]:
        """(shared head, full prompt) for one window; the head depends only on the query and size."""
        n = len(passages)
        listing = "\n".join(f"[{i + 1}] {p}" for i, p in enumerate(passages))
        user = (f"I will provide you with {n} passages, each indicated by number identifier []. Rank the "
                f"passages based on their relevance to query: {query}.\n\n{{listing}}\n\nSearch Query: {query}.\n"
                f"Rank the {n} passages above based on their relevance to the search query. The passages "
                "should be listed in descending order using identifiers. The most relevant passages should "
                "be listed first. The output format should be [] > [], e.g., [1] > [2]. Only respond with "
                "the ranking results, do not say any word or explain.")
        # The answer is started with "[" so that small models commit to the ranking format.
        full = self.lm.render(RANKGPT_SYSTEM, user.replace("{listing}", listing), ANSWER_START)
        head = full[: full.index("[1] ")]
        return head, full

    @torch.inference_mode()
    def _generate(self, head_ids: list[int], head_cache: DynamicCache, prompt_ids: list[int], n: int) -> str:
        device = self.lm.device
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
        out = self.lm.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=copy.deepcopy(head_cache),
            max_new_tokens=5 * n + 8, do_sample=False, pad_token_id=self.lm.tokenizer.pad_token_id,
        )
        return ANSWER_START + str(self.lm.tokenizer.decode(out[0, len(prompt_ids):], skip_special_tokens=True))

    def rank(self, query: str, documents: Sequence[str]) -> list[int]:
        passages = [truncate_text(self.tokenizer, " ".join(d.split()), self.max_passage_tokens)
                    for d in documents]
        order = list(range(len(documents)))
        heads: dict[int, tuple[list[int], DynamicCache]] = {}
        ranked_windows: dict[tuple[int, ...], list[int]] = {}
        for start, end in window_starts(len(order), self.window, self.step):
            members = tuple(order[start:end])
            if len(members) < 2:
                continue
            if members not in ranked_windows:
                head, full = self._prompt(query, [passages[i] for i in members])
                if len(members) not in heads:
                    head_ids = self.lm.encode(head, leading=True)
                    with torch.inference_mode():
                        cache = self.lm.model(
                            input_ids=torch.tensor([head_ids], device=self.lm.device), use_cache=True,
                        ).past_key_values
                    heads[len(members)] = (head_ids, cache)
                head_ids, cache = heads[len(members)]
                prompt_ids = head_ids + self.lm.encode(full[len(head):])
                text = self._generate(head_ids, cache, prompt_ids, len(members))
                ranked_windows[members] = [members[i] for i in parse_permutation(text, len(members))]
            order[start:end] = ranked_windows[members]
        return order

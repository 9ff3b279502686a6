"""Pointwise yes/no reranking: relevance = P("yes") against P("no") after a judge prompt.

The Qwen3-Reranker recipe (also monoT5's): one forward pass per (query, document), no
generation; the score is the softmax over only the "yes"/"no" next-token logits. The judge prompt
is a `JudgeTemplate`, chosen per model: the Qwen3-Reranker models get the exact template they
were trained with, other models a plain instruction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from models.llm.loading import CausalLM
from models.rerankers.llm_base import LLMReranker, split_prompt, suffix_ids

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: `user` holds {instruction}, {query} and then {document}, in that order."""

    system: str
    user: str
    assistant_start: str = ""
    instruction: str = DEFAULT_INSTRUCTION


# The question sits before the document, so everything but the document is shared prefix.
YES_NO_TEMPLATE = JudgeTemplate(
    system='Judge whether the Document answers the Query. Note that the answer can only be "yes" or "no".',
    user="<Instruct>: {instruction}\n<Query>: {query}\n"
         'Does the following Document answer the Query? Answer only "yes" or "no".\n<Document>: {document}',
)

QWEN3_RERANKER_TEMPLATE = JudgeTemplate(
    system="Judge whether the Document meets the requirements based on the Query and the Instruct "
           'provided. Note that the answer can only be "yes" or "no".',
    user="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    assistant_start="<think>\n\n</think>\n\n",
)

# Lower-cased substrings of a model name -> the template that model was trained with.
MODEL_TEMPLATES: dict[str, JudgeTemplate] = {"qwen3-reranker": QWEN3_RERANKER_TEMPLATE}

YES_SPELLINGS = ("yes", " yes", "Yes", " Yes")
NO_SPELLINGS = ("no", " no", "No", " No")


def template_for(model_name: str, default: JudgeTemplate) -> JudgeTemplate:
    """The template registered for `model_name`, else `default`."""
    lowered = model_name.lower()
    for key, template in MODEL_TEMPLATES.items():
        if key in lowered:
            return template
    return default


class JudgeReranker(LLMReranker):
    """A judge prompt per document, scored from the next-token distribution over answer labels."""

    default_template: JudgeTemplate = YES_NO_TEMPLATE

    def __init__(self, lm: CausalLM, *, template: JudgeTemplate | None = None, **kwargs: object) -> None:
        super().__init__(lm, **kwargs)  # type: ignore[arg-type]
        self.template = template or template_for(lm.name, self.default_template)

    def label_spellings(self) -> list[Sequence[str]]:
        raise NotImplementedError

    def reduce(self, log_probs: list[list[float]]) -> list[float]:
        """Per-document score from its log-probabilities over the labels."""
        raise NotImplementedError

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        return self.score_many([(query, documents)])[0]

    def score_many(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Scores for several (query, documents) requests from one batched engine call.

        Each query's prefix is computed once and documents of all requests share batches, so
        requests that arrive together cost about what one request with all their documents costs.
        A row's score does not depend on what it was batched with.
        """
        groups = [self._prompt_group(query, documents) for query, documents in requests]
        live = [g for g in groups if g[1]]
        labels = [self.lm.label_ids(spellings) for spellings in self.label_spellings()]
        results = iter(self.label_log_probs_groups(live, labels) if live else [])
        return [self.reduce(next(results).tolist()) if suffixes else [] for _, suffixes in groups]

    def _prompt_group(self, query: str, documents: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        t = self.template
        user = t.user.format(instruction=t.instruction, query=query, document="{varying}")
        parts = split_prompt(self.lm, t.system, user, t.assistant_start)
        return parts.prefix_ids, [suffix_ids(self.lm, parts, self.clip(d)) for d in documents]


class PointwiseReranker(JudgeReranker):
    """Score = P(yes) / (P(yes) + P(no)) at the answer position."""

    method = "pointwise"

    def label_spellings(self) -> list[Sequence[str]]:
        return [YES_SPELLINGS, NO_SPELLINGS]

    def reduce(self, log_probs: list[list[float]]) -> list[float]:
        return [math.exp(row[0]) for row in log_probs]

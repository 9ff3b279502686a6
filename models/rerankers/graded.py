"""Graded pointwise reranking: the expected relevance grade from one forward pass.

ERank asks for a fine-grained integer grade and scores grade x P(grade), which separates
"somewhat" from "fully" relevant better than yes/no. ERank itself first *generates a reasoning
trace* and then the grade; ours is the single-pass variant: no generation, the distribution over
the grade tokens 0..k at the answer position gives the expected grade, normalised to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from models.llm.loading import CausalLM
from models.rerankers.pointwise import JudgeReranker, JudgeTemplate

# The TREC Deep Learning grading scale (0..3), stated in the prompt so the grades mean something.
GRADED_TEMPLATE = JudgeTemplate(
    system="Judge how well the Document answers the Query on a scale from 0 to 3: "
           "0 = irrelevant, 1 = related but does not answer, 2 = partly answers, "
           "3 = answers the query completely. Answer with a single digit.",
    user="<Instruct>: {instruction}\n<Query>: {query}\nGrade (0, 1, 2 or 3) the following Document.\n"
         "<Document>: {document}",
)


class GradedReranker(JudgeReranker):
    """Score = E[grade] / k over the single-digit grade tokens 0..k (k <= 9)."""

    method = "graded"
    default_template = GRADED_TEMPLATE

    def __init__(self, lm: CausalLM, *, max_grade: int = 3, **kwargs: object) -> None:
        if not 1 <= max_grade <= 9:
            raise ValueError("max_grade must be between 1 and 9 (grades must be single digits)")
        super().__init__(lm, **kwargs)
        self.max_grade = max_grade

    def label_spellings(self) -> list[Sequence[str]]:
        return [(str(g), f" {g}") for g in range(self.max_grade + 1)]

    def reduce(self, log_probs: list[list[float]]) -> list[float]:
        return [sum(g * math.exp(lp) for g, lp in enumerate(row)) / self.max_grade for row in log_probs]

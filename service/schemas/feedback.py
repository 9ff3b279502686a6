"""Request/response models of a collection's relevance feedback (`/v1/collections/{name}/feedback`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Judgment(BaseModel):
    id: str = Field(..., min_length=1, max_length=512, description="A document id of the collection.")
    relevance: int = Field(
        ..., ge=0, le=3, description="Graded like TREC: 0 not relevant, 1 on the topic, 2 relevant, 3 a perfect "
        "answer. Calibration counts grade >= 2 as relevant by default (`rrs calibrate --min-grade`)."
    )


class FeedbackRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=8192, description="The query text as searched.")
    query_id: str | None = Field(
        None, min_length=1, max_length=512,
        description="Groups judgments of one query; default: derived from the query text, so repeated "
        "feedback on the same query adds to it.",
    )
    judgments: list[Judgment] = Field(..., min_length=1, max_length=1000)


class FeedbackSummary(BaseModel):
    collection: str
    queries: int = Field(..., description="Queries with at least one judgment.")
    judgments: int
    relevant: int = Field(..., description="Judgments with relevance >= 2.")


class FeedbackResponse(FeedbackSummary):
    query_id: str
    recorded: int = Field(..., description="Judgments this request stored (a repeated pair replaces the old one).")


class FeedbackCleared(BaseModel):
    collection: str
    deleted: int

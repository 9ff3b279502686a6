"""OpenAI-compatible embeddings shapes (field names match the OpenAI API)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(..., description="A text or a list of texts to embed.")
    model: str | None = Field(None, description="Served model name; defaults to the server's embed model.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Matryoshka truncation, re-normalised.")
    input_type: Literal["query", "document"] | None = Field(
        None, description="Applies the model's own query/document prompt where its config defines one."
    )
    truncate: Literal["end", "start", "none"] = Field(
        "end", description="How to cut inputs longer than the model's limit; `none` makes them an error."
    )
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "rrs"
    task: str
    dimensions: int | None = None
    max_input_tokens: int | None = None
    runtime: str | None = Field(None, description="Which runtime runs which batches (embedder: torch, onnx, "
                                "or onnx up to a padded size and torch above).")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

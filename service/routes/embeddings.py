"""POST /v1/embeddings (OpenAI shape) and GET /v1/models."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Request

from service.dependencies import get_embedding_service, require_api_key
from service.embedding import EmbeddingService
from service.schemas.common import ERROR_RESPONSES
from service.schemas.embeddings import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
)
from service.timing import request_timings

router = APIRouter(tags=["embeddings"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


def _encode(row: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # little-endian float32, as the OpenAI client decodes it
        return base64.b64encode(row.astype("<f4").tobytes()).decode()
    return row.tolist()


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request,
                            service: EmbeddingService = Depends(get_embedding_service)) -> EmbeddingResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await service.embed(texts, model=body.model, input_type=body.input_type,
                                 dimensions=body.dimensions, truncate=body.truncate,
                                 timings=request_timings(request), is_disconnected=request.is_disconnected)
    data = [EmbeddingData(index=i, embedding=_encode(row, body.encoding_format))
            for i, row in enumerate(result.vectors)]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return EmbeddingResponse(data=data, model=body.model or service.model_name, usage=usage)


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    emb: EmbeddingService = request.app.state.embedding
    cards = [ModelCard(id=emb.model_name, task="embed", dimensions=emb.dim,
                       max_input_tokens=emb.embedder.max_seq_length, runtime=emb.embedder.runtime_summary)]
    for card in getattr(request.app.state, "extra_model_cards", []):
        cards.append(card)
    return ModelList(data=cards)

"""RerankService in-process: method/model resolution, deadlines, and recovery after a timeout."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from service.errors import DeadlineExceeded, InvalidRequest
from service.metrics import Metrics
from service.reranking import RerankService, cascade_score_fn
from service.settings import Settings

QUERY = "how do cats purr"
DOCUMENTS = ["Cats purr by vibrating the larynx.", "Banana bread with walnuts.", "Purring cats."]


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sentence_transformers import CrossEncoder

    from models.resolve import resolve_model

    path = tmp_path_factory.mktemp("svc-cross-encoder") / "ce"
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path, num_labels=1,
                 device="cpu").save(str(path))
    return path


def _service(cross_encoder_dir: Path, **overrides: object) -> RerankService:
    settings = Settings(cross_encoder_model=str(cross_encoder_dir), default_rerank_method="cross-encoder",
                        rerank_device="cpu", **overrides)
    return RerankService(settings, Metrics())


def test_a_model_name_alone_picks_its_method(cross_encoder_dir: Path) -> None:
    service = _service(cross_encoder_dir)
    assert service.resolve(None, None) == ("cross-encoder", str(cross_encoder_dir))
    assert service.resolve(None, "SmolLM2-135M-Instruct") == ("pointwise", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert service.resolve("graded", None)[0] == "graded"
    with pytest.raises(InvalidRequest, match="valid models"):
        service.resolve("listwise", "gpt-4")
    with pytest.raises(InvalidRequest, match="has no model"):
        service.resolve("embedding", None)  # no embedding service in this process


def test_a_missed_deadline_answers_and_the_next_request_still_works(cross_encoder_dir: Path) -> None:
    service = _service(cross_encoder_dir)

    async def scenario() -> None:
        with pytest.raises(DeadlineExceeded):
            # The model load alone takes longer than this.
            await service.rerank(QUERY, DOCUMENTS, deadline=time.monotonic() + 0.01)
        outcome = await service.rerank(QUERY, DOCUMENTS, top_n=2, deadline=time.monotonic() + 120)
        assert outcome.method == "cross-encoder" and len(outcome.order) == 2
        assert len(outcome.scores) == len(DOCUMENTS)
        assert outcome.order == sorted(range(3), key=lambda i: -outcome.scores[i])[:2]

    anyio.run(scenario)


def test_the_cascade_sees_a_missed_deadline_as_a_timeout(cross_encoder_dir: Path) -> None:
    score = cascade_score_fn(_service(cross_encoder_dir, rerank_timeout_s=0.01))

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await score(QUERY, DOCUMENTS, None, None)

    anyio.run(scenario)


def test_concurrent_pointwise_requests_are_coalesced_and_score_as_alone(cross_encoder_dir: Path) -> None:
    service = _service(cross_encoder_dir)
    requests = [("how do cats purr", DOCUMENTS),
                ("banana bread recipe with walnuts and a lot of butter", DOCUMENTS[::-1]),
                ("larynx", DOCUMENTS[:2]),
                ("why do cats purr when they are happy", DOCUMENTS[1:])]

    def calls() -> float:
        return service.metrics.registry.get_sample_value(
            "rrs_batch_size_count", {"queue": "rerank_pointwise"}) or 0.0

    async def scenario() -> None:
        far = time.monotonic() + 300
        alone = [await service.rerank(q, docs, method="pointwise", deadline=far) for q, docs in requests]
        assert calls() == len(requests)
        async with anyio.create_task_group() as tg:
            together: list = [None] * len(requests)

            async def one(i: int) -> None:
                q, docs = requests[i]
                together[i] = await service.rerank(q, docs, method="pointwise", deadline=far)

            for i in range(len(requests)):
                tg.start_soon(one, i)
        # The first request starts alone; the ones that arrived meanwhile share the next call.
        assert calls() - len(requests) < len(requests)
        for a, t in zip(alone, together, strict=True):
            assert t.scores == pytest.approx(a.scores, abs=1e-5)
            assert t.order == a.order

    try:
        anyio.run(scenario)
    finally:
        service.close()

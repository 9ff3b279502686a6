"""Every reranking method on real shipped models: complete rankings, deterministic scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.llm.loading import CausalLM
from models.rerankers import METHODS, Reranker, build_reranker, order_by_score
from tests.test_causal_lm import shipped_lm

QUERY = "how do cats purr"
DOCUMENTS = [
    "The stock market fell on Tuesday.",
    "Cats purr by vibrating the muscles of the larynx while breathing.",
    "Purring is a sound made by cats.",
    "A recipe for banana bread with walnuts.",
    "Domestic cats purr at 25 to 150 Hz, a sound also linked to healing.",
]


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return shipped_lm()


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained-head) cross-encoder built from the shipped MiniLM weights and saved locally."""
    from sentence_transformers import CrossEncoder

    from models.resolve import resolve_model

    path = tmp_path_factory.mktemp("cross-encoder") / "minilm-ce"
    CrossEncoder(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path, num_labels=1,
                 device="cpu").save(str(path))
    return path


def _build(method: str, lm: CausalLM, embedder: object, cross_encoder_dir: Path, **options: object) -> Reranker:
    if method == "embedding":
        return build_reranker(method, encode=embedder.encode, **options)  # type: ignore[attr-defined]
    if method == "cross-encoder":
        return build_reranker(method, model=str(cross_encoder_dir), device="cpu", **options)
    if method in ("listwise", "first"):
        options = {"window": 3, "step": 2, **options}
    return build_reranker(method, lm=lm, **options)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_ranks_every_document_exactly_once(method: str, lm: CausalLM, embedder: object,
                                                       cross_encoder_dir: Path) -> None:
    reranker = _build(method, lm, embedder, cross_encoder_dir)
    scores = reranker.score(QUERY, DOCUMENTS)
    assert len(scores) == len(DOCUMENTS)
    assert all(isinstance(s, float) for s in scores)
    assert sorted(order_by_score(scores)) == list(range(len(DOCUMENTS)))
    assert sorted(reranker.rank(QUERY, DOCUMENTS)) == list(range(len(DOCUMENTS)))
    assert reranker.score(QUERY, []) == []


@pytest.mark.parametrize("method", ["pointwise", "graded", "cross-encoder"])
def test_scores_do_not_depend_on_batch_composition(method: str, lm: CausalLM, embedder: object,
                                                   cross_encoder_dir: Path) -> None:
    """The same document gets the same score alone, in a big batch, in a small batch, in any order."""
    if method == "cross-encoder":
        big, tiny = (_build(method, lm, embedder, cross_encoder_dir, batch_size=b) for b in (32, 1))
    else:
        big, tiny = (_build(method, lm, embedder, cross_encoder_dir, token_budget=b) for b in (4096, 1))
    reference = big.score(QUERY, DOCUMENTS)
    assert big.score(QUERY, DOCUMENTS) == reference  # identical across calls
    assert tiny.score(QUERY, DOCUMENTS) == pytest.approx(reference, abs=1e-5)
    assert big.score(QUERY, DOCUMENTS[::-1])[::-1] == pytest.approx(reference, abs=1e-5)
    assert big.score(QUERY, DOCUMENTS[1:2]) == pytest.approx(reference[1:2], abs=1e-5)


def test_pointwise_scores_are_probabilities_and_graded_expected_grades(lm: CausalLM) -> None:
    for method in ("pointwise", "graded"):
        scores = build_reranker(method, lm=lm).score(QUERY, DOCUMENTS[:2])
        assert all(0.0 < s < 1.0 for s in scores)


def test_cache_and_padded_engines_give_the_same_pointwise_scores(lm: CausalLM) -> None:
    cached = build_reranker("pointwise", lm=lm, engine="cache").score(QUERY, DOCUMENTS)
    padded = build_reranker("pointwise", lm=lm, engine="padded").score(QUERY, DOCUMENTS)
    assert cached == pytest.approx(padded, abs=1e-4)


def test_embedding_method_rescores_with_the_enriched_query(embedder: object) -> None:
    plain = build_reranker("embedding", encode=embedder.encode, feedback_weight=0.0)  # type: ignore[attr-defined]
    enriched = build_reranker("embedding", encode=embedder.encode, feedback_weight=1.0)  # type: ignore[attr-defined]
    first_stage = plain.score(QUERY, DOCUMENTS)
    assert first_stage == pytest.approx(embedder.encode(DOCUMENTS, "document")  # type: ignore[attr-defined]
                                        @ embedder.encode([QUERY], "query")[0], abs=1e-5)  # type: ignore[attr-defined]
    assert enriched.score(QUERY, DOCUMENTS) != pytest.approx(first_stage, abs=1e-3)


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="pointwise.*cross-encoder"):
        build_reranker("bm25")


def test_truncate_cuts_at_a_token_boundary(lm: CausalLM) -> None:
    reranker = build_reranker("pointwise", lm=lm)
    text = "Cats purr by vibrating the muscles of the larynx while breathing."
    cut = reranker.truncate(text, 4)
    assert text.startswith(cut) and reranker.count_tokens(cut) == 4
    assert reranker.truncate(text, 1000) == text


@pytest.mark.parametrize("method", ["pointwise", "graded"])
def test_score_many_equals_each_request_scored_alone(method: str, lm: CausalLM) -> None:
    reranker = build_reranker(method, lm=lm)
    requests = [("how do cats purr", ["Cats purr with their larynx.", "Stocks fell.", "Purring cats"]),
                ("boiling point of water at high altitude in the mountains", ["Water boils at lower "
                 "temperatures at altitude because the air pressure is lower.", "Cats purr."]),
                ("tides", []),
                ("tides", ["The moon's gravity causes the tides."])]
    together = reranker.score_many(requests)
    assert [len(s) for s in together] == [len(d) for _, d in requests]
    for (query, docs), scores in zip(requests, together, strict=True):
        assert scores == pytest.approx(reranker.score(query, docs), abs=1e-5)

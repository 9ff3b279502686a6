"""Splitting long texts into token windows: coverage, limits, clean cuts, and the real tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexing.chunks import check_chunking, resolve_chunking
from models.embedder.chunking import split_by_words, split_texts, token_windows

DEMO = Path(__file__).resolve().parents[1] / "service" / "demo" / "demo_corpus.jsonl"  # ships with rrs


@settings(max_examples=200, deadline=None)
@given(
    words=st.lists(st.integers(1, 12), min_size=1, max_size=400),
    max_tokens=st.integers(8, 64),
    overlap_share=st.floats(0, 0.5),
)
def test_windows_cover_every_token_within_the_limit_and_advance(words, max_tokens, overlap_share):
    """Random texts of words of 1-12 characters, one token per 3 characters (word pieces)."""
    text, offsets = "", []
    for n in words:
        start = len(text)
        text += "a" * n + (". " if n == 7 else " ")
        offsets += [(start + i, min(start + i + 3, start + n)) for i in range(0, n, 3)]
    overlap = int(overlap_share * (max_tokens // 2))
    windows = token_windows(offsets, text, max_tokens, overlap)
    assert windows[0][0] == 0 and windows[-1][1] == len(offsets)
    for (a, b), (c, d) in zip(windows, windows[1:], strict=False):
        assert a < c <= b < d  # each window starts later, overlaps or touches the last, ends later
    assert all(0 < b - a <= max_tokens for a, b in windows)
    if len(windows) > 1:  # balanced: none of them a sliver
        assert min(b - a for a, b in windows) >= max_tokens // 4


def test_texts_that_fit_are_one_span_covering_them(embedder):
    texts = ["A short passage.", "  padded text  "]
    assert split_texts(embedder.tokenizer, texts, 254, 31) == [[(0, 16)], [(0, 15)]]


def test_long_texts_cut_into_windows_the_model_reads_whole(embedder):
    rows = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()[:30]]
    text = "\n\n".join(r["text"] for r in rows)
    spans = embedder.split([text], 64, 8)[0]
    assert len(spans) > 10 and spans[0][0] == 0 and spans[-1][1] == len(text.rstrip())
    for (_, b), (c, _) in zip(spans, spans[1:], strict=False):
        assert c < b  # consecutive chunks overlap
        assert not text[c - 1].isalnum()  # a chunk starts at a word (after a space or a dropped character)
    tokens = embedder.tokenize([text[a:b] for a, b in spans], "document")
    assert all(len(t) <= 64 + 2 and not t.truncated for t in tokens)  # + [CLS] and [SEP]
    covered = bytearray(len(text))
    for a, b in spans:
        covered[a:b] = b"\x01" * (b - a)
    assert all(covered[i] or c.isspace() for i, c in enumerate(text))  # nothing left out
    ends = sum(text[b - 1] in ".!?" for _, b in spans[:-1])
    assert ends >= len(spans) // 2  # most cuts fall at the end of a sentence


def test_tokenizers_without_offsets_split_by_whole_words(embedder):
    """The fallback for tokenizers that cannot map tokens to characters, on the real tokenizer."""
    slow = embedder.tokenizer
    text = " ".join(f"word{i} is here." for i in range(200))
    spans = split_by_words(slow, text, 32, 4)
    assert len(spans) > 5 and spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all((a == 0 or text[a - 1] == " ") and (b == len(text) or text[b] == " ") for a, b in spans)
    assert all(len(slow(text[a:b], add_special_tokens=False)["input_ids"]) <= 32 for a, b in spans)


def test_chunk_settings_are_checked_against_the_model():
    assert resolve_chunking(254, None, None) == (254, 31)
    assert resolve_chunking(254, 128, None) == (128, 16)
    assert resolve_chunking(254, 0, None) == (None, 0)
    with pytest.raises(ValueError, match="chunk_tokens: must be between 8 and the model's window of 254"):
        check_chunking(255, 0, 254)
    with pytest.raises(ValueError, match="chunk_overlap"):
        resolve_chunking(254, 64, 33)

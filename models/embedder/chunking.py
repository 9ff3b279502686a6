"""Split long texts into overlapping token windows, as character spans of the original text.

An encoder reads a fixed number of tokens; whatever lies beyond is silently not embedded. A
collection with chunking on embeds each window of a long document as its own vector instead, so
every part of the text can be found. Windows are cut on the model's own tokens (so each one fits
the model exactly), end at a sentence break when one falls in the window's last quarter, else at
a word break, and overlap by `overlap` tokens so that a sentence cut in two is whole in one of them.

Spans are Python string offsets (code points) into the text as given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

Span = tuple[int, int]

_SENTENCE_END = frozenset(".!?;\n\u3002\uff01\uff1f")
_WORD = re.compile(r"\S+")


def token_windows(offsets: Sequence[Span], text: str, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges covering every token; `offsets` are each token's character span.

    Windows are balanced: the fewest windows of at most `max_tokens` that cover the text, of about
    equal size (recomputed after each cut), so no document ends in a sliver of a chunk whose few
    tokens make a noisy vector.
    """
    n = len(offsets)
    if n <= max_tokens:
        return [(0, n)]
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        remaining = n - start
        count = -(-(remaining - overlap) // (max_tokens - overlap))  # windows still needed, at least 1
        if count <= 1:
            windows.append((start, n))
            return windows
        size = -(-(remaining - overlap) // count) + overlap  # <= max_tokens
        previous = windows[-1][1] if windows else 0
        nominal = min(max(start + size, previous + 1), start + max_tokens)
        floor = max(start + max(1, (3 * size) // 4), previous)
        end = _break_before(offsets, text, floor, nominal)  # always past the previous window's end
        windows.append((start, end))
        start = _word_start(offsets, max(end - overlap, start + 1), start + 1, end, end - max_tokens + 1)


def _word_start(offsets: Sequence[Span], t: int, lowest: int, limit: int, earliest: int) -> int:
    """A window start at a word's first token near `t`: forward first (up to 8 tokens, before `limit`),
    so the overlap stays the one asked for, else back (up to 8, not below `lowest` or `earliest`:
    the window must still reach past `limit`)."""
    def begins_word(cand: int) -> bool:
        return cand == 0 or offsets[cand][0] > offsets[cand - 1][1]

    for cand in range(t, min(limit, t + 9)):
        if begins_word(cand):
            return cand
    for cand in range(t - 1, max(lowest, earliest, t - 9) - 1, -1):
        if begins_word(cand):
            return cand
    return t


def _break_before(offsets: Sequence[Span], text: str, floor: int, end: int) -> int:
    """The best cut in (floor, end]: the last sentence end, else the last word break, else `end`."""
    word_break = None
    for t in range(end, floor, -1):  # cut between token t-1 and token t
        last_char = offsets[t - 1][1]
        gap = offsets[t][0] > last_char  # whitespace (or nothing a token covers) between them
        if gap and (text[last_char - 1] in _SENTENCE_END or "\n" in text[last_char : offsets[t][0]]):
            return t
        if gap and word_break is None:
            word_break = t
    return word_break if word_break is not None else end


def split_offsets(offsets: Sequence[Span], text: str, max_tokens: int, overlap: int) -> list[Span]:
    """Character spans of the windows (leading/trailing whitespace of each is left out)."""
    if not offsets:
        return [(0, len(text))]
    spans = []
    for a, b in token_windows(offsets, text, max_tokens, overlap):
        spans.append((offsets[a][0], offsets[b - 1][1]))
    if len(spans) == 1:  # the text fits: it is embedded whole, exactly as without chunking
        return [(0, len(text))]
    return spans


def split_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int, overlap: int) -> list[list[Span]]:
    """Spans per text; one span `(0, len(text))` for a text that fits in `max_tokens` tokens."""
    try:
        enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        mappings = enc["offset_mapping"]
    except (NotImplementedError, KeyError, TypeError, ValueError):  # a tokenizer without offsets
        return [split_by_words(tokenizer, text, max_tokens, overlap) for text in texts]
    out = []
    for text, offs in zip(texts, mappings, strict=True):
        offs = [(int(a), int(b)) for a, b in offs if b > a]  # drop zero-width tokens
        out.append(split_offsets(offs, text, max_tokens, overlap))
    return out


def split_by_words(tokenizer: Any, text: str, max_tokens: int, overlap: int) -> list[Span]:
    """For tokenizers without offsets: each word's tokens get that word's span (same windows, whole words)."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not words:
        return [(0, len(text))]
    counts = tokenizer([text[a:b] for a, b in words], add_special_tokens=False)["input_ids"]
    offsets: list[Span] = []
    for (a, b), ids in zip(words, counts, strict=True):
        offsets.extend([(a, b)] * max(1, len(ids)))
    # Pieces of one word share its span; cuts inside a word are moved to its start by this pass.
    spans = []
    for ta, tb in token_windows(offsets, text, max_tokens, overlap):
        spans.append((offsets[ta][0], offsets[tb - 1][1]))
    if len(spans) == 1:
        return [(0, len(text))]
    return _dedupe(spans)


def _dedupe(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for span in spans:
        if not out or span != out[-1]:
            out.append(span)
    return out

"""The listwise output parser and window schedule: no model output can lose or duplicate a document."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.rerankers.base import order_by_score, scores_from_order
from models.rerankers.listwise import parse_permutation, window_starts

# Model-like output: identifiers in brackets, separators, junk, and arbitrary text mixed in.
_tokens = st.one_of(
    st.integers(min_value=-5, max_value=40).map(lambda i: f"[{i}]"),
    st.sampled_from([" > ", ">", ", ", "\n", "[", "]", "0", "00", "007", "passage", "1. ", "99999999999999"]),
    st.text(max_size=8),
)
model_output = st.one_of(st.text(max_size=200), st.lists(_tokens, max_size=60).map("".join))


@given(model_output, st.integers(min_value=0, max_value=30))
def test_parser_returns_a_permutation_for_any_output(text: str, n: int) -> None:
    assert sorted(parse_permutation(text, n)) == list(range(n))


def test_parser_follows_a_clean_ranking() -> None:
    assert parse_permutation("[3] > [1] > [4] > [2]", 4) == [2, 0, 3, 1]


def test_parser_keeps_first_mention_and_appends_missing_in_input_order() -> None:
    # 2 repeated, 9 and 0 invalid, 3 and 5 never named.
    assert parse_permutation("[2] > [2] > [9] > [0] > [4] > [1]", 5) == [1, 3, 0, 2, 4]


def test_parser_does_not_read_long_numbers_as_small_ids() -> None:
    assert parse_permutation("[12] > [2]", 3) == [1, 0, 2]
    assert parse_permutation("[02] > [3] > [0]", 3) == [1, 2, 0]  # a leading zero is still passage 2


@given(st.integers(min_value=0, max_value=120), st.integers(min_value=2, max_value=25),
       st.integers(min_value=1, max_value=25))
def test_windows_cover_every_position_and_end_at_the_front(n: int, window: int, step: int) -> None:
    step = min(step, window)
    spans = window_starts(n, window, step)
    assert spans[-1][0] == 0
    assert spans[0][1] == n
    covered = {i for start, end in spans for i in range(start, end)}
    assert covered == set(range(n))
    assert all(end - start <= window for start, end in spans)
    # back to front: each window starts no later than the previous one
    assert all(a[0] >= b[0] for a, b in zip(spans, spans[1:], strict=False))


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=40))
def test_rank_scores_reproduce_the_order(scores: list[float]) -> None:
    order = order_by_score(scores)
    assert sorted(order) == list(range(len(scores)))
    assert order_by_score(scores_from_order(order)) == order

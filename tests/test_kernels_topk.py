"""Fused similarity + top-k: the Triton kernel (under the interpreter) and the CPU paths against
the float64 matmul + topk reference."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from kernels import similarity_topk
from kernels.topk.reference import similarity_topk_chunked

CASES_SCRIPT = Path(__file__).with_name("kernel_interpret_cases.py")
sys.path.insert(0, str(CASES_SCRIPT.parent))
from interpreted import interpreted  # noqa: E402
from kernel_interpret_cases import TOPK_CASES  # noqa: E402


@pytest.fixture(scope="module")
def interpreted_results() -> dict[str, dict[str, float]]:
    return interpreted("topk")


@pytest.mark.parametrize("case", TOPK_CASES, ids=[c[0] for c in TOPK_CASES])
def test_triton_topk_matches_reference(interpreted_results: dict, case: tuple) -> None:
    name, duplicate = case[0], case[-1]
    result = interpreted_results[name]
    assert result["ids_dtype_int64"] == 1.0
    assert result["max_score_err"] < 1e-4
    if duplicate:
        assert result["ties_present"] == 1.0
        assert result["ties_lower_id_first"] == 1.0
    else:
        assert result["ids_equal"] == 1.0


def test_chunked_path_matches_full_matrix_across_chunk_edges() -> None:
    gen = torch.Generator().manual_seed(0)
    queries, corpus = torch.randn(7, 48, generator=gen), torch.randn(1000, 48, generator=gen)
    scores, ids = similarity_topk_chunked(queries, corpus, 25, chunk_rows=128)
    ref_scores, ref_ids = (queries @ corpus.T).topk(25, dim=1)
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(scores, ref_scores)


def test_public_function_contract() -> None:
    queries, corpus = torch.randn(3, 16), torch.randn(5, 16)
    scores, ids = similarity_topk(queries, corpus, 10)  # k larger than the corpus is clipped
    assert scores.shape == ids.shape == (3, 5)
    assert ids.dtype == torch.int64
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    with pytest.raises(ValueError):
        similarity_topk(queries, torch.randn(5, 8), 2)

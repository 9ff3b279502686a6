"""The GPU suite's reranker section runs on CPU too (a 2-layer smoke), so a GPU session's one device
call does not fail on a Python error, and its engines agree on the figures it will report."""

from __future__ import annotations


def test_rerank_engines_section_runs_and_engines_agree() -> None:
    from benchmarks import gpu_suite

    rows = gpu_suite.rerank_engines(device="cpu")
    assert not gpu_suite.RESULTS["errors"], gpu_suite.RESULTS["errors"]
    one_query, concurrent = rows
    for name in ("cache", "packed"):
        assert one_query[f"{name}_pairs_per_s"] > 0
        assert one_query[f"{name}_max_rel_diff_vs_padded"] < 1e-4  # fp32: the same hidden states
        assert concurrent[f"{name}_max_abs_diff"] < 1e-4  # coalesced = one call per request
    assert "rerank" in gpu_suite.markdown(gpu_suite.RESULTS)

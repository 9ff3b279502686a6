"""One-shot tuning of the varlen shared-prefix attention kernel on a lent H100/H200: JSON + table.

For a short explicit list of tilings (each one compile) and GQA head packing on/off (a runtime
argument, no recompile), in one process: bf16 correctness against a float64 reference (poisoned
outputs, ragged lengths, prefix groups, GQA 32/8, 8/1 and 9/3), then the median time of the suite's
shared-prefix batches (1024-token prefix, 100-600-token suffixes). The winner is then timed at
16k-256k suffix tokens against SDPA flash/cuDNN on the padded layout and torch varlen, beside the
card's measured bf16 matmul peak. Last, if time is left, a model-level bf16 check: packed fused
scoring against the eager forward on a SmolLM2-135M-shaped Llama (random weights: the GGUF does not
travel). Every step is charged to a wall-clock budget so the figures arrive inside one lease.

    python benchmarks/gpu_tune.py --out DIR [--budget-s 380]
    TRITON_INTERPRET=1 python benchmarks/gpu_tune.py --smoke   # CPU dry run of every code path
"""

from __future__ import annotations

# The timed closures below are defined and called within one loop iteration, never later.
# ruff: noqa: B023
import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_suite import (  # noqa: E402
    _varlen_attn_call,
    attention_flops,
    prefix_copied_keys,
    smollm2_shaped,
    suffix_lengths,
)
from kernels.attention.reference import varlen_prefix_attention_reference  # noqa: E402

SMOKE = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if SMOKE else "cuda"
DTYPE = torch.float32 if SMOKE else torch.bfloat16  # the interpreter has no bf16
T0 = time.time()
RESULTS: dict[str, Any] = {"candidates": [], "final": [], "errors": []}

# (BLOCK_M, BLOCK_N, num_warps, num_stages), in order of expected value; head packing on each
CANDIDATES = {
    128: [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 2), (128, 64, 8, 4), (64, 64, 4, 3),
          (128, 128, 8, 2), (256, 64, 16, 2)],
    64: [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3)],
}


def elapsed() -> float:
    return time.time() - T0


def bench_ms(fn: Any, rep_ms: int = 100) -> float:
    if SMOKE:
        fn()
        t = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t)
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=20, rep=rep_ms, return_mode="median"))


def save(out: Path) -> None:
    RESULTS["elapsed_s"] = elapsed()
    (out / "gpu_tune.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def make_batch(total: int, prefix_len: int, heads: int, kv_heads: int, dim: int, seed: int) -> dict[str, Any]:
    """The suite's shared-prefix batch (same lengths for the same seed as gpu_suite), on DEVICE."""
    lengths = suffix_lengths(total, seed)
    t = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)

    def rnd(n: int, h: int) -> torch.Tensor:
        return torch.randn(n, h, dim, device=DEVICE, dtype=DTYPE)

    return {"lengths": lengths, "cu": cu, "q": rnd(t, heads), "k": rnd(t, kv_heads), "v": rnd(t, kv_heads),
            "pk": rnd(prefix_len, kv_heads), "pv": rnd(prefix_len, kv_heads),
            "cu_p": torch.tensor([0, prefix_len], dtype=torch.int32, device=DEVICE)}


def check_call_correct(call: Any, dim: int, heads: int, kv_heads: int, causal: bool, seed: int) -> float:
    """bf16 rel err of `call` (varlen_prefix_attention_triton's signature) against float64 on the rounded
    inputs: ragged lengths with empty and block-edge sequences, three prefix groups; NaN (poison left) fails."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [1, *torch.randint(1, 700, (5,), generator=gen).tolist(), 0, 300, 64, 65]
    if SMOKE:
        lengths = [1, 37, 0, 70]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    t = int(cu[-1])
    plens = [*torch.randint(1, 400 if not SMOKE else 40, (2,), generator=gen).tolist(), 128 if not SMOKE else 32]
    cu_p = torch.tensor([0, *torch.tensor(plens).cumsum(0).tolist()], dtype=torch.int32)
    group = torch.randint(0, len(plens), (len(lengths),), generator=gen, dtype=torch.int32)
    x = {n: torch.randn(rows, h, dim, generator=gen, dtype=torch.float64).to(DTYPE).double()
         for n, rows, h in [("q", t, heads), ("k", t, kv_heads), ("v", t, kv_heads),
                            ("pk", int(cu_p[-1]), kv_heads), ("pv", int(cu_p[-1]), kv_heads)]}
    ref = varlen_prefix_attention_reference(x["q"], x["k"], x["v"], cu, causal=causal, prefix_k=x["pk"],
                                            prefix_v=x["pv"], cu_prefix_lens=cu_p, prefix_group=group)
    d = {n: a.to(DEVICE, DTYPE) for n, a in x.items()}
    out = torch.full_like(d["q"], float("nan"))
    call(d["q"], d["k"], d["v"], cu.to(DEVICE), max(lengths), causal=causal, prefix_k=d["pk"], prefix_v=d["pv"],
         cu_prefix_lens=cu_p.to(DEVICE), prefix_group=group.to(DEVICE), out=out)
    if out.isnan().any():
        return float("nan")
    return float((out.cpu().double() - ref).norm() / ref.norm())


def check_correct(config: Any, dim: int, heads: int, kv_heads: int, per_tile: int | None, seed: int) -> float:
    """The pointer kernel at one tiling and head packing, causal (see check_call_correct)."""
    from kernels.attention.varlen_fwd import varlen_prefix_attention_triton

    def call(*args: Any, **kwargs: Any) -> torch.Tensor:
        return varlen_prefix_attention_triton(*args, heads_per_tile=per_tile, config=config, **kwargs)

    return check_call_correct(call, dim, heads, kv_heads, True, seed)


def measure_card() -> dict[str, Any]:
    """Device facts and the measured bf16 matmul ceiling (8192^3, random data) for the same run."""
    import triton

    props = torch.cuda.get_device_properties(0)
    device = {"name": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
              "triton": triton.__version__, "capability": list(torch.cuda.get_device_capability())}
    n = 8192
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    return {"device": device, "bf16_matmul_tflops": 2 * n**3 / bench_ms(lambda: a @ b, 300) / 1e9}


def tune(dim: int, totals: list[int], prefix_len: int, budget_s: float, out: Path) -> None:
    import triton

    from kernels.attention.varlen_fwd import default_heads_per_tile, varlen_prefix_attention_triton

    heads, kv_heads = 32, 8
    packed = default_heads_per_tile(heads // kv_heads)
    batches = [make_batch(t, prefix_len, heads, kv_heads, dim, seed=t + dim) for t in totals]
    for i, (bm, bn, warps, stages) in enumerate(CANDIDATES[dim]):
        if elapsed() > budget_s:
            RESULTS["errors"].append(f"d={dim} {bm}x{bn} w{warps} s{stages}: skipped, budget")
            continue
        config = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
        # v1 (one head per tile) only where its earlier autotune list had the tiling
        per_tiles = [packed, 1] if i < 2 else [packed]
        for per_tile in per_tiles:
            row: dict[str, Any] = {"dim": dim, "BLOCK_M": bm, "BLOCK_N": bn, "warps": warps, "stages": stages,
                                   "heads_per_tile": per_tile}
            t = time.time()
            try:
                row["rel_err_32_8"] = check_correct(config, dim, heads, kv_heads, per_tile, seed=10 + i)
                row["rel_err_9_3"] = check_correct(config, dim, 9, 3, None, seed=20 + i)
                row["compile_check_s"] = time.time() - t
                ok = all(row[k] < 1e-2 for k in ("rel_err_32_8", "rel_err_9_3"))  # NaN fails too
                row["correct"] = ok
                for b, total in zip(batches, totals, strict=True):
                    def run() -> torch.Tensor:
                        return varlen_prefix_attention_triton(
                            b["q"], b["k"], b["v"], b["cu"], max(b["lengths"]), causal=True, prefix_k=b["pk"],
                            prefix_v=b["pv"], cu_prefix_lens=b["cu_p"], heads_per_tile=per_tile, config=config)

                    ms = bench_ms(run)
                    row[f"ms_{total}"] = ms
                    row[f"tflops_{total}"] = attention_flops(b["lengths"], prefix_len, heads, dim) / ms / 1e9
            except Exception as exc:  # a tiling that fails to compile (shared memory, registers) is skipped
                row["error"] = f"{type(exc).__name__}: {exc}"[:400]
            RESULTS["candidates"].append(row)
            print(json.dumps(row), flush=True)
            save(out)


def best_candidate(dim: int, total: int) -> dict[str, Any] | None:
    rows = [r for r in RESULTS["candidates"] if r["dim"] == dim and r.get("correct") and f"tflops_{total}" in r]
    return max(rows, key=lambda r: r[f"tflops_{total}"], default=None)


def baseline_times(b: dict[str, Any], prefix_len: int, heads: int, dim: int, varlen: Any,
                   ours: torch.Tensor | None = None) -> dict[str, Any]:
    """torch varlen (prefix copied per sequence) and SDPA flash/cuDNN (padded per-pair layout) on batch `b`.

    Times in ms under the keys `torch_varlen_ms`, `sdpa_{flash,cudnn}_padded_ms` (or `..._error`);
    with `ours`, also the largest difference of torch varlen's output from it.
    """
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    lengths, cu = b["lengths"], b["cu"]
    max_len = max(lengths)
    row: dict[str, Any] = {}
    if varlen is not None and not SMOKE:
        parts_k, parts_v, cu_kt = prefix_copied_keys(b, prefix_len)
        kk, vv = torch.cat(parts_k), torch.cat(parts_v)

        def torch_varlen() -> torch.Tensor:
            return varlen(b["q"], kk, vv, cu, cu_kt, max_len, max_len + prefix_len)

        if ours is not None:
            row["varlen_max_abs_diff"] = float((torch_varlen().float() - ours.float()).abs().max())
        row["torch_varlen_ms"] = bench_ms(torch_varlen, 200)
        kk = vv = torch.empty(0)
    qp = torch.randn(len(lengths), heads, prefix_len + max_len, dim, device=DEVICE, dtype=DTYPE)
    kp, vp = torch.randn_like(qp), torch.randn_like(qp)
    for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
        if SMOKE:
            backend = SDPBackend.MATH
        try:
            with sdpa_kernel([backend]):
                def padded() -> torch.Tensor:
                    return F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

                padded()
                row[f"sdpa_{name}_padded_ms"] = bench_ms(padded, 200)
        except Exception as exc:
            row[f"sdpa_{name}_error"] = f"{type(exc).__name__}: {exc}"[:300]
    qp = kp = vp = torch.empty(0)  # free before the next, larger batch
    return row


def final_speed(dim: int, best: dict[str, Any], totals: list[int], prefix_len: int, peak: float,
                out: Path) -> None:
    """The winner against SDPA (padded per-pair layout) and torch varlen, same batches as the suite."""
    import triton

    from kernels.attention.varlen_fwd import varlen_prefix_attention_triton

    config = triton.Config({"BLOCK_M": best["BLOCK_M"], "BLOCK_N": best["BLOCK_N"]}, num_warps=best["warps"],
                           num_stages=best["stages"])
    heads, kv_heads = 32, 8
    varlen = _varlen_attn_call()
    for total in totals:
        b = make_batch(total, prefix_len, heads, kv_heads, dim, seed=total + dim)
        lengths, cu = b["lengths"], b["cu"]
        max_len = max(lengths)
        flops = attention_flops(lengths, prefix_len, heads, dim)
        row: dict[str, Any] = {"dim": dim, "suffix_tokens": sum(lengths), "sequences": len(lengths),
                               "config": {k: best[k] for k in ("BLOCK_M", "BLOCK_N", "warps", "stages",
                                                               "heads_per_tile")}}
        try:
            def ours() -> torch.Tensor:
                return varlen_prefix_attention_triton(b["q"], b["k"], b["v"], cu, max_len, causal=True,
                                                      prefix_k=b["pk"], prefix_v=b["pv"], cu_prefix_lens=b["cu_p"],
                                                      heads_per_tile=best["heads_per_tile"], config=config)

            mine = ours()
            ms = bench_ms(ours, 200)
            row.update(ours_ms=ms, ours_tflops=flops / ms / 1e9, ours_pct_peak=100 * flops / ms / 1e9 / peak)
            row.update(baseline_times(b, prefix_len, heads, dim, varlen, mine))
            for key, name in (("torch_varlen_ms", "torch_varlen"), ("sdpa_flash_padded_ms", "sdpa_flash"),
                              ("sdpa_cudnn_padded_ms", "sdpa_cudnn")):
                if key in row:
                    row[f"speedup_vs_{name}"] = row[key] / ms
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
        b.clear()
        if not SMOKE:
            torch.cuda.empty_cache()
        RESULTS["final"].append(row)
        print(json.dumps(row), flush=True)
        save(out)


def model_check(best: dict[str, Any] | None) -> dict[str, Any]:
    """bf16 packed fused scoring vs the eager forward, both against an fp32 eager forward.

    SmolLM2-135M-Instruct's shape (30 layers, 9 query / 3 KV heads of 64) with random weights; the
    kernel's autotune list is cut to the winning tiling first so this costs two compiles, not eight.
    """
    import triton

    from kernels.attention import varlen_fwd
    from models.llm.packed_scoring import PackedPrefixScorer

    if best is not None and not SMOKE:
        varlen_fwd._varlen_prefix_attention_fwd.configs = [triton.Config(
            {"BLOCK_M": best["BLOCK_M"], "BLOCK_N": best["BLOCK_N"]}, num_warps=best["warps"],
            num_stages=best["stages"])]
    model32 = smollm2_shaped(DEVICE, torch.float32, layers=30 if not SMOKE else 2)
    model32.config._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, 49152, (60,), generator=gen).tolist()
    suffixes = [torch.randint(0, 49152, (int(n),), generator=gen).tolist()
                for n in torch.randint(100, 600, (12,), generator=gen)]
    if SMOKE:
        suffixes = [s[:20] for s in suffixes[:3]]

    @torch.inference_mode()
    def eager_last(model: torch.nn.Module) -> torch.Tensor:
        return torch.stack([model.model(input_ids=torch.tensor([prefix + s], device=DEVICE)).last_hidden_state[0, -1]
                            for s in suffixes]).float()

    ref = eager_last(model32)
    model16 = model32.to(DTYPE if SMOKE else torch.bfloat16)
    eager16 = eager_last(model16)
    with torch.inference_mode():
        fused16 = PackedPrefixScorer(model16, token_budget=4096,
                                     backend="triton").last_hidden_states(prefix, suffixes).float()

    def rel(a: torch.Tensor) -> float:
        return float((a - ref).norm() / ref.norm())

    def yes_prob(h: torch.Tensor) -> torch.Tensor:  # pointwise score shape: softmax over two answer tokens
        return (h @ model32.lm_head.weight[[9, 11]].float().T).softmax(-1)[:, 0]

    with torch.inference_mode():
        p_ref, p_eager, p_fused = yes_prob(ref), yes_prob(eager16), yes_prob(fused16)
    return {"suffixes": len(suffixes), "prefix": len(prefix),
            "hidden_rel_err_bf16_eager_vs_fp32": rel(eager16), "hidden_rel_err_bf16_fused_vs_fp32": rel(fused16),
            "hidden_rel_err_bf16_fused_vs_bf16_eager": float((fused16 - eager16).norm() / eager16.norm()),
            "score_max_abs_diff_fused_vs_fp32": float((p_fused - p_ref).abs().max()),
            "score_max_abs_diff_eager_bf16_vs_fp32": float((p_eager - p_ref).abs().max()),
            "score_max_abs_diff_fused_vs_eager_bf16": float((p_fused - p_eager).abs().max())}


def table() -> str:
    lines = ["| d | tile MxN | warps | stages | heads/tile | ok | rel err | 16k TFLOP/s | 64k TFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in RESULTS["candidates"]:
        def f(key: str) -> str:
            return f"{r[key]:.0f}" if key in r else "–"

        err = r.get("error", "")[:60]
        lines.append(f"| {r['dim']} | {r['BLOCK_M']}x{r['BLOCK_N']} | {r['warps']} | {r['stages']} | "
                     f"{r['heads_per_tile']} | {r.get('correct', err)} | {r.get('rel_err_32_8', float('nan')):.1e} | "
                     f"{f('tflops_16384')} | {f('tflops_65536')} |")
    lines += ["", "| d | tokens | seqs | ours ms | TFLOP/s | % peak | x torch varlen | flash ms | x flash | "
              "cuDNN ms | x cuDNN |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in RESULTS["final"]:
        def g(key: str, fmt: str = ".2f") -> str:
            return format(r[key], fmt) if key in r else "–"

        lines.append(f"| {r['dim']} | {r['suffix_tokens']} | {r['sequences']} | {g('ours_ms', '.3f')} | "
                     f"{g('ours_tflops', '.0f')} | {g('ours_pct_peak', '.1f')} | {g('speedup_vs_torch_varlen')} | "
                     f"{g('sdpa_flash_padded_ms', '.3f')} | {g('speedup_vs_sdpa_flash')} | "
                     f"{g('sdpa_cudnn_padded_ms', '.3f')} | {g('speedup_vs_sdpa_cudnn')} |")
    return "\n".join(lines)


def tune_args(default_out: str, default_budget_s: float) -> tuple[argparse.Namespace, Path]:
    """The command line of both tuning scripts; creates the output folder."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--budget-s", type=float, default=default_budget_s)
    parser.add_argument("--prefix", type=int, default=1024)
    parser.add_argument("--smoke", action="store_true", help="CPU interpreter dry run with tiny shapes")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out


def main() -> None:
    args, out = tune_args("gpu_tune_out", 380.0)
    tune_totals, final_totals, prefix = [16384, 65536], [16384, 65536, 262144], args.prefix
    if SMOKE:
        tune_totals, final_totals, prefix = [300], [300, 500], 64
        for dim in CANDIDATES:
            CANDIDATES[dim] = [(64, 32, 4, 1), (64, 16, 4, 1)]
    if not SMOKE:
        RESULTS.update(measure_card())
    peak = RESULTS.get("bf16_matmul_tflops", float("nan"))
    print(json.dumps({k: RESULTS.get(k) for k in ("device", "bf16_matmul_tflops")}), flush=True)
    # d=128 (the goal) gets most of the budget; d=64 what is left before the finals
    tune(128, tune_totals, prefix, args.budget_s * 0.45, out)
    tune(64, tune_totals, prefix, args.budget_s * 0.6, out)
    for dim in (128, 64):
        best = best_candidate(dim, tune_totals[-1])
        if best is not None and elapsed() < args.budget_s * 0.85:
            final_speed(dim, best, final_totals, prefix, peak, out)
    if elapsed() < args.budget_s * 0.85 or SMOKE:
        try:
            RESULTS["model_check"] = model_check(best_candidate(64, tune_totals[-1]))
        except Exception as exc:
            RESULTS["errors"].append(f"model_check: {type(exc).__name__}: {exc} {traceback.format_exc()[-1500:]}")
        print(json.dumps(RESULTS.get("model_check")), flush=True)
    else:
        RESULTS["errors"].append("model_check: skipped, budget")
    save(out)
    print(f"elapsed {elapsed():.0f}s; peak {peak:.0f} TFLOP/s; errors: {RESULTS['errors']}")
    print(table())


if __name__ == "__main__":
    main()

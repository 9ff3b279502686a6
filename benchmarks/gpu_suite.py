"""Every GPU check and timing of the kernels in one run (for a lent H100/H200): writes JSON + markdown.

1. the card's measured ceilings: bf16 matmul TFLOP/s (8192^3, random data) and copy bandwidth;
2. bf16/fp16 correctness of the attention kernel against a float64 reference (poisoned outputs);
3. shared-prefix varlen attention TFLOP/s at head dim 64/128, 16k-256k suffix tokens, against
   `torch.nn.attention.varlen.varlen_attn` (prefix copied into every sequence's keys) and SDPA's
   flash and cuDNN backends on the padded full (prefix + suffix) sequences, plus plain varlen;
4. exact search: `kernels.similarity_topk` and torch matmul + topk against a CPU FAISS IndexFlatIP;
5. reranker engines end to end in bf16: padded per-pair vs prefix cache vs packed (fused kernel) on
   SmolLM2-135M's shape, and concurrent requests one call each vs coalesced into one grouped call.

FLOPs are counted as computed: 4 * d * heads * (L * P + L * (L + 1) / 2) per sequence of L suffix
tokens over a P-token prefix (causal halves the own part; the padded baselines are charged the
same useful FLOPs, so their TFLOP/s is the rate of useful work).

    python benchmarks/gpu_suite.py --out DIR
"""

from __future__ import annotations

# The timed closures below are defined and called within one loop iteration, never later.
# ruff: noqa: B023
import argparse
import inspect
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.attention.reference import varlen_prefix_attention_reference  # noqa: E402

RESULTS: dict[str, Any] = {"sections": {}, "errors": {}}
OUT_DIR: list[str] = []


def bench_ms(fn: Any, rep_ms: int = 200) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))


def section(name: str) -> Any:
    def wrap(fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                RESULTS["sections"][name] = fn(*args, **kwargs)
            except Exception as exc:  # one failing section must not lose the others' figures
                RESULTS["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
                print(f"[{name}] FAILED: {exc}", flush=True)
            print(f"[{name}] {time.time() - t0:.1f}s", flush=True)
            if OUT_DIR:  # partial results survive a timeout
                (Path(OUT_DIR[0]) / "gpu_suite.json").write_text(json.dumps(RESULTS, indent=1, default=str))
            return RESULTS["sections"].get(name)
        return run
    return wrap


@section("device")
def device_info() -> dict[str, Any]:
    import triton

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version(),
            "memory_gib": round(props.total_memory / 2**30, 1)}


@section("ceilings")
def ceilings() -> dict[str, float]:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = bench_ms(lambda: a @ b, 500)
    src = torch.randn(2**30 // 4, device="cuda")  # 1 GiB
    dst = torch.empty_like(src)
    copy_ms = bench_ms(lambda: dst.copy_(src), 300)
    return {"bf16_matmul_tflops": 2 * n**3 / ms / 1e9, "copy_tb_s": 2 * src.numel() * 4 / copy_ms / 1e9}


def suffix_lengths(total_tokens: int, seed: int, lo: int = 100, hi: int = 600) -> list[int]:
    """Random suffix lengths in lo..hi summing to total_tokens (the last one cut to fit)."""
    gen = torch.Generator().manual_seed(seed)
    lengths: list[int] = []
    while sum(lengths) < total_tokens:
        lengths.append(int(torch.randint(lo, hi + 1, (1,), generator=gen)))
    lengths[-1] -= sum(lengths) - total_tokens
    if lengths[-1] <= 0:
        lengths.pop()
    return lengths


def shared_prefix_batch(total_tokens: int, prefix_len: int, heads: int, kv_heads: int, dim: int,
                        dtype: torch.dtype, seed: int, lo: int = 100, hi: int = 600) -> dict[str, Any]:
    lengths = suffix_lengths(total_tokens, seed, lo, hi)
    t = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    return {
        "lengths": lengths, "cu": cu,
        "q": torch.randn(t, heads, dim, device="cuda", dtype=dtype),
        "k": torch.randn(t, kv_heads, dim, device="cuda", dtype=dtype),
        "v": torch.randn(t, kv_heads, dim, device="cuda", dtype=dtype),
        "pk": torch.randn(prefix_len, kv_heads, dim, device="cuda", dtype=dtype),
        "pv": torch.randn(prefix_len, kv_heads, dim, device="cuda", dtype=dtype),
        "cu_p": torch.tensor([0, prefix_len], dtype=torch.int32, device="cuda"),
    }


def prefix_copied_keys(batch: dict[str, Any], prefix_len: int) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                         torch.Tensor]:
    """torch varlen's layout: per sequence, the prefix keys/values then its own (parts to concatenate)."""
    parts_k: list[torch.Tensor] = []
    parts_v: list[torch.Tensor] = []
    cu_k = [0]
    for i, n in enumerate(batch["lengths"]):
        s = int(batch["cu"][i])
        parts_k += [batch["pk"], batch["k"][s:s + n]]
        parts_v += [batch["pv"], batch["v"][s:s + n]]
        cu_k.append(cu_k[-1] + prefix_len + n)
    return parts_k, parts_v, torch.tensor(cu_k, dtype=torch.int32, device=batch["cu"].device)


def attention_flops(lengths: list[int], prefix_len: int, heads: int, dim: int) -> float:
    return sum(4.0 * dim * heads * (n * prefix_len + n * (n + 1) / 2) for n in lengths)


@section("attention_correctness")
def attention_correctness() -> list[dict[str, Any]]:
    from kernels.attention.varlen_fwd import varlen_prefix_attention_triton

    rows = []
    # bf16 only (the interpreter covers fp32/fp16 in CI); mostly the keys the speed section tuned
    cases = [(64, 32, 8, True, 1), (128, 32, 8, True, 2), (128, 8, 1, True, 1), (64, 8, 8, True, 0),
             (128, 32, 8, True, 0), (128, 4, 4, False, 1)]
    for dtype in (torch.bfloat16,):
        for i, (dim, heads, kv_heads, causal, groups) in enumerate(cases):
            gen = torch.Generator().manual_seed(i)
            lengths = [1, *torch.randint(1, 700, (6,), generator=gen).tolist(), 0, 300]
            cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
            t = int(cu[-1])
            q = torch.randn(t, heads, dim, dtype=torch.float64)
            k = torch.randn(t, kv_heads, dim, dtype=torch.float64)
            v = torch.randn(t, kv_heads, dim, dtype=torch.float64)
            prefix: dict[str, Any] = {}
            if groups:
                plens = torch.randint(1, 400, (groups,), generator=gen).tolist()
                cu_p = torch.tensor([0, *torch.tensor(plens).cumsum(0).tolist()], dtype=torch.int32)
                prefix = dict(prefix_k=torch.randn(int(cu_p[-1]), kv_heads, dim, dtype=torch.float64),
                              prefix_v=torch.randn(int(cu_p[-1]), kv_heads, dim, dtype=torch.float64),
                              cu_prefix_lens=cu_p,
                              prefix_group=torch.randint(0, groups, (len(lengths),), generator=gen, dtype=torch.int32))
            # the reference sees exactly the rounded inputs the kernel sees
            rounded = {n: (x.to(dtype).double() if x.is_floating_point() else x) for n, x in prefix.items()}
            ref = varlen_prefix_attention_reference(q.to(dtype).double(), k.to(dtype).double(), v.to(dtype).double(),
                                                    cu, causal=causal, **rounded)
            dev = {n: x.to("cuda", dtype) if x.is_floating_point() else x.cuda() for n, x in prefix.items()}
            qd = q.to("cuda", dtype)
            out = torch.full_like(qd, float("nan"))
            varlen_prefix_attention_triton(qd, k.to("cuda", dtype), v.to("cuda", dtype), cu.cuda(), max(lengths),
                                           causal=causal, out=out, **dev)
            torch.cuda.synchronize()
            err = float((out.cpu().double() - ref).norm() / ref.norm())
            rows.append({"dtype": str(dtype).removeprefix("torch."), "dim": dim, "heads": heads,
                         "kv_heads": kv_heads, "causal": causal, "prefix_groups": groups,
                         "rel_err": err, "nan": int(out.isnan().sum())})
    return rows


def _varlen_attn_call() -> Any:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters

    def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
             max_q: int, max_k: int) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if "window_size" in params:
            kwargs["window_size"] = (-1, 0)
        else:
            kwargs["is_causal"] = True
        if "enable_gqa" in params and q.shape[1] != k.shape[1]:
            kwargs["enable_gqa"] = True
        elif q.shape[1] != k.shape[1]:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, **kwargs)

    return call


@section("attention_speed")
def attention_speed(totals: list[int], prefix_len: int) -> list[dict[str, Any]]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels.attention.varlen_fwd import varlen_prefix_attention_triton

    peak = RESULTS["sections"].get("ceilings", {}).get("bf16_matmul_tflops", float("nan"))
    varlen = _varlen_attn_call()
    rows = []
    for dim, heads, kv_heads in [(128, 32, 8), (64, 32, 8)]:
        for total in totals:
            batch = shared_prefix_batch(total, prefix_len, heads, kv_heads, dim, torch.bfloat16, seed=total + dim)
            lengths, cu = batch["lengths"], batch["cu"]
            max_len = max(lengths)
            flops = attention_flops(lengths, prefix_len, heads, dim)
            row: dict[str, Any] = {"dim": dim, "heads": heads, "kv_heads": kv_heads, "suffix_tokens": sum(lengths),
                                   "sequences": len(lengths), "prefix": prefix_len, "gflop": flops / 1e9}

            def ours() -> torch.Tensor:
                return varlen_prefix_attention_triton(batch["q"], batch["k"], batch["v"], cu, max_len, causal=True,
                                                      prefix_k=batch["pk"], prefix_v=batch["pv"],
                                                      cu_prefix_lens=batch["cu_p"])

            out = ours()
            ms = bench_ms(ours)
            row["ours_ms"] = ms
            row["ours_tflops"] = flops / ms / 1e9
            row["ours_pct_peak"] = 100 * row["ours_tflops"] / peak

            # torch varlen: keys = prefix ++ suffix per sequence (the prefix copied into each)
            if varlen is not None:
                try:
                    parts_k, parts_v, cu_kt = prefix_copied_keys(batch, prefix_len)
                    kk, vv = torch.cat(parts_k), torch.cat(parts_v)
                    copy_ms = bench_ms(lambda: (torch.cat(parts_k), torch.cat(parts_v)), 100)

                    def torch_varlen() -> torch.Tensor:
                        return varlen(batch["q"], kk, vv, cu, cu_kt, max_len, max_len + prefix_len)

                    ref_out = torch_varlen()
                    row["varlen_max_abs_diff"] = float((ref_out.float() - out.float()).abs().max())
                    vms = bench_ms(torch_varlen)
                    row["torch_varlen_ms"] = vms
                    row["torch_varlen_tflops"] = flops / vms / 1e9
                    row["torch_varlen_prefix_copy_ms"] = copy_ms
                    row["speedup_vs_torch_varlen"] = vms / ms
                    kk = vv = torch.empty(0)
                except Exception as exc:
                    row["torch_varlen_error"] = f"{type(exc).__name__}: {exc}"[:300]

            # SDPA on the padded per-pair layout: every (prefix + suffix) row in full, right-padded.
            width = prefix_len + max_len
            try:
                qp = torch.zeros(len(lengths), heads, width, dim, device="cuda", dtype=torch.bfloat16)
                kp = torch.zeros(len(lengths), heads, width, dim, device="cuda", dtype=torch.bfloat16)
                vp = torch.zeros_like(kp)
                qp.normal_(), kp.normal_(), vp.normal_()  # random everywhere: no zero-speedups
                for name, backend in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
                    try:
                        with sdpa_kernel([backend]):
                            def padded() -> torch.Tensor:
                                return F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)

                            padded()
                            pms = bench_ms(padded)
                        row[f"sdpa_{name}_padded_ms"] = pms
                        row[f"sdpa_{name}_padded_useful_tflops"] = flops / pms / 1e9
                        row[f"speedup_vs_sdpa_{name}_padded"] = pms / ms
                    except Exception as exc:
                        row[f"sdpa_{name}_error"] = f"{type(exc).__name__}: {exc}"[:300]
                qp = kp = vp = torch.empty(0)
            except torch.OutOfMemoryError as exc:
                row["sdpa_error"] = f"OOM: {exc}"[:200]

            # plain varlen causal (no prefix): the kernel against torch varlen on identical work
            plain_flops = attention_flops(lengths, 0, heads, dim)

            def ours_plain() -> torch.Tensor:
                return varlen_prefix_attention_triton(batch["q"], batch["k"], batch["v"], cu, max_len, causal=True)

            ours_plain()
            pms = bench_ms(ours_plain)
            row["plain_ours_tflops"] = plain_flops / pms / 1e9
            if varlen is not None:
                try:
                    def torch_plain() -> torch.Tensor:
                        return varlen(batch["q"], batch["k"], batch["v"], cu, cu, max_len, max_len)

                    torch_plain()
                    row["plain_torch_varlen_tflops"] = plain_flops / bench_ms(torch_plain) / 1e9
                except Exception as exc:
                    row["plain_torch_varlen_error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            print(json.dumps(row), flush=True)
            batch.clear()  # free before the next, larger batch
            torch.cuda.empty_cache()
    return rows


@section("topk")
def topk_search(num_docs: int, dim: int) -> list[dict[str, Any]]:
    import faiss
    import numpy as np

    from kernels import similarity_topk

    gen = torch.Generator().manual_seed(7)
    corpus = torch.nn.functional.normalize(torch.randn(num_docs, dim, generator=gen), dim=1)
    index = faiss.IndexFlatIP(dim)
    index.add(corpus.numpy())
    corpus_gpu = corpus.cuda()
    corpus_half = corpus_gpu.half()
    rows = []
    for nq, k in [(16, 10), (1024, 10), (1024, 100)]:
        queries = torch.nn.functional.normalize(torch.randn(nq, dim, generator=gen), dim=1)
        q_np = np.ascontiguousarray(queries.numpy())
        t0 = time.perf_counter()
        faiss_scores, faiss_ids = index.search(q_np, k)
        faiss_ms = 1000 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.search(q_np, k)
        faiss_ms = min(faiss_ms, 1000 * (time.perf_counter() - t0))
        faiss_ids_t = torch.from_numpy(faiss_ids)
        q_gpu = queries.cuda()
        row: dict[str, Any] = {"queries": nq, "docs": num_docs, "dim": dim, "k": k,
                               "faiss_cpu_threads": faiss.omp_get_max_threads(), "faiss_cpu_ms": faiss_ms}

        def recall(ids: torch.Tensor) -> float:
            ids = ids.cpu()
            hits = sum(len(set(got.tolist()) & set(want.tolist()))
                       for got, want in zip(ids, faiss_ids_t, strict=True))
            return hits / faiss_ids_t.numel()

        variants = {
            "kernel_fp32": lambda: similarity_topk(q_gpu, corpus_gpu, k, backend="triton"),
            "torch_matmul_topk_fp32": lambda: similarity_topk(q_gpu, corpus_gpu, k, backend="reference"),
            "kernel_fp16": lambda: similarity_topk(q_gpu.half(), corpus_half, k, backend="triton"),
        }
        for name, fn in variants.items():
            try:
                scores, ids = fn()
                row[f"{name}_recall_vs_faiss"] = recall(ids)
                row[f"{name}_ids_equal_frac"] = float((ids.cpu() == faiss_ids_t).float().mean())
                diff = scores.float().cpu() - torch.from_numpy(faiss_scores)
                row[f"{name}_max_score_diff"] = float(diff.abs().max())
                ms = bench_ms(fn, 300)
                row[f"{name}_ms"] = ms
                row[f"{name}_speedup_vs_faiss_cpu"] = faiss_ms / ms
            except Exception as exc:
                row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def smollm2_shaped(device: str, dtype: torch.dtype, layers: int = 30) -> torch.nn.Module:
    """SmolLM2-135M-Instruct's architecture with random weights: the GPU host has no model files, and
    speed does not depend on the weights (the packed-vs-eager equality is checked on the same model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      rope_theta=100000.0, tie_word_embeddings=True, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval().to(device=device, dtype=dtype)


def _timed(fn: Any, device: str, repeats: int = 3) -> tuple[float, Any]:
    """Median wall seconds of `fn` (device synchronised) and its last result."""
    times, out = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


@section("rerank_engines")
def rerank_engines(doc_counts: tuple[int, ...] = (100, 1000), groups: int = 8, docs_per_group: int = 10,
                   device: str = "cuda") -> list[dict[str, Any]]:
    """pairs/s of the three scoring engines on one query (60-token prefix, documents of 100-600 tokens),
    and of `groups` concurrent requests scored one call each vs in one grouped call (the service's
    coalescing). bf16 on CUDA; on CPU (a smoke run) fp32, 2 layers, short documents."""
    import copy

    from models.llm.packed_scoring import PackedPrefixScorer
    from models.llm.prefix_scoring import PaddedScorer, PrefixScorer

    smoke = device != "cuda"
    model = smollm2_shaped(device, torch.float32 if smoke else torch.bfloat16, layers=2 if smoke else 30)
    packed_model = copy.deepcopy(model)  # the packed engine switches its model to the fused attention
    engines = {"padded": PaddedScorer(model), "cache": PrefixScorer(model), "packed": PackedPrefixScorer(packed_model)}
    gen = torch.Generator().manual_seed(3)

    def ids(n: int) -> list[int]:
        return torch.randint(0, 49152, (n,), generator=gen).tolist()

    lo, hi = (10, 30) if smoke else (100, 600)
    rows: list[dict[str, Any]] = []
    for count in doc_counts if not smoke else (6,):
        prefix = ids(60)
        suffixes = [ids(int(n)) for n in torch.randint(lo, hi + 1, (count,), generator=gen)]
        for scorer in engines.values():
            scorer.last_hidden_states(prefix, suffixes[:4])  # warm-up (kernel autotune, allocations)
        row: dict[str, Any] = {"case": "one query", "docs": count, "prefix_tokens": 60,
                               "doc_tokens": sum(map(len, suffixes))}
        hidden: dict[str, torch.Tensor] = {}
        for name, scorer in engines.items():
            seconds, hidden[name] = _timed(lambda: scorer.last_hidden_states(prefix, suffixes), device)
            row[f"{name}_ms"] = 1000 * seconds
            row[f"{name}_pairs_per_s"] = count / seconds
        for name in ("cache", "packed"):
            row[f"{name}_speedup_vs_padded"] = row["padded_ms"] / row[f"{name}_ms"]
            diff = (hidden[name].float() - hidden["padded"].float()).abs().max()
            row[f"{name}_max_rel_diff_vs_padded"] = float(diff / hidden["padded"].float().abs().max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    batch = [(ids(60), [ids(int(n)) for n in torch.randint(lo, hi + 1, (docs_per_group,), generator=gen)])
             for _ in range(groups)]
    row = {"case": "concurrent requests", "requests": groups, "docs_per_request": docs_per_group}
    for name in ("cache", "packed"):
        scorer = engines[name]
        one_s, alone = _timed(lambda: [scorer.last_hidden_states(p, s) for p, s in batch], device)
        grouped_s, together = _timed(lambda: scorer.last_hidden_states_groups(batch), device)
        row[f"{name}_one_by_one_ms"] = 1000 * one_s
        row[f"{name}_coalesced_ms"] = 1000 * grouped_s
        row[f"{name}_coalescing_speedup"] = one_s / grouped_s
        row[f"{name}_max_abs_diff"] = max(float((a.float() - b.float()).abs().max())
                                          for a, b in zip(alone, together, strict=True))
    rows.append(row)
    print(json.dumps(row), flush=True)
    return rows


NORMALIZER_OPTIONS = {"softmax": {}, "ssmax": {"ssmax_s": 0.7}, "sigmoid": {"sigmoid_bias": -3.0},
                      "softpick": {"softpick_eps": 1e-6}}


@section("attention_normalizers")
def attention_normalizers(total: int, prefix_len: int) -> list[dict[str, Any]]:
    """The research normalisers: bf16 error against float64, and time against softmax on the same batch."""
    from kernels.attention.varlen_fwd import varlen_prefix_attention_triton

    rows = []
    for dim, heads, kv_heads in [(128, 32, 8), (64, 32, 8)]:
        batch = shared_prefix_batch(total, prefix_len, heads, kv_heads, dim, torch.bfloat16, seed=total + dim)
        cu, max_len = batch["cu"], max(batch["lengths"])
        flops = attention_flops(batch["lengths"], prefix_len, heads, dim)
        small = slice(0, int(batch["cu"][4]))  # the first 4 sequences, for the float64 reference
        softmax_ms = None
        for name, options in NORMALIZER_OPTIONS.items():
            def run(b: dict[str, Any] = batch, n: str = name, o: dict = options) -> torch.Tensor:
                return varlen_prefix_attention_triton(b["q"], b["k"], b["v"], cu, max_len, causal=True,
                                                      prefix_k=b["pk"], prefix_v=b["pv"], cu_prefix_lens=b["cu_p"],
                                                      normalizer=n, **o)

            out = run()
            ms = bench_ms(run)
            softmax_ms = ms if name == "softmax" else softmax_ms
            ref = varlen_prefix_attention_reference(
                batch["q"][small].double(), batch["k"][small].double(), batch["v"][small].double(), cu[:5],
                causal=True, prefix_k=batch["pk"].double(), prefix_v=batch["pv"].double(),
                cu_prefix_lens=batch["cu_p"], normalizer=name, **options)
            err = float((out[small].double() - ref).norm() / ref.norm())
            rows.append({"dim": dim, "normalizer": name, "suffix_tokens": sum(batch["lengths"]), "ms": ms,
                         "tflops": flops / ms / 1e9, "x_softmax_time": ms / softmax_ms, "bf16_rel_err": err,
                         "nan": int(out.isnan().sum())})
            print(json.dumps(rows[-1]), flush=True)
        batch.clear()
        torch.cuda.empty_cache()
    return rows


def markdown(results: dict[str, Any]) -> str:
    dev = results["sections"].get("device", {})
    ceil = results["sections"].get("ceilings", {})
    lines = [f"card: {dev.get('name')} ({dev.get('sms')} SMs), torch {dev.get('torch')}, triton {dev.get('triton')}",
             f"measured bf16 matmul peak: {ceil.get('bf16_matmul_tflops', math.nan):.0f} TFLOP/s; "
             f"copy {ceil.get('copy_tb_s', math.nan):.2f} TB/s", ""]
    lines += ["| d | suffix tokens | seqs | ours ms | ours TFLOP/s | % peak | torch varlen TFLOP/s | x varlen "
              "| SDPA flash padded ms | x flash | SDPA cuDNN padded ms | x cuDNN | plain ours / torch varlen TFLOP/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(row: dict[str, Any], key: str, fmt: str = ".1f") -> str:
        return format(row[key], fmt) if key in row else "–"

    for r in results["sections"].get("attention_speed") or []:
        lines.append(f"| {r['dim']} | {r['suffix_tokens']} | {r['sequences']} | {f(r, 'ours_ms', '.3f')} | "
                     f"{f(r, 'ours_tflops', '.0f')} | {f(r, 'ours_pct_peak', '.0f')} | "
                     f"{f(r, 'torch_varlen_tflops', '.0f')}"
                     f" | {f(r, 'speedup_vs_torch_varlen', '.2f')} | {f(r, 'sdpa_flash_padded_ms', '.3f')} | "
                     f"{f(r, 'speedup_vs_sdpa_flash_padded', '.2f')} | {f(r, 'sdpa_cudnn_padded_ms', '.3f')} | "
                     f"{f(r, 'speedup_vs_sdpa_cudnn_padded', '.2f')} | {f(r, 'plain_ours_tflops', '.0f')} / "
                     f"{f(r, 'plain_torch_varlen_tflops', '.0f')} |")
    lines += ["", "| dtype | d | heads/kv | causal | prefix groups | rel err | NaN |", "|---|---|---|---|---|---|---|"]
    for r in results["sections"].get("attention_correctness") or []:
        lines.append(f"| {r['dtype']} | {r['dim']} | {r['heads']}/{r['kv_heads']} | {r['causal']} | "
                     f"{r['prefix_groups']} | {r['rel_err']:.2e} | {r['nan']} |")
    lines += ["", "| normaliser | d | suffix tokens | ms | TFLOP/s | time x softmax | bf16 rel err | NaN |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results["sections"].get("attention_normalizers") or []:
        lines.append(f"| {r['normalizer']} | {r['dim']} | {r['suffix_tokens']} | {r['ms']:.3f} | {r['tflops']:.0f} | "
                     f"{r['x_softmax_time']:.2f} | {r['bf16_rel_err']:.2e} | {r['nan']} |")
    lines += ["", "| queries | docs | k | FAISS CPU ms | kernel fp32 ms (x) recall | torch fp32 ms (x) recall "
              "| kernel fp16 ms (x) recall |", "|---|---|---|---|---|---|---|"]
    for r in results["sections"].get("topk") or []:
        cells = []
        for n in ("kernel_fp32", "torch_matmul_topk_fp32", "kernel_fp16"):
            cells.append(f"{f(r, n + '_ms', '.2f')} ({f(r, n + '_speedup_vs_faiss_cpu', '.0f')}x) "
                         f"{f(r, n + '_recall_vs_faiss', '.4f')}")
        head = f"| {r['queries']} | {r['docs']} | {r['k']} | {r['faiss_cpu_ms']:.1f} | "
        lines.append(head + " | ".join(cells) + " |")
    lines += ["", "| reranker engines (bf16) | docs | padded ms | cache ms (x padded) | packed ms (x padded) "
              "| packed rel diff |", "|---|---|---|---|---|---|"]
    for r in results["sections"].get("rerank_engines") or []:
        if r["case"] == "one query":
            lines.append(f"| one query | {r['docs']} | {r['padded_ms']:.1f} | {r['cache_ms']:.1f} "
                         f"({r['cache_speedup_vs_padded']:.2f}x) | {r['packed_ms']:.1f} "
                         f"({r['packed_speedup_vs_padded']:.2f}x) | {r['packed_max_rel_diff_vs_padded']:.1e} |")
        else:
            lines.append(f"| {r['requests']} concurrent requests, one call each vs coalesced | "
                         f"{r['requests']}x{r['docs_per_request']} | – | {r['cache_one_by_one_ms']:.1f} -> "
                         f"{r['cache_coalesced_ms']:.1f} ({r['cache_coalescing_speedup']:.2f}x) | "
                         f"{r['packed_one_by_one_ms']:.1f} -> {r['packed_coalesced_ms']:.1f} "
                         f"({r['packed_coalescing_speedup']:.2f}x) | – |")
    if results["errors"]:
        lines += ["", "errors: " + ", ".join(results["errors"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_suite_out")
    parser.add_argument("--totals", default="16384,65536,262144")
    parser.add_argument("--prefix", type=int, default=1024)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    OUT_DIR.append(str(out))
    skip = set(args.skip.split(","))
    device_info()
    ceilings()
    if "attention" not in skip:
        attention_speed([int(x) for x in args.totals.split(",")], args.prefix)
    if "correctness" not in skip:
        attention_correctness()
    if "normalizers" not in skip:
        attention_normalizers(65536, args.prefix)
    if "topk" not in skip:
        topk_search(args.docs, args.dim)
    if "rerank" not in skip:
        rerank_engines()
    (out / "gpu_suite.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    md = markdown(RESULTS)
    (out / "gpu_suite.md").write_text(md)
    print(md)
    for name, err in RESULTS["errors"].items():
        print(f"--- {name}\n{err[-1500:]}")


if __name__ == "__main__":
    main()

"""Run the Triton kernels under TRITON_INTERPRET=1 on CPU against float64 references; print JSON.

Run as a subprocess by tests/test_kernels_*.py: the interpreter must be switched on before triton is
first imported, which a pytest process that already imported triton elsewhere cannot guarantee.
Usage: python tests/kernel_interpret_cases.py attention|attention_tma|topk
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _quicken_interpreter() -> None:
    """Remove two interpreter costs that do not change what a kernel computes.

    1. Every call of a `@triton.jit` helper from inside a kernel re-patches `triton.language` with
       `inspect.getmembers` (~0.5 ms), though the running grid has patched those modules already;
       the attention kernels call a helper per key block, so this was 1/3 of their interpreted time.
       Here a helper call patches only modules this grid run has not patched yet.
    2. `tl.sort` reduces with `xor_sum`, which the interpreter runs as a Python loop per element
       (~90 % of the top-k kernel's interpreted time); numpy's xor reduction gives the same bits.
    Both reach into the interpreter's private module, so a triton without these names is left alone.
    """
    import inspect

    import triton.language as tl
    from triton.runtime import interpreter as interp

    needed = ("_patch_lang", "_LangPatchScope", "GridExecutor", "InterpretedFunction", "ReduceOps")
    if not all(hasattr(interp, name) for name in needed) or not hasattr(tl.standard, "_xor_combine"):
        return
    real_patch, real_grid_call = interp._patch_lang, interp.GridExecutor.__call__
    patched: list[set[int]] = []  # per running grid: ids of the language modules patched in it

    def grid_call(self, *args, **kwargs):
        patched.append(set())
        try:
            return real_grid_call(self, *args, **kwargs)
        finally:
            patched.pop()

    def patch_lang(fn):
        langs = {id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core)}
        if patched and langs <= patched[-1]:
            return interp._LangPatchScope()  # nothing to patch, nothing to restore
        scope = real_patch(fn)
        if patched:
            patched[-1] |= langs
        return scope

    real_reduce = interp.ReduceOps.apply_impl

    def apply_impl(self, input):
        if self.combine_fn is tl.standard._xor_combine:
            x = input[0]
            data = np.bitwise_xor.reduce(x.handle.data, axis=self.axis, keepdims=self.keep_dims)
            return self.to_tensor(data, x.dtype)
        return real_reduce(self, input)

    interp.GridExecutor.__call__ = grid_call
    interp._patch_lang = patch_lang
    interp.ReduceOps.apply_impl = apply_impl


_quicken_interpreter()

# (name, head_dim, heads, kv_heads, causal, prefix groups (0 = none), dtype)
ATTENTION_CASES = [
    ("d64_mha_causal_fp32", 64, 4, 4, True, 0, torch.float32),
    ("d64_gqa4_causal_prefix_fp32", 64, 8, 2, True, 1, torch.float32),
    ("d64_gqa8_full_prefix2_fp32", 64, 8, 1, False, 2, torch.float32),
    ("d128_mha_full_fp32", 128, 2, 2, False, 0, torch.float32),
    ("d128_gqa4_causal_prefix2_fp32", 128, 4, 1, True, 2, torch.float32),
    ("d128_gqa8_causal_fp16", 128, 8, 1, True, 0, torch.float16),
    ("d64_gqa4_full_prefix_fp16", 64, 4, 1, False, 1, torch.float16),
    ("d128_mha_causal_prefix_fp16", 128, 2, 2, True, 1, torch.float16),
    # SmolLM2's 9/3 heads: 3 heads packed per tile, which does not divide the 64-row tile
    ("d64_gqa3_causal_prefix_fp32", 64, 9, 3, True, 1, torch.float32),
]

# FlashAttention-4's softmax tricks (lazy rescaling; half the exponentials by polynomial, halves only)
# on a subset, plus "spiky" queries (x6: logits with sd ~9 in base 2) whose running max keeps growing
# past the lazy threshold mid-stream, so both sides of its branch run.
FA4_CASES = [c for c in ATTENTION_CASES if c[0] in (
    "d64_gqa4_causal_prefix_fp32", "d128_gqa8_causal_fp16", "d64_gqa4_full_prefix_fp16", "d64_gqa3_causal_prefix_fp32")]
FA4_SPIKY = ("d64_gqa4_causal_prefix_fp32", "d128_gqa8_causal_fp16")

# The other attention normalisers (research options), each with a non-default parameter so its
# plumbing is checked too; softpick also on spiky queries (its running max moves mid-stream).
NORMALIZER_OPTIONS = {"ssmax": {"ssmax_s": 0.7}, "sigmoid": {"sigmoid_bias": -3.0}, "softpick": {"softpick_eps": 1e-6}}
NORMALIZER_BASES = ("d64_gqa4_causal_prefix_fp32", "d64_gqa8_full_prefix2_fp32", "d64_gqa4_full_prefix_fp16")
NORMALIZER_RUNS = [(f"{n}_{c}", c, n, 1.0) for n in NORMALIZER_OPTIONS for c in NORMALIZER_BASES
                   if n == "softpick" or not c.endswith("fp16")]  # fp16 once: softpick's rescaled sums
NORMALIZER_RUNS.append(("softpick_d64_gqa4_causal_prefix_fp32_spiky", "d64_gqa4_causal_prefix_fp32", "softpick", 6.0))

# (name, queries, corpus rows, dim, k, dtype, duplicate corpus)
TOPK_CASES = [
    ("q5_n300_d96_k10_fp32", 5, 300, 96, 10, torch.float32, False),
    ("q17_n200_d64_k1_fp32", 17, 200, 64, 1, torch.float32, False),
    ("q3_n150_d40_k33_fp32", 3, 150, 40, 33, torch.float32, False),
    ("q4_n256_d64_k8_fp16", 4, 256, 64, 8, torch.float16, False),
    ("q3_n2x90_d32_k6_ties", 3, 90, 32, 6, torch.float32, True),
]


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).norm() / ref.norm())


def _ragged_lengths(gen: torch.Generator, count: int) -> list[int]:
    """Random lengths in 1..300 with the edges (1 and 300) and an empty sequence mixed in."""
    lengths = torch.randint(1, 301, (count,), generator=gen).tolist()
    return [1, *lengths, 0, 300][: count + 3]


def run_attention(kernel: str = "pointer") -> dict[str, dict[str, float]]:
    """Every case through the pointer kernel (`varlen_fwd`), the TMA-descriptor one (`varlen_fwd_tma`),
    or the pointer kernel with the FA4 options ("fa4": FA4_CASES, each also with spiky queries)."""
    from kernels.attention.reference import varlen_prefix_attention_reference
    from kernels.attention.varlen_fwd import varlen_prefix_attention_triton
    from kernels.attention.varlen_fwd_tma import varlen_prefix_attention_tma

    launch = varlen_prefix_attention_tma if kernel == "tma" else varlen_prefix_attention_triton
    runs = [(i, case, 1.0, {}) for i, case in enumerate(ATTENTION_CASES)]
    if kernel == "fa4":
        runs = [(i, c, 1.0, {}) for i, c in enumerate(ATTENTION_CASES) if c in FA4_CASES]
        runs += [(i, c, 6.0, {}) for i, c in enumerate(ATTENTION_CASES) if c[0] in FA4_SPIKY]
    if kernel == "normalizers":
        index = {c[0]: i for i, c in enumerate(ATTENTION_CASES)}
        runs = [(index[base], (run, *ATTENTION_CASES[index[base]][1:]), q_scale,
                 {"normalizer": norm, **NORMALIZER_OPTIONS[norm]}) for run, base, norm, q_scale in NORMALIZER_RUNS]
    results = {}
    for i, (name, dim, heads, kv_heads, causal, groups, dtype), q_scale, options in runs:
        if kernel == "fa4":
            options = {"lazy_rescale": True, "exp2_split": dtype != torch.float32}
            name = f"{name}_spiky" if q_scale != 1.0 else name
        gen = torch.Generator().manual_seed(1000 + i)
        lengths = _ragged_lengths(gen, 2)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        total = int(cu[-1])

        def rand(*shape: int, g: torch.Generator = gen, dt: torch.dtype = dtype) -> torch.Tensor:
            return torch.randn(*shape, generator=g, dtype=torch.float64).to(dt)

        q, k, v = (rand(total, heads, dim) * q_scale).to(dtype), rand(total, kv_heads, dim), rand(total, kv_heads, dim)
        prefix = {}
        if groups:
            plens = torch.randint(1, 121, (groups,), generator=gen).tolist()
            cu_p = torch.tensor([0, *torch.tensor(plens).cumsum(0).tolist()], dtype=torch.int32)
            prefix = dict(prefix_k=rand(int(cu_p[-1]), kv_heads, dim), prefix_v=rand(int(cu_p[-1]), kv_heads, dim),
                          cu_prefix_lens=cu_p,
                          prefix_group=torch.randint(0, groups, (len(lengths),), generator=gen, dtype=torch.int32))
        out = torch.full_like(q, float("nan"))  # poisoned: an unwritten row stays NaN and fails
        launch(q, k, v, cu, max(lengths), causal=causal, out=out, **prefix, **options)
        norm = {n: o for n, o in options.items() if n not in ("lazy_rescale", "exp2_split")}
        ref = varlen_prefix_attention_reference(
            q.double(), k.double(), v.double(), cu, causal=causal, **norm,
            **{n: (t.double() if t.is_floating_point() else t) for n, t in prefix.items()})
        results[name] = {"rel_err": _rel_err(out, ref), "nan": int(out.isnan().sum()), "tokens": total}
    return results


def run_topk() -> dict[str, dict[str, float]]:
    from kernels.topk.similarity_topk_fwd import similarity_topk_triton

    results = {}
    for i, (name, nq, n, dim, k, dtype, duplicate) in enumerate(TOPK_CASES):
        gen = torch.Generator().manual_seed(2000 + i)
        queries = torch.randn(nq, dim, generator=gen).to(dtype)
        corpus = torch.randn(n, dim, generator=gen).to(dtype)
        if duplicate:  # small integers: every dot product is exact, so the copies tie exactly
            queries = torch.randint(-3, 4, (nq, dim), generator=gen).to(dtype)
            corpus = torch.randint(-3, 4, (n, dim), generator=gen).to(dtype)
            corpus = torch.cat([corpus, corpus])
        scores, ids = similarity_topk_triton(queries, corpus, k)
        ref_scores, ref_ids = (queries.double() @ corpus.double().T).topk(k, dim=1)
        result = {"ids_equal": float((ids == ref_ids).float().mean()),
                  "max_score_err": float((scores.double() - ref_scores).abs().max()),
                  "ids_dtype_int64": float(ids.dtype == torch.int64)}
        if duplicate:  # every row appears twice: among equal scores the lower id must come first
            same = scores[:, 1:] == scores[:, :-1]
            result["ties_present"] = float(same.any())
            result["ties_lower_id_first"] = float((ids[:, 1:] > ids[:, :-1])[same].all())
        results[name] = result
    return results


if __name__ == "__main__":
    which = sys.argv[1]
    runs = {"attention": run_attention, "attention_tma": lambda: run_attention("tma"),
            "attention_fa4": lambda: run_attention("fa4"),
            "attention_normalizers": lambda: run_attention("normalizers"), "topk": run_topk}
    print(json.dumps(runs[which]()))

"""How much work the varlen attention kernel's tiling adds over the useful FLOPs (analytic, CPU).

The GPU tables charge the kernel the useful FLOPs of causal shared-prefix attention, 4·d·H·(L·P +
L(L+1)/2) per sequence, but a program computes whole tiles: every row of its BLOCK_M (including the
padding rows past a sequence's end) against every key column of each block it visits (the prefix
rounded up to BLOCK_N, the unmasked blocks left of its first position, and the masked diagonal
blocks). The ratio computed / useful bounds what any retiling can gain at an unchanged rate of
computed FLOPs: TFLOP/s (useful) = rate (computed) / ratio.

    python -m benchmarks.tile_waste [--tokens 65536] [--prefix 1024]
"""

from __future__ import annotations

import argparse
import math

from benchmarks.gpu_suite import suffix_lengths

# (query positions per tile, key block, key block on the diagonal), heads_per_tile rows per position
TILINGS = [
    ("v2 dispatched: 4 heads x 32 positions (BLOCK_M 128), BLOCK_N 64", 32, 64, 64),
    ("same, diagonal blocks of 32 keys", 32, 64, 32),
    ("4 heads x 16 positions (BLOCK_M 64), BLOCK_N 64", 16, 64, 64),
    ("4 heads x 16 positions, diagonal blocks of 16 keys", 16, 64, 16),
    ("one head a tile (v1): 128 positions, BLOCK_N 64", 128, 64, 64),
    ("4 heads x 64 positions (BLOCK_M 256), BLOCK_N 64", 64, 64, 64),
]


def computed_over_useful(lengths: list[int], prefix: int, positions: int, block_n: int, block_diag: int) -> float:
    """Key columns computed per query row, summed over tiles, over the causal useful ones."""
    useful = sum(n * prefix + n * (n + 1) / 2 for n in lengths)
    computed = 0
    prefix_cols = math.ceil(prefix / block_n) * block_n
    for n in lengths:
        for m0 in range(0, n, positions):
            unmasked_end = (m0 // block_n) * block_n
            diag_cols = math.ceil((min(m0 + positions, n) - unmasked_end) / block_diag) * block_diag
            computed += positions * (prefix_cols + unmasked_end + diag_cols)
    return computed / useful


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--prefix", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    lengths = suffix_lengths(args.tokens, args.seed)
    base = computed_over_useful(lengths, args.prefix, *TILINGS[0][1:])
    print(f"{len(lengths)} suffixes of 100-600 tokens ({args.tokens} in all), {args.prefix}-token prefix")
    print("| tiling | computed / useful FLOPs | useful TFLOP/s at the same computed rate |")
    print("|---|---:|---:|")
    for name, positions, block_n, block_diag in TILINGS:
        ratio = computed_over_useful(lengths, args.prefix, positions, block_n, block_diag)
        print(f"| {name} | {ratio:.3f} | {base / ratio:.3f}x |")


if __name__ == "__main__":
    main()

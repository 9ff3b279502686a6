"""Reranker LLM load time: the GGUF file converted by transformers vs the de-quantised cache entry.

Each load runs in a fresh process (what a server start pays: imports excluded, both ways), against
one temporary cache folder: the first cached load fills it, later ones read it. Baseline: the
direct GGUF load (`gguf_cache=False`), timed in the same run.

    python -m benchmarks.llm_load [--model NAME] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

_CHILD = """
import json, sys, time
from pathlib import Path
from models.llm.loading import load_causal_lm
model, cache, folder = sys.argv[1], sys.argv[2] == "1", Path(sys.argv[3])
start = time.perf_counter()
lm = load_causal_lm(model, device="cpu", dtype="float32", gguf_cache=cache, gguf_cache_dir=folder)
print(json.dumps({"seconds": time.perf_counter() - start, "source": lm.source}))
"""

ROOT = Path(__file__).resolve().parents[1]


def _load_once(model: str, cache: bool, folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, model, "1" if cache else "0", str(folder)],
                          capture_output=True, text=True, cwd=ROOT, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(model: str, repeats: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        direct = [_load_once(model, False, folder)["seconds"] for _ in range(repeats)]
        first = _load_once(model, True, folder)  # converts and writes the entry
        hits = [_load_once(model, True, folder) for _ in range(repeats)]
        entry_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    assert all(h["source"].startswith("GGUF cache") for h in hits), hits
    return {"model": model, "direct_s": direct, "first_cached_s": first["seconds"],
            "hit_s": [h["seconds"] for h in hits], "entry_mb": entry_mb,
            "speedup": median(direct) / median(h["seconds"] for h in hits)}


def to_markdown(r: dict) -> str:
    direct, hits = median(r["direct_s"]), median(r["hit_s"])
    return "\n".join([
        f"| load of {r['model']} (fresh process, CPU, float32) | seconds (median of {len(r['hit_s'])}) | vs GGUF |",
        "|---|---:|---:|",
        f"| GGUF file, converted by transformers (baseline) | {direct:.2f} | 1.0x |",
        f"| first load with the cache (converts, writes a {r['entry_mb']:.0f} MB entry) | "
        f"{r['first_cached_s']:.2f} | {direct / r['first_cached_s']:.2f}x |",
        f"| later loads (cache entry, safetensors) | {hits:.2f} | **{r['speedup']:.0f}x** |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    result = run(args.model, args.repeats)
    print(json.dumps(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()

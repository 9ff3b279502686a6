"""The bounded headless load test behind `make loadtest`.

Starts an rrs server on 127.0.0.1 (its own data directory), makes sure the 100k-document search
collection exists, then for each scenario runs locust headless once per step of users (a fixed time
each, ending with a low-load step that shows recovery), samples the server's memory, stops the
server with SIGTERM, and writes a report: admitted requests/s, p50/p95/p99 of admitted requests,
shed (503/429) and failed requests per step, a saturation curve PNG per scenario, and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

from loadtest.corpus import ensure_collection, query_vectors
from loadtest.text import random_text
from service.process import REPO, ServerProcess
from service.settings import Settings

SCENARIOS = {"embed": "EmbedUser", "search": "SearchUser", "search_vector": "SearchVectorUser", "mixed": "MixedUser",
             "rerank": "RerankUser"}
SHED = (429, 503)
WARMUP_S = 2.0  # requests started in a step's first seconds (users still spawning) are not counted


@dataclass
class StepResult:
    scenario: str
    users: int
    seconds: float
    admitted: int
    shed: int
    errors: int
    rps: float
    shed_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rss_mb: float
    error_samples: list[str] = field(default_factory=list)
    endpoints: dict[str, dict[str, float]] = field(default_factory=dict)  # per endpoint, when several


def _proc_kb(pid: int, key: str) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return float(match.group(1)) if match else 0.0


class RssSampler(threading.Thread):
    """Peak resident memory of the server over one step (VmRSS sampled twice a second)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb = pid, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak_kb = max(self.peak_kb, _proc_kb(self.pid, "VmRSS"))
            self.done.wait(0.5)


def _latency_stats(rows: list[tuple[str, int, float]], seconds: float) -> dict[str, float]:
    ok = np.asarray([ms for _, status, ms in rows if 200 <= status < 300] or [np.nan])
    admitted = sum(1 for _, status, _ in rows if 200 <= status < 300)
    shed = sum(1 for _, status, _ in rows if status in SHED)
    return {"admitted": admitted, "shed": shed, "errors": len(rows) - admitted - shed, "rps": admitted / seconds,
            "shed_rps": shed / seconds, "p50_ms": float(np.percentile(ok, 50)), "p95_ms": float(np.percentile(ok, 95)),
            "p99_ms": float(np.percentile(ok, 99)), "max_ms": float(np.max(ok))}


def summarize(scenario: str, users: int, record: Path, started: float, ended: float, rss_mb: float) -> StepResult:
    """Admitted (2xx), shed (429/503) and failed requests of one step, from the per-request record."""
    window_start = started + WARMUP_S
    rows: list[tuple[str, int, float]] = []
    for line in record.read_text().splitlines() if record.exists() else []:
        t, name, status, ms = line.split(",")
        if float(t) >= window_start:
            rows.append((name, int(status), float(ms)))
    seconds = max(1e-9, ended - window_start)
    samples: dict[str, int] = {}
    for name, status, _ in rows:
        if not (200 <= status < 300 or status in SHED):
            key = f"{name}: HTTP {status}" if status else f"{name}: connection error"
            samples[key] = samples.get(key, 0) + 1
    names = sorted({name for name, _, _ in rows})
    endpoints = {n: _latency_stats([r for r in rows if r[0] == n], seconds) for n in names} if len(names) > 1 else {}
    overall = _latency_stats(rows, seconds)
    return StepResult(scenario, users, round(seconds, 2), rss_mb=rss_mb, endpoints=endpoints,
                      error_samples=[f"{k} x{v}" for k, v in sorted(samples.items(), key=lambda kv: -kv[1])[:5]],
                      **overall)  # type: ignore[arg-type]


def run_step(scenario: str, users: int, seconds: int, server: ServerProcess, out: Path,
             api_key: str) -> StepResult:
    assert server.base_url.startswith("http://127.0.0.1:"), "load tests only target the loopback interface"
    assert server.proc is not None
    prefix = out / f"{scenario}_u{users:03d}"
    record = prefix.with_suffix(".requests.csv")
    record.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RRS_LOADTEST_RECORD": str(record),
           "RRS_LOADTEST_API_KEY": api_key, "RRS_LOADTEST_QUERY_VECTORS": str(out / "query_vectors.npy")}
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtest" / "locustfile.py"), "--headless",
           "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", server.base_url,
           "--csv", str(prefix), "--only-summary", "--stop-timeout", "5", "--exit-code-on-error", "0",
           "--loglevel", "WARNING", SCENARIOS[scenario]]
    sampler = RssSampler(server.proc.pid)
    sampler.start()
    started = time.time()
    with open(prefix.with_suffix(".locust.log"), "w") as log:
        subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 120,
                       check=True)
    ended = min(time.time(), started + seconds)
    sampler.done.set()
    sampler.join()
    return summarize(scenario, users, record, started, ended, sampler.peak_kb / 1024)


def warm_up(server: ServerProcess, collection: str, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with server.client(headers=headers, timeout=120) as client:
        for i in range(8):
            client.post("/v1/embeddings", json={"input": [f"warm up text {i}"] * (i + 1)}).raise_for_status()
            client.post(f"/v1/collections/{collection}/search",
                        json={"query": f"warm up query {i}", "top_k": 10}).raise_for_status()


def inprocess_embed_baseline(model: str, threads: int, seconds: float = 8.0) -> dict[str, float]:
    """The baseline for the embed scenario: texts/s of the model called directly (no HTTP, no queue),
    on the EmbedUser's texts, one text per call and 32 per call, with the server's thread count."""
    import torch

    from models.embedder import load_embedder

    torch.set_num_threads(threads)
    embedder = load_embedder(model, device="cpu")
    rng = random.Random(1)
    rates = {}
    for batch in (1, 32):
        embedder.encode([random_text(rng, 60) for _ in range(batch)], batch_size=batch)  # warm
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            embedder.encode([random_text(rng, 60) for _ in range(batch)], batch_size=batch)
            done += batch
        rates[f"batch{batch}_texts_per_s"] = round(done / (time.perf_counter() - started), 1)
    return rates


def _parse_users(text: str) -> list[int]:
    return [int(u) for u in text.split(",") if u.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default="embed,search,search_vector,mixed,rerank")
    ap.add_argument("--users", default="1,4,8,16,32,64", help="steps of concurrent users (embed, search)")
    ap.add_argument("--recovery-users", type=int, default=4, help="a last low-load step; 0 to skip")
    ap.add_argument("--mixed-users", default="4,16")
    ap.add_argument("--rerank-users", default="1,4")
    ap.add_argument("--step-seconds", type=int, default=12)
    ap.add_argument("--docs", type=int, default=100_000, help="documents in the search collection")
    ap.add_argument("--collection", default="bench100k")
    ap.add_argument("--max-inflight", type=int, default=8, help="RRS_MAX_INFLIGHT_REQUESTS for the server")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="RRS_TORCH_THREADS; 1 because torch's thread pool collapses on a CPU shared with other work")
    ap.add_argument("--data-dir", type=Path, default=REPO / "var" / "loadtest" / "data")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default loadtest/report/<time>)")
    ap.add_argument("--img-dir", type=Path, default=None, help="also write the PNGs here (e.g. docs/img)")
    args = ap.parse_args(argv)

    from loadtest.report import write_report  # matplotlib only once the arguments are good

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or REPO / "loadtest" / "report" / stamp
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    print(f"loadtest: preparing {args.collection} ({args.docs} documents) in {args.data_dir}", flush=True)
    corpus = ensure_collection(args.data_dir, args.collection, args.docs, settings.embed_model)
    query_vectors(out / "query_vectors.npy")
    print(f"loadtest: collection ready {corpus}", flush=True)
    baseline = inprocess_embed_baseline(settings.embed_model, args.torch_threads) if "embed" in args.scenarios else {}
    print(f"loadtest: in-process embed baseline {baseline}", flush=True)
    api_key = "loadtest-key"
    server = ServerProcess(args.data_dir, env={
        "RRS_DEMO_COLLECTION": "false", "RRS_MAX_INFLIGHT_REQUESTS": str(args.max_inflight),
        "RRS_API_KEYS": api_key, "RRS_LOG_LEVEL": "warning", "RRS_TORCH_THREADS": str(args.torch_threads)})
    started_server = time.perf_counter()
    server.start(timeout=600)
    startup_s = time.perf_counter() - started_server
    results: list[StepResult] = []
    skipped: dict[str, str] = {}
    try:
        paths = httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()["paths"]
        warm_up(server, args.collection, api_key)
        stepped = _parse_users(args.users)
        plan = {"embed": stepped, "search": stepped, "search_vector": stepped,
                "mixed": _parse_users(args.mixed_users), "rerank": _parse_users(args.rerank_users)}
        for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            if scenario == "rerank" and "/v1/rerank" not in paths:
                skipped[scenario] = "the server has no /v1/rerank route"
                continue
            steps = plan[scenario]
            if scenario in ("embed", "search", "search_vector") and args.recovery_users:
                steps = [*steps, args.recovery_users]
            for users in steps:
                step = run_step(scenario, users, args.step_seconds, server, out, api_key)
                results.append(step)
                print(f"loadtest: {scenario:7s} users={users:3d} {step.rps:7.1f} req/s  p50 {step.p50_ms:7.1f}"
                      f"  p99 {step.p99_ms:7.1f} ms  shed {step.shed:5d}  errors {step.errors}  "
                      f"RSS {step.rss_mb:.0f} MB", flush=True)
        assert server.proc is not None
        peak_rss_mb = _proc_kb(server.proc.pid, "VmHWM") / 1024
    finally:
        server.stop()
    meta = {
        "date": stamp, "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or 'cpu'})",
        "load_average_at_end": os.getloadavg(), "python": platform.python_version(), "corpus": corpus,
        "max_inflight": args.max_inflight, "torch_threads": args.torch_threads,
        "step_seconds": args.step_seconds, "warmup_excluded_s": WARMUP_S,
        "server_startup_s": round(startup_s, 1), "server_peak_rss_mb": round(peak_rss_mb, 1),
        "inprocess_embed_baseline": baseline, "skipped": skipped, "command": " ".join(sys.argv),
    }
    (out / "summary.json").write_text(json.dumps({"meta": meta, "steps": [asdict(r) for r in results]}, indent=2))
    report = write_report(out, meta, results, args.img_dir)
    print(report)
    print(f"loadtest: report in {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

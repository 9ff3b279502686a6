"""The Triton-interpreter runs, started together and awaited one by one.

Each run is its own process (TRITON_INTERPRET must precede the triton import) and interprets
single-threaded Python, so on a machine with several cores they finish sooner side by side than
one after another; the first fixture that needs any of them starts them all.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CASES_SCRIPT = Path(__file__).with_name("kernel_interpret_cases.py")
RUNS = ("attention", "attention_tma", "attention_fa4", "attention_normalizers", "topk")
TIMEOUT_S = 600

_started: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
_results: dict[str, dict[str, dict[str, float]]] = {}


def _start_all() -> None:
    # One thread each: the interpreter is Python-bound, and torch's pool would only contend.
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for which in RUNS:
        out = Path(tempfile.mkstemp(prefix=f"rrs-{which}-", suffix=".out")[1])
        err = Path(tempfile.mkstemp(prefix=f"rrs-{which}-", suffix=".err")[1])
        with out.open("w") as o, err.open("w") as e:
            proc = subprocess.Popen([sys.executable, str(CASES_SCRIPT), which], stdout=o, stderr=e, env=env)
        _started[which] = (proc, out, err)
    atexit.register(_stop_all)


def _stop_all() -> None:
    """Runs no test awaited (a `-k` selection) must not outlive the session."""
    for proc, out, err in _started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)


def interpreted(which: str) -> dict[str, dict[str, float]]:
    """The JSON results of one run (starting every run on first use)."""
    if which in _results:
        return _results[which]
    if not _started:
        _start_all()
    proc, out, err = _started[which]
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"interpreter run {which!r} ran past {TIMEOUT_S} s") from None
    stdout, stderr = out.read_text(), err.read_text()
    out.unlink(missing_ok=True)
    err.unlink(missing_ok=True)
    assert code == 0, f"interpreter run {which!r} failed:\n{stderr[-3000:]}"
    _results[which] = json.loads(stdout.strip().splitlines()[-1])
    return _results[which]

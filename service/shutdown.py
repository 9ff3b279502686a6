"""Run the app under uvicorn so that SIGTERM drains, flushes and exits 0.

On SIGTERM uvicorn stops accepting connections, waits (up to `shutdown_grace_s`) for requests in
flight, then runs the lifespan shutdown, which stops the batchers and closes every collection
(writing its index snapshot). After that uvicorn re-raises the signal into the handler that was
installed before it started, so that a plain process dies "killed by SIGTERM" (exit status 143)
even though nothing was lost. Container runtimes and supervisors read that as a crash; we install
a handler that records the drain instead, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.settings import Settings

log = logging.getLogger("rrs")

# uvicorn's own exit status when the app failed to start (lifespan error).
STARTUP_FAILED = 3


def _drained(sig: int, frame: FrameType | None) -> None:
    log.info("%s: in-flight requests drained and snapshots flushed; exiting 0", signal.Signals(sig).name)


def serve(app: FastAPI, settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit status (0 after a graceful drain)."""
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=settings.shutdown_grace_s)
    server = uvicorn.Server(config)
    previous = signal.signal(signal.SIGTERM, _drained)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else STARTUP_FAILED

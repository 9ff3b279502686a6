"""Shared fixtures: one real server per session for the common cases, a factory for special ones."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import LiveServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Servers run the default runtime (auto: short batches on ONNX Runtime), at a fixed crossover rather
# than one measured at every start (~1 s each); tests/test_embed_runtime.py covers the measurement.
os.environ.setdefault("RRS_EMBED_ONNX_MAX_TOKENS", "64")

# The session server: settings that let every common test run against one process.
SESSION_ENV = {
    "RRS_ALLOW_UNTRAINED_TRUNCATION": "true",
    "RRS_MAX_REQUEST_BYTES": str(4 * 1024 * 1024),
}


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server (uvicorn subprocess) shared by the whole session."""
    server = LiveServer(tmp_path_factory.mktemp("rrs-session"), env=SESSION_ENV)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client of the session server, one per test module."""
    with live_server.client() as c:
        yield c


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start extra servers with their own settings; all are stopped at the end of the test."""
    started: list[LiveServer] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None, start: bool = True) -> LiveServer:
        server = LiveServer(data_dir or tmp_path / f"srv{len(started)}", env=env)
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def embedder():
    """The shipped MiniLM loaded in-process (for reference vectors)."""
    from models.embedder import load_embedder

    return load_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")

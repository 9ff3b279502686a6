"""Security: API keys on every protected route, body size limit, CORS, collection names, safe weights,
no stack traces in error responses. Against a real server started with keys configured."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from models.safety import UnsafeWeights, check_safe_weights
from service.settings import Settings
from tests.server import LiveServer

KEYS = ["key-alpha-0123456789", "key-beta-9876543210"]
READER = "key-reader-5555555555"  # RRS_READ_ONLY_API_KEYS
ALLOWED_ORIGIN = "https://app.example.com"
MAX_BYTES = 64 * 1024
OPEN_PATHS = {"/health", "/ready"}  # probes stay open; /docs and /openapi.json are public by design
AUTH = {"Authorization": f"Bearer {KEYS[1]}"}


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("rrs-secure"), env={
        "RRS_API_KEYS": ",".join(KEYS),  # the comma-separated form; the JSON form is tested below
        "RRS_READ_ONLY_API_KEYS": f'["{READER}"]',
        "RRS_CORS_ORIGINS": f'["{ALLOWED_ORIGIN}"]',
        "RRS_MAX_REQUEST_BYTES": str(MAX_BYTES),
    })
    server.start()
    yield server
    server.stop()


def _operations(base_url: str) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the server's own OpenAPI schema, so new routes are covered."""
    schema = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    ops = []
    for path, item in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "no-such-collection", path)
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"}:
                ops.append((method.upper(), concrete))
    return ops


def test_settings_parse_api_keys_from_json_or_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRS_API_KEYS", '["k1", "k2"]')
    assert Settings().api_keys == ["k1", "k2"]
    monkeypatch.setenv("RRS_API_KEYS", " k1, k2 ,")
    assert Settings().api_keys == ["k1", "k2"]
    monkeypatch.delenv("RRS_API_KEYS")
    assert Settings().api_keys == []


def test_every_protected_route_refuses_a_missing_or_wrong_key(secure_server: LiveServer) -> None:
    ops = _operations(secure_server.base_url)
    protected = [(m, p) for m, p in ops if p not in OPEN_PATHS]
    assert ("POST", "/v1/embeddings") in protected and ("GET", "/metrics") in protected
    assert len(protected) >= 8
    bad_headers = [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {KEYS[0]}"},
                   {"Authorization": f"Bearer {KEYS[0]}x"}, {"Authorization": "Bearer"}]
    with secure_server.client() as client:
        for method, path in protected:
            for headers in bad_headers:
                r = client.request(method, path, headers=headers, json={} if method != "GET" else None)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert r.json()["error"]["type"] == "unauthorized"
                assert r.headers["www-authenticate"] == "Bearer"


def test_right_key_passes_every_protected_route(secure_server: LiveServer) -> None:
    with secure_server.client() as client:
        for method, path in _operations(secure_server.base_url):
            r = client.request(method, path, headers=AUTH, json={} if method != "GET" else None)
            assert r.status_code != 401, (method, path, r.text)
            assert r.status_code < 500, (method, path, r.text)
        # and real work succeeds with either key
        for key in KEYS:
            r = client.post("/v1/embeddings", json={"input": "hello"}, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
        assert client.get("/metrics", headers=AUTH).status_code == 200


def test_a_read_only_key_reads_and_is_refused_everything_else(secure_server: LiveServer) -> None:
    from service.dependencies import READ_ONLY_POSTS

    schema = httpx.get(f"{secure_server.base_url}/openapi.json", timeout=30).json()
    reader = {"Authorization": f"Bearer {READER}"}
    writes = 0
    with secure_server.client() as client:
        for template, item in schema["paths"].items():
            if template in OPEN_PATHS:
                continue
            path = re.sub(r"\{[^}]+\}", "no-such-collection", template)
            for method in (m.upper() for m in item if m in {"get", "post", "put", "patch", "delete"}):
                r = client.request(method, path, headers=reader, json={} if method != "GET" else None)
                if method == "GET" or template in READ_ONLY_POSTS:
                    assert r.status_code not in (401, 403), (method, template, r.text)
                else:
                    writes += 1
                    assert r.status_code == 403, (method, template, r.status_code, r.text)
                    assert r.json()["error"]["type"] == "forbidden" and "read-only" in r.json()["error"]["message"]
        assert writes >= 15  # creates, upserts, deletes, PATCH, aliases, backups, calibration, feedback...
        # Real reads work; a real write does not, and nothing was created.
        r = client.post("/v1/embeddings", json={"input": "hello"}, headers=reader)
        assert r.status_code == 200
        r = client.post("/v1/collections", json={"name": "by-reader"}, headers=reader)
        assert r.status_code == 403
        assert client.get("/v1/collections/by-reader", headers=AUTH).status_code == 404
        r = client.post("/v1/embeddings", json={"input": "hello"}, headers={"Authorization": f"Bearer {READER}x"})
        assert r.status_code == 401


def test_probes_and_docs_stay_open(secure_server: LiveServer) -> None:
    with secure_server.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 200


def test_oversized_body_is_refused_with_413(secure_server: LiveServer) -> None:
    big = {"input": ["x" * 1000] * (MAX_BYTES // 1000 + 10)}
    with secure_server.client() as client:
        r = client.post("/v1/embeddings", json=big, headers=AUTH)
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
            yield b'{"input": ["'
            for _ in range(MAX_BYTES // 4096 + 4):
                yield b"y" * 4096
            yield b'"]}'

        r = client.post("/v1/embeddings", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413
        # just under the limit is served
        ok = client.post("/v1/embeddings", json={"input": ["small text"] * 100}, headers=AUTH)
        assert ok.status_code == 200


def test_cors_preflight_allows_only_the_configured_origin(secure_server: LiveServer) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with secure_server.client() as client:
        r = client.options("/v1/embeddings", headers={"Origin": ALLOWED_ORIGIN, **preflight})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        r = client.options("/v1/embeddings", headers={"Origin": "https://evil.example.net", **preflight})
        assert r.status_code == 400
        assert "access-control-allow-origin" not in r.headers
        r = client.post("/v1/embeddings", json={"input": "x"}, headers={**AUTH, "Origin": ALLOWED_ORIGIN})
        assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


@pytest.mark.parametrize("name", ["../x", "..", "../../etc", "/etc/passwd", "a/b", "a\\b", ".hidden", "x" * 65,
                                  "n" * 10_000, "", "name with space", "naïve", "a\x00b"])
def test_unsafe_collection_names_are_rejected_on_create(secure_server: LiveServer, name: str) -> None:
    with secure_server.client() as client:
        r = client.post("/v1/collections", json={"name": name}, headers=AUTH)
        assert r.status_code in (400, 422), (name, r.status_code, r.text)
        assert r.json()["error"]["type"] in ("invalid_request", "validation_error")
    _assert_no_stray_folders(secure_server.data_dir)


@pytest.mark.parametrize("raw_path", ["..%2Fx", "%2E%2E", "%2E%2E%2F%2E%2E%2Fetc", "%2Fetc%2Fpasswd",
                                      "a%5C..%5Cb", "x" * 300])
@pytest.mark.parametrize("suffix", ["", "/documents", "/search", "/reload"])
def test_unsafe_collection_names_in_paths_are_rejected(secure_server: LiveServer, raw_path: str,
                                                       suffix: str) -> None:
    method = "GET" if suffix == "" else "POST"
    body = {"documents": [{"id": "1", "text": "t"}]} if suffix == "/documents" else {"query": "q"}
    url = httpx.URL(f"{secure_server.base_url}/v1/collections/{raw_path}{suffix}")
    with secure_server.client() as client:
        r = client.request(method, url, json=None if method == "GET" else body, headers=AUTH)
        assert r.status_code in (400, 404, 405, 422), (raw_path, suffix, r.status_code, r.text)
        assert "Traceback" not in r.text
    _assert_no_stray_folders(secure_server.data_dir)


def _assert_no_stray_folders(data_dir: Path) -> None:
    assert {p.name for p in data_dir.iterdir()} <= {"collections", *(p.name for p in data_dir.glob("server-*.log"))}
    assert not [p for p in (data_dir / "collections").iterdir() if not p.name.startswith(".")]


def test_internal_errors_return_the_error_shape_without_a_traceback() -> None:
    """An unexpected exception in a handler: JSON error body, status 500, no exception text leaked."""
    from service.app import create_app

    app = create_app(Settings(demo_collection=False))

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret-internal-detail at /srv/rrs/secret.py line 42")

    client = TestClient(app, raise_server_exceptions=False)  # no `with`: the lifespan (models) is not needed
    r = client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"type": "internal_error", "message": "internal server error"}}
    assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text


def test_malformed_json_gets_a_client_error_without_internals(secure_server: LiveServer) -> None:
    with secure_server.client() as client:
        r = client.post("/v1/embeddings", content=b'{"input": ["unterminated', headers={
            **AUTH, "Content-Type": "application/json"})
        assert r.status_code == 422 and "Traceback" not in r.text and 'File "' not in r.text


def test_pickle_only_model_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(UnsafeWeights, match="pytorch_model.bin"):
        check_safe_weights(tmp_path / "pickled")
    # a sub-module with only pickle weights is refused even when the main weights are safe
    (tmp_path / "mixed" / "2_Dense").mkdir(parents=True)
    (tmp_path / "mixed" / "model.safetensors").write_bytes(b"")
    (tmp_path / "mixed" / "2_Dense" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UnsafeWeights, match="2_Dense"):
        check_safe_weights(tmp_path / "mixed")
    with pytest.raises(UnsafeWeights):
        check_safe_weights(tmp_path / "pickled" / "pytorch_model.bin")
    # safe folders, GGUF files, a safe copy beside a pickle one, and hub ids pass
    (tmp_path / "both").mkdir()
    (tmp_path / "both" / "model.safetensors").write_bytes(b"")
    (tmp_path / "both" / "pytorch_model.bin").write_bytes(b"")
    check_safe_weights(tmp_path / "both")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    check_safe_weights(tmp_path / "m.gguf")
    check_safe_weights("some-org/some-model")


def test_embedder_loader_refuses_pickle_weights(tmp_path: Path) -> None:
    from models.embedder import load_embedder

    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(UnsafeWeights):
        load_embedder(str(tmp_path), device="cpu")

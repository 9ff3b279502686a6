"""Property-based fuzzing of every operation in the server's own OpenAPI schema (schemathesis), over HTTP
against a real server: no 5xx, and every response conforms to the schema (status, content type, body).

`positive_data_acceptance` is left out on purpose: the API answers 400 for requests that are valid JSON
of the right shape but break a rule the schema does not state (an empty text, `top_k` above
RRS_MAX_TOP_K, `query` and `vector` both sent, an unknown collection name pattern); those are client
errors by design. Every other built-in check runs, including `negative_data_rejection` (a schema-invalid
request must get a 4xx).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.server import LiveServer

EXAMPLES_PER_OPERATION = 12
EXCLUDED_CHECKS = [positive_data_acceptance]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Its own server: fuzzed creates and deletes must not disturb the shared session server."""
    server = LiveServer(tmp_path_factory.mktemp("rrs-fuzz"), env={"RRS_MAX_REQUEST_BYTES": str(1024 * 1024)})
    server.start()
    with server.client() as client:
        client.post("/v1/collections", json={"name": "fuzz"})
        docs = [{"id": f"d{i}", "text": f"fuzzing document {i}", "metadata": {"n": i}} for i in range(5)]
        client.post("/v1/collections/fuzz/documents", json={"documents": docs})
    yield server
    server.stop()


def _fuzz(operation: schemathesis.APIOperation, mode: schemathesis.GenerationMode, base_url: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, timeout=60, excluded_checks=EXCLUDED_CHECKS)

    run()


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_every_operation_answers_within_its_schema(fuzz_server: LiveServer, mode: schemathesis.GenerationMode
                                                    ) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: dict[str, str] = {}
    fuzzed = 0
    for operation in operations:
        try:
            _fuzz(operation, mode, fuzz_server.base_url)
            fuzzed += 1
        except Unsatisfiable:  # negative mode: nothing to make invalid (no body, free-form string params)
            assert mode is schemathesis.GenerationMode.NEGATIVE
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # schemathesis raises a BaseExceptionGroup; report all operations together
            failures[operation.label] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{msg}" for label, msg in failures.items())
    assert fuzzed >= (len(operations) if mode is schemathesis.GenerationMode.POSITIVE else 3)

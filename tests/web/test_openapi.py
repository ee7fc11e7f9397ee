"""The OpenAPI document is valid (a real validator says so), and schemathesis, generating requests
from it against the real server, meets no server error on any operation."""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

from tests.web.conftest import Served


def test_openapi_document_is_valid_and_declares_path_parameters(served: Served) -> None:
    document: dict[str, Any] = httpx.get(served.base_url + "/openapi.json", timeout=10).json()
    validate(document)  # raises OpenAPIValidationError naming the bad part
    templated = {path: ops for path, ops in document["paths"].items() if "{" in path}
    assert len(templated) >= 7
    for path, operations in templated.items():
        for method, operation in operations.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            named = {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert declared == named, f"{method.upper()} {path} declares {declared}"


def test_generated_requests_meet_no_server_error(served: Served) -> None:
    api = schemathesis.openapi.from_url(served.base_url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20
    checked: list[str] = []
    statuses: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def no_server_error(case: Any) -> None:
            response = case.call_and_validate(checks=[not_a_server_error], timeout=30)
            statuses.append(response.status_code)

        no_server_error()
        checked.append(operation.label)
    assert len(checked) == len(operations)
    assert len(statuses) >= 2 * len(operations) and max(statuses) < 500

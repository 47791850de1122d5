"""Schemathesis over the management API's own OpenAPI document, against the app on a free port
with the root organization's admin token: for every operation, generated requests (valid and
invalid by the schema: bodies, path and query parameters, headers) get a 4xx or a 2xx, never a
5xx, and only the statuses the document lists. The routes over stored data, the DLQ and replay
run against real data (``datakit``: chDB, the real replay service over the stream's twin). Bounded: a fixed number of examples per
operation, derandomised, no example database (~690 requests, ~30 s here).

The ingestion endpoints are in the document but served by the ingress on its own port; they
have their own fuzz tests (``test_ingress_fuzz.py``) and are left out here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, status_code_conformance

from tests.integration.apikit import RunningApi, running_api, sample_documents
from tests.integration.datakit import data_routers, stored_data

pytestmark = pytest.mark.services

EXAMPLES = 10


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApi]:
    with stored_data(sample_documents(), tmp_path_factory.mktemp("chdb"), events=40) as data:
        yield from running_api(tmp_path_factory.mktemp("fuzz"), routers=data_routers(),
                               state=data.state)  # fmt: skip


@pytest.fixture(scope="module")
def root_token(running: RunningApi) -> str:
    return running.token("mapex", "admin", name="fuzz")


@pytest.fixture(scope="module")
def api_schema(running: RunningApi) -> Any:
    spec = running.client.get("/openapi.json").json()
    spec["paths"] = {p: v for p, v in spec["paths"].items() if not p.startswith("/api/v1/events")}
    return schemathesis.openapi.from_dict(spec)


def test_no_request_makes_a_server_error(
    running: RunningApi, root_token: str, api_schema: Any
) -> None:
    """Each operation's strategy run by Hypothesis directly (schemathesis's pytest plugin does
    not load under this pytest); a failing case is reported with its operation and request."""
    headers = {"Authorization": f"Bearer {root_token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    # entities, tokens and the like; data, the Overview and replay; the two test runs
    assert len(operations) == 8 * 7 + 7 + 7 + 2
    statuses: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=running.url, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            where = (case.operation.label, case.as_curl_command(), response.text[:500])
            assert response.status_code < 500, where
            case.validate_response(
                response, checks=[not_a_server_error, status_code_conformance],
                excluded_checks=_other_checks(), headers=headers,
            )  # fmt: skip

        run()
    assert not [code for code in statuses if code >= 500]
    assert {200, 404, 422} <= set(statuses), statuses  # it did reach the services


def _other_checks() -> list[Any]:
    from schemathesis import checks

    keep = {not_a_server_error, status_code_conformance}
    names = ("content_type_conformance", "response_headers_conformance",
             "response_schema_conformance", "negative_data_rejection", "positive_data_acceptance",
             "use_after_free", "ensure_resource_availability", "ignored_auth",
             "missing_required_header", "unsupported_method", "max_response_time")  # fmt: skip
    found = [getattr(checks, name) for name in names if hasattr(checks, name)]
    return [check for check in found if check not in keep]

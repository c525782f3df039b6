"""Schemathesis against the API's own OpenAPI description, over a real server: whatever
it sends, no 5xx and no response outside the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import make_settings
from worker.api.app import create_app
from worker.db import session_factory
from worker.pave.simulator import serving
from worker.schema import upgrade_database

TOKEN = "schema-token-0123456789"


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("schema")
    database_url = f"sqlite:///{folder / 'api.db'}"
    tracker = make_settings(database_url, api_tokens=TOKEN,
                            pave_push_token="schema-push-token-0123456789")
    upgrade_database(tracker)
    app = create_app(settings=tracker, sessions=session_factory(database_url),
                     enqueue_poll=lambda ids, token: None)
    with serving(app) as url:
        yield url


def operations() -> list[str]:
    """The API's operations, read from the app itself (no server needed to list them)."""
    app = create_app(settings=make_settings("sqlite://", api_tokens=TOKEN),
                     sessions=session_factory("sqlite://"), enqueue_poll=lambda i, t: None)
    return [f"{method.upper()} {path}" for path, item in app.openapi()["paths"].items()
            for method in item]


# schemathesis's own pytest plugin does not load under pytest 9 yet, so each operation
# gets a plain hypothesis test built from schemathesis's strategy for it.
@pytest.mark.parametrize("label", operations())
def test_no_server_errors_and_every_response_in_the_schema(api_url: str, label: str) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def check(case: schemathesis.Case) -> None:
        # Some rules no JSON Schema says (one e-mail address, an account that exists) turn
        # schema-valid bodies away with 422; every 422 must still match the schema.
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                               excluded_checks=[positive_data_acceptance])

    check()

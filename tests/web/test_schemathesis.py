"""The REST API's OpenAPI schema, fuzzed with schemathesis: whatever the request, never a 5xx.

Bounded (a few examples per operation, derandomized) so the suite stays fast.  Each operation
runs as an admin against a store with a little data in it.  schemathesis's own pytest plugin
does not work with pytest 9, so its Hypothesis strategies are driven here directly.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from smartswitch.web.app import create_app

from .conftest import WebEnv, fake_node, make_env

MAX_EXAMPLES = 20


def _schema() -> Any:
    """The schema as /api/v1/openapi.json serves it (building it touches no database)."""
    with tempfile.TemporaryDirectory() as tmp:
        node, _ = fake_node(Path(tmp), f"sqlite+aiosqlite:///{tmp}/unused.db")
        app = create_app(node)
        return schemathesis.openapi.from_dict(app.openapi())


SCHEMA = _schema()
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebEnv]:
    with make_env(Path(tmp_path_factory.mktemp("fuzz"))) as env:
        env.post("/api/v1/accounts", {"name": "acme", "currency": "USD"})
        env.post("/api/v1/tariffs", {"name": "retail"})
        yield env


def test_every_resource_is_in_the_schema() -> None:
    paths = {op.path for op in OPERATIONS.values()}
    for path in (
        "/api/v1/accounts",
        "/api/v1/tariffs/{name}/rates.csv",
        "/api/v1/peers/{name}",
        "/api/v1/routes/{key}",
        "/api/v1/settings/{name}",
        "/api/v1/cdrs",
        "/api/v1/calls/{key}",
        "/api/v1/users",
        "/api/v1/tokens",
    ):
        assert path in paths, path


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_5xx(fuzz_env: WebEnv, label: str) -> None:
    operation = OPERATIONS[label]
    headers = fuzz_env.auth("admin")

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
        body = kwargs.pop("data", None)
        if body is not None:  # httpx: raw bytes go as content
            kwargs["content"] = body if isinstance(body, bytes) else str(body).encode()
        kwargs.pop("cookies", None)
        response = fuzz_env.client.request(**kwargs)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} {case.query or ''} {case.body!r:.200}: "
            f"{response.status_code} {response.text[:300]}"
        )

    check()

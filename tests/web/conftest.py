"""The web app over a real (temporary SQLite) store, with a stand-in for the SIP side.

``web`` gives a :class:`WebEnv`: the app (FastAPI TestClient), the node stand-in
(:class:`~.fakes.FakeNode`: its ``read_only`` switch, calls in progress to hang up, counters)
and an API token per role. The database is migrated with the project's Alembic migrations,
like a node's.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from smartswitch.admin import users
from smartswitch.runtime.config import NodeConfig
from smartswitch.store.database import create_engine, database_url, session_factory
from smartswitch.web.app import create_app

from .fakes import FakeNode
from .helpers import prepare_schema

PASSWORD = "correct horse battery"


def fake_node(data_dir: Path, url: str) -> tuple[FakeNode, Any]:
    """A node stand-in on the database at ``url``, and its engine (to dispose of)."""
    engine = create_engine(url)
    node = FakeNode(NodeConfig(data_dir=data_dir, node_id="test1"), session_factory(engine))
    return node, engine


@dataclass
class WebEnv:
    client: TestClient
    node: FakeNode
    tokens: dict[str, str]
    url: str

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, path: str, role: str = "admin", **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.auth(role), **kwargs)

    def post(self, path: str, json: Any = None, role: str = "admin", **kwargs: Any) -> Any:
        return self.client.post(path, json=json, headers=self.auth(role), **kwargs)

    def put(self, path: str, json: Any = None, role: str = "admin", **kwargs: Any) -> Any:
        return self.client.put(path, json=json, headers=self.auth(role), **kwargs)

    def delete(self, path: str, role: str = "admin") -> Any:
        return self.client.delete(path, headers=self.auth(role))


async def _seed(url: str) -> dict[str, str]:
    engine = create_engine(url)
    tokens = {}
    try:
        async with session_factory(engine)() as session, session.begin():
            for role in users.ROLES:
                user, _ = await users.create_user(session, role.replace("-", ""), role, PASSWORD)
                tokens[role] = await users.create_token(session, user, "test")
    finally:
        await engine.dispose()
    return tokens


_TEMPLATE: tuple[Path, dict[str, str]] | None = None


def _template() -> tuple[Path, dict[str, str]]:
    """A migrated, seeded database made once per run and copied for each test: migrating and
    hashing three argon2 passwords for every test would cost seconds each."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import tempfile

        data = Path(tempfile.mkdtemp(prefix="smartswitch-web-template-")) / "data"
        url = database_url(data)
        prepare_schema(url)
        _TEMPLATE = (data / "smartswitch.db", asyncio.run(_seed(url)))
    return _TEMPLATE


@contextlib.contextmanager
def make_env(
    tmp_path: Path, configure: Callable[[FakeNode], None] | None = None
) -> Iterator[WebEnv]:
    """The app over a copy of the seeded database; ``configure`` changes the node stand-in
    before the app is made (what it mounts depends on it: the cluster bus)."""
    template, tokens = _template()
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, data / "smartswitch.db")
    url = database_url(data)
    node, engine = fake_node(data, url)
    if configure is not None:
        configure(node)
    app = create_app(node)
    with TestClient(app, base_url="http://testserver") as client:
        yield WebEnv(client, node, tokens, url)
    asyncio.run(engine.dispose())


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebEnv]:
    with make_env(tmp_path) as env:
        yield env

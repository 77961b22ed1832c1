"""The web app over a real (temporary SQLite) store, with a stand-in for the SIP side.

``web`` gives a :class:`WebEnv`: the app (FastAPI TestClient), the node stand-in (its
``read_only`` switch, a fake B2BUA with calls to hang up) and an API token per role.
The database is migrated with the project's Alembic migrations, like a node's.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from smartswitch.admin import users
from smartswitch.runtime.config import NodeConfig
from smartswitch.store.database import create_engine, database_url, session_factory
from smartswitch.web.app import create_app

from .helpers import prepare_schema

PASSWORD = "correct horse battery"


class FakeLayer:
    def __init__(self) -> None:
        self.client: dict[Any, Any] = {}
        self.server: dict[Any, Any] = {}


@dataclass
class FakeB2bua:
    calls: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, int] = field(
        default_factory=lambda: {"calls": 0, "answered": 0, "rejected": 0}
    )
    label_stats: dict[str, list[int]] = field(default_factory=dict)
    layer: FakeLayer = field(default_factory=FakeLayer)
    timers: list[Any] = field(default_factory=list)
    dialogs: dict[Any, Any] = field(default_factory=dict)
    clock: Any = None
    now: float = 100.0
    hung_up: list[str] = field(default_factory=list)

    def hangup(self, key: str, now: float) -> bool:
        if key not in self.calls:
            return False
        del self.calls[key]
        self.hung_up.append(key)
        return True


class FakeServices:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.sessions = session_factory(self.engine)


class FakeNode:
    def __init__(self, data_dir: Path, url: str) -> None:
        self.config = NodeConfig(data_dir=data_dir, node_id="test1")
        self.b2bua = FakeB2bua()
        self.endpoint = None
        self.services = FakeServices(url)
        self.read_only = False
        self.primary_name = "db1.example.net"


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
def make_env(tmp_path: Path) -> Iterator[WebEnv]:
    template, tokens = _template()
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, data / "smartswitch.db")
    url = database_url(data)
    node = FakeNode(data, url)
    app = create_app(node)
    with TestClient(app, base_url="http://testserver") as client:
        yield WebEnv(client, node, tokens, url)
    asyncio.run(node.services.engine.dispose())


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebEnv]:
    with make_env(tmp_path) as env:
        yield env

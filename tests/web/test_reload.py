"""A committed change asks the node to reload its views at once (the admin service's hook, set
once by the web side), from the API and from the pages alike; a change of nothing does not."""

from __future__ import annotations

from .conftest import WebEnv
from .test_ui import login, post_form


def test_committed_changes_ask_the_node_to_reload(web: WebEnv) -> None:
    seen = [web.node.reloads_asked]

    def asked() -> bool:
        was = web.node.reloads_asked > seen[0]
        seen[0] = web.node.reloads_asked
        return was

    assert web.post("/api/v1/accounts", {"name": "a", "currency": "USD"}).status_code == 201
    assert asked()
    assert web.put("/api/v1/accounts/a", {"currency": "USD"}).json()["changed"] is False
    assert not asked()
    assert web.post("/api/v1/accounts", {"name": "a", "currency": "USD"}).status_code == 409
    assert not asked()
    login(web)
    assert (
        post_form(web, "/tariffs", "/tariffs", {"name": "t", "currency": "USD"}).status_code == 303
    )
    assert asked()
    assert post_form(web, "/tariffs/t", "/tariffs/t/delete", {}).status_code == 303
    assert asked()
    assert web.delete("/api/v1/accounts/a").status_code == 204
    assert asked()

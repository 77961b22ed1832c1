"""Who may drain the node: the local control token (from the data directory) or an admin;
not the read-only local token, not an operator, not a stranger. The write fence the
configuration commands ask through the same control side."""

from __future__ import annotations

from pathlib import Path

from smartswitch.web.security import local_control_token, local_token

from .conftest import WebEnv


def _bearer(token: str | None) -> dict[str, str]:
    assert token is not None
    return {"Authorization": f"Bearer {token}"}


def test_nobody_without_the_right_token_drains(web: WebEnv) -> None:
    data_dir = Path(web.node.config.data_dir)
    attempts = [
        {},
        {"Authorization": "Bearer ssc_0000"},
        _bearer(local_token(data_dir)),  # the read-only local token
        web.auth("operator"),
        web.auth("read-only"),
    ]
    for headers in attempts:
        response = web.client.post("/api/v1/node/drain", json={}, headers=headers)
        assert response.status_code in (401, 403), (headers, response.text)
    assert web.node.draining is None


def test_the_local_control_token_drains_and_reads_the_drain(web: WebEnv) -> None:
    headers = _bearer(local_control_token(Path(web.node.config.data_dir)))
    assert web.client.get("/api/v1/node/drain", headers=headers).status_code == 404
    response = web.client.post(
        "/api/v1/node/drain", json={"deadline": 12, "retry_after": 7}, headers=headers
    )
    assert response.status_code == 202, response.text
    assert response.json()["phase"] == "draining"
    assert response.json()["retry_after"] == 7
    status = web.client.get("/api/v1/node/drain?wait=0.1", headers=headers).json()
    assert status["phase"] == "draining"


def test_an_admin_drains_even_a_read_only_replica(web: WebEnv) -> None:
    web.node.read_only = True
    assert web.post("/api/v1/node/drain", {"deadline": 1}).status_code == 202
    assert web.get("/api/v1/node/drain").json()["phase"] == "draining"


def test_bad_drain_parameters_are_422(web: WebEnv) -> None:
    for body in ({"deadline": -1}, {"retry_after": "soon"}, {"nonsense": 1}):
        assert web.post("/api/v1/node/drain", body).status_code == 422, body
    assert web.node.draining is None


def test_the_write_fence_answers_the_control_token(web: WebEnv) -> None:
    headers = _bearer(local_control_token(Path(web.node.config.data_dir)))
    assert web.client.get("/api/v1/node/write-fence").status_code == 401
    assert (
        web.client.get("/api/v1/node/write-fence", headers=web.auth("operator")).status_code == 403
    )
    assert web.client.get("/api/v1/node/write-fence", headers=headers).json() == {"writable": True}
    web.node.write_refused = "this node cannot confirm it holds the primary lease: etcd away"
    refused = web.client.get("/api/v1/node/write-fence", headers=headers)
    assert refused.status_code == 409 and refused.json()["detail"] == web.node.write_refused
    web.node.write_refused = None
    web.node.read_only = True
    refused = web.client.get("/api/v1/node/write-fence", headers=headers)
    assert refused.status_code == 409 and "db1.example.net" in refused.json()["detail"]

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.factories import registration

PROBLEM = "application/problem+json"


def _assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert str(body["type"]).endswith("/" + slug)
    assert body["title"]
    assert body["detail"]
    return body


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = _assert_problem(await client.get("/v1/nowhere"), 404, "not-found")
    assert body["instance"] == "/v1/nowhere"


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    _assert_problem(await client.delete("/v1/auth/login"), 405, "method-not-allowed")


async def test_oversized_body_is_a_413_problem(client: httpx.AsyncClient) -> None:
    big = registration("rider", full_name="x" * 2_000_000)
    _assert_problem(await client.post("/v1/auth/register", json=big), 413, "payload-too-large")


async def test_oversized_streamed_body_is_a_413_problem(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65_536

    response = await client.post(
        "/v1/auth/register", content=chunks(), headers={"content-type": "application/json"}
    )
    _assert_problem(response, 413, "payload-too-large")


async def test_request_id_is_echoed_and_in_problems(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nowhere", headers={"X-Request-ID": "req-12345678"})
    assert response.headers["x-request-id"] == "req-12345678"
    assert response.json()["request_id"] == "req-12345678"


async def test_malformed_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 32


@pytest.fixture
def failing_app(app: FastAPI) -> FastAPI:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    return app


async def test_unexpected_error_is_a_500_problem_without_internals(
    failing_app: FastAPI, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await client.get("/boom")
    body = _assert_problem(response, 500, "internal-error")
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    assert body["request_id"]
    # The operator still gets the whole story, tied to the same request id.
    logged = capsys.readouterr().out
    assert "unhandled_error" in logged
    assert str(body["request_id"]) in logged

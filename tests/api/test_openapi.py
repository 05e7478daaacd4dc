from __future__ import annotations

from typing import Any

import httpx

PUBLIC = {("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")}
UNAUTHENTICATED = {
    ("/v1/auth/register", "post"),
    ("/v1/auth/login", "post"),
    ("/v1/auth/refresh", "post"),
    # Authenticated by Stripe's signature on the body, not by a token.
    ("/v1/webhooks/stripe", "post"),
    # Riders see price changes before they apply; anyone may recount a closed vote.
    ("/v1/fares/upcoming", "get"),
    ("/v1/governance/proposals/{proposal_id}/publication", "get"),
}


async def _operations(client: httpx.AsyncClient) -> list[tuple[str, str, dict[str, Any]]]:
    schema = (await client.get("/openapi.json")).json()
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


async def test_every_route_documents_its_errors_as_problems(client: httpx.AsyncClient) -> None:
    operations = await _operations(client)
    assert len(operations) >= 14
    for path, method, operation in operations:
        errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
        assert errors, f"{method.upper()} {path} documents no error response"
        for code, response in errors.items():
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], (path, method, code)
            assert content["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }


async def test_routes_that_need_a_token_document_401(client: httpx.AsyncClient) -> None:
    for path, method, operation in await _operations(client):
        if (path, method) in PUBLIC | UNAUTHENTICATED:
            continue
        assert "401" in operation["responses"], f"{method.upper()} {path}"
        assert operation.get("security"), f"{method.upper()} {path} declares no security"


async def test_routes_with_input_document_422(client: httpx.AsyncClient) -> None:
    for path, method, operation in await _operations(client):
        if operation.get("requestBody") or operation.get("parameters"):
            assert "422" in operation["responses"], f"{method.upper()} {path}"


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()

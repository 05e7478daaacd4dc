"""RFC 9457 problem details: the one shape every error response has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.errors import DomainError
from infra.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://ridecoop.org/problems/"

log = get_logger(__name__)

_STATUS_TYPES: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication is required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict with the current state"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "The request is not valid"),
    429: ("too-many-requests", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    503: ("service-unavailable", "A service this depends on is unavailable"),
}


class InvalidParam(BaseModel):
    name: str = Field(description="Where the problem is, as a dotted path (body.email)")
    reason: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A stable URI naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    invalid_params: list[InvalidParam] | None = Field(
        default=None, description="For validation errors: each field that was refused"
    )


def problem_type(slug: str) -> str:
    return PROBLEM_TYPE_BASE + slug


RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "request_id"})


def problem_response(
    request: Request | None,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    for key, value in (extra or {}).items():
        # An extension member never overwrites one RFC 9457 (or we) define.
        if value is not None and key not in RESERVED_MEMBERS:
            body[key] = value
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def status_problem(
    request: Request | None, status: int, detail: str | None = None, **extra: Any
) -> JSONResponse:
    slug, title = _STATUS_TYPES.get(status, ("http-error", "HTTP error"))
    return problem_response(request, status, slug, title, detail or title, extra=extra)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return problem_response(
        request, exc.status, exc.type, exc.title, exc.detail, headers=headers, extra=exc.extra
    )


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    params = [
        {"name": _location(tuple(err.get("loc", ()))), "reason": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    names = ", ".join(p["name"] for p in params[:5])
    return status_problem(
        request,
        422,
        f"The request has {len(params)} invalid field(s): {names}",
        invalid_params=params,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.url.path}"
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    response = status_problem(request, exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # The trace goes to the log with the request id; the client gets only the id. This
    # handler runs outside the request-context middleware, so the id is bound here.
    log.exception(
        "unhandled_error",
        path=request.url.path,
        error_type=type(exc).__name__,
        request_id=getattr(request.state, "request_id", None),
    )
    return status_problem(request, 500, "An unexpected error occurred; quote the request_id")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the errors a route can answer, all as problem+json."""
    return {
        status: {"model": Problem, "description": _STATUS_TYPES.get(status, ("", "Error"))[1]}
        for status in sorted(set(statuses))
    }


def as_problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite an OpenAPI document so every 4xx/5xx answer is ``application/problem+json``."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if str(status)[0] not in "45":
                    continue
                content = response.get("content", {})
                if "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return schema

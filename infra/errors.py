"""The domain's error tree. Each error carries its HTTP status; only api/ renders it.

``type`` is a stable slug: clients branch on it, it never changes once published.
Every slug is listed in docs/errors.md.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    status: ClassVar[int] = 400
    type: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


class Invalid(DomainError):
    status = 422
    type = "invalid"
    title = "The request is not valid"


class Unauthorized(DomainError):
    status = 401
    type = "unauthorized"
    title = "Authentication is required"


class Forbidden(DomainError):
    status = 403
    type = "forbidden"
    title = "Not allowed"


class NotFound(DomainError):
    status = 404
    type = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    type = "conflict"
    title = "Conflict with the current state"


class TooManyRequests(DomainError):
    status = 429
    type = "too-many-requests"
    title = "Too many requests"


class ServiceUnavailable(DomainError):
    status = 503
    type = "service-unavailable"
    title = "A service this depends on is unavailable"

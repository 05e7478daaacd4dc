"""Access tokens (short-lived JWTs) and refresh tokens (opaque, stored hashed). Pure."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from accounts.errors import InvalidToken, TokenExpired
from accounts.models import Role
from infra.settings import AuthSettings

ALGORITHM = "HS256"

SCOPES_BY_ROLE: dict[Role, tuple[str, ...]] = {
    Role.rider: ("rides",),
    Role.driver: ("drive", "governance"),
    Role.admin: ("admin",),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, as an access token proves it."""

    user_id: uuid.UUID
    role: Role
    scopes: frozenset[str]
    session_id: uuid.UUID
    expires_at: datetime

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def issue_access_token(
    settings: AuthSettings,
    *,
    user_id: uuid.UUID,
    role: Role,
    session_id: uuid.UUID,
    now: datetime,
) -> tuple[str, datetime]:
    expires_at = now + timedelta(seconds=settings.access_token_ttl_s)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(user_id),
        "role": role.value,
        "scope": " ".join(SCOPES_BY_ROLE[role]),
        "sid": str(session_id),
        "jti": uuid.uuid4().hex,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "typ": "access",
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM), expires_at


def decode_access_token(settings: AuthSettings, token: str) -> Principal:
    """Checks signature, algorithm, issuer, audience and expiry; raises InvalidToken or
    TokenExpired. Revocation is checked by the caller, which has the live state."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken from exc
    try:
        if claims.get("typ") != "access":
            raise ValueError("not an access token")
        role = Role(claims["role"])
        return Principal(
            user_id=uuid.UUID(claims["sub"]),
            role=role,
            scopes=frozenset(str(claims.get("scope", "")).split()),
            session_id=uuid.UUID(claims["sid"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=UTC),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidToken from exc


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    # A fast hash is right here: the token has 256 random bits, nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()

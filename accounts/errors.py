from __future__ import annotations

import uuid

from infra.errors import Conflict, Forbidden, TooManyRequests, Unauthorized


class AccountAlreadyExists(Conflict):
    type = "account-already-exists"
    title = "An account with this email or phone already exists"


class InvalidCredentials(Unauthorized):
    type = "invalid-credentials"
    title = "The login or password is wrong"


class AccountDisabled(Forbidden):
    type = "account-disabled"
    title = "This account is disabled"


class InvalidToken(Unauthorized):
    type = "invalid-token"
    title = "The token is missing, malformed, tampered with or revoked"


class TokenExpired(Unauthorized):
    type = "token-expired"
    title = "The token has expired"


class RefreshTokenReused(Unauthorized):
    type = "refresh-token-reused"
    title = "This refresh token was already used; every session of this login is revoked"

    def __init__(self, session_id: uuid.UUID) -> None:
        super().__init__()
        self.session_id = session_id


class RoleNotAllowed(Forbidden):
    type = "role-not-allowed"
    title = "Your role may not do this"


class LoginRateLimited(TooManyRequests):
    type = "login-rate-limited"
    title = "Too many login attempts; wait before trying again"

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.settings import (
    DEV_JWT_SECRET,
    ApiSettings,
    AuthSettings,
    CoreSettings,
    DatabaseSettings,
    Environment,
    GovernanceSettings,
    Settings,
    StripeSettings,
)

REAL_SECRET = "d3c1f0a8b47e4e2f9a6b5c4d3e2f1a0b9c8d7e6f"


REAL_GOVERNANCE = GovernanceSettings(ballot_secret="5f0e9d8c7b6a59483726150f4e3d2c1b0a998877")
REAL_STRIPE = StripeSettings(
    api_key="sk_live_51Habcdefghijklmnop",
    webhook_secret="whsec_abcdefghijklmnop",
    connect_return_url="https://ridecoop.example/connect/return",
    connect_refresh_url="https://ridecoop.example/connect/refresh",
)


def _production(
    stripe: StripeSettings = REAL_STRIPE,
    governance: GovernanceSettings = REAL_GOVERNANCE,
    **auth: object,
) -> Settings:
    return Settings(
        core=CoreSettings(env=Environment.production),
        auth=AuthSettings(**auth),  # type: ignore[arg-type]
        api=ApiSettings(metrics_token="scrape-token-0123456789"),
        stripe=stripe,
        governance=governance,
    )


def test_production_refuses_the_placeholder_secret() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        _production(jwt_secret=DEV_JWT_SECRET)


def test_production_refuses_weak_password_hashing() -> None:
    with pytest.raises(ValidationError, match="argon2"):
        _production(jwt_secret=REAL_SECRET, argon2_memory_kib=1024)


def test_production_refuses_placeholder_stripe_settings() -> None:
    with pytest.raises(ValidationError, match="RIDECOOP_STRIPE_API_KEY"):
        _production(stripe=StripeSettings(), jwt_secret=REAL_SECRET)


def test_production_refuses_the_placeholder_ballot_secret() -> None:
    with pytest.raises(ValidationError, match="RIDECOOP_GOVERNANCE_BALLOT_SECRET"):
        _production(governance=GovernanceSettings(), jwt_secret=REAL_SECRET)


def test_production_requires_a_metrics_token() -> None:
    with pytest.raises(ValidationError, match="METRICS_TOKEN"):
        Settings(
            core=CoreSettings(env=Environment.production),
            auth=AuthSettings(jwt_secret=REAL_SECRET),
            stripe=REAL_STRIPE,
        )


def test_production_accepts_real_secrets() -> None:
    assert _production(jwt_secret=REAL_SECRET).core.env is Environment.production


def test_development_allows_the_placeholder() -> None:
    settings = Settings(
        core=CoreSettings(env=Environment.development),
        auth=AuthSettings(jwt_secret=DEV_JWT_SECRET),
    )
    assert settings.auth.jwt_secret == DEV_JWT_SECRET


def test_short_secrets_are_refused_everywhere() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(jwt_secret="too-short")


def test_settings_come_from_ridecoop_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDECOOP_DATABASE_URL", "postgresql://u@db.internal:5433/rc")
    monkeypatch.setenv("RIDECOOP_API_PORT", "9001")
    monkeypatch.setenv("RIDECOOP_AUTH_ACCESS_TOKEN_TTL_S", "600")
    settings = Settings()
    assert settings.database.async_url == "postgresql+asyncpg://u@db.internal:5433/rc"
    assert settings.api.port == 9001
    assert settings.auth.access_token_ttl_s == 600


def test_bad_values_are_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIDECOOP_API_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_database_url_must_be_postgres() -> None:
    with pytest.raises(ValidationError):
        DatabaseSettings(url="sqlite:///x.db")

"""Settings, one small class per concern, all read from ``RIDECOOP_*`` variables.

Every setting is documented in docs/configuration.md; a test keeps the two in step.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PostgresDsn,
    RedisDsn,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# Anything that still contains this marker was never configured for real.
PLACEHOLDER_MARKER = "change-me"
DEV_JWT_SECRET = f"insecure-dev-secret-{PLACEHOLDER_MARKER}-0123456789abcdef"


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)


class CoreSettings(_Base):
    model_config = SettingsConfigDict(env_prefix="RIDECOOP_", extra="ignore", frozen=True)

    env: Environment = Environment.development
    log_level: str = "INFO"
    log_json: bool = True


class DatabaseSettings(_Base):
    model_config = SettingsConfigDict(env_prefix="RIDECOOP_DATABASE_", extra="ignore", frozen=True)

    url: PostgresDsn = PostgresDsn("postgresql+asyncpg://root@127.0.0.1:5432/ridecoop")
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=10, ge=0, le=200)
    statement_timeout_ms: int = Field(default=15_000, ge=100)

    @property
    def async_url(self) -> str:
        """The URL with the asyncpg driver, whatever scheme was configured."""
        url = str(self.url)
        scheme, _, rest = url.partition("://")
        return f"postgresql+asyncpg://{rest}" if scheme != "postgresql+asyncpg" else url


class RedisSettings(_Base):
    model_config = SettingsConfigDict(env_prefix="RIDECOOP_REDIS_", extra="ignore", frozen=True)

    url: RedisDsn = RedisDsn("redis://127.0.0.1:6379/0")
    max_connections: int = Field(default=200, ge=4, le=10_000)
    pool_timeout_s: float = Field(default=5.0, gt=0, le=60)


class AuthSettings(_Base):
    model_config = SettingsConfigDict(env_prefix="RIDECOOP_AUTH_", extra="ignore", frozen=True)

    jwt_secret: str = Field(default=DEV_JWT_SECRET, min_length=32)
    jwt_issuer: str = "ridecoop"
    jwt_audience: str = "ridecoop-api"
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=300, le=365 * 86_400)
    # argon2id costs; OWASP's minimum is 19 MiB and 2 passes, tests may lower them.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65_536, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    login_attempts_per_window: int = Field(default=10, ge=1)
    login_window_s: int = Field(default=300, ge=1)


class ApiSettings(_Base):
    model_config = SettingsConfigDict(env_prefix="RIDECOOP_API_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65_535)
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=1_048_576, ge=1_024)
    # When set, /metrics asks for it as a bearer token; required in production.
    metrics_token: str | None = Field(default=None, min_length=16)
    # The garbage collector's third threshold in each api process (Python's default is
    # 10): a full collection, which stops the process while it walks every object of
    # every open websocket, runs only after this many collections of the middle
    # generation. Start-up's objects are frozen out of collections whatever it is
    # (``api.app.freeze_start_up``).
    gc_gen2_threshold: int = Field(default=1_000, ge=1, le=1_000_000)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


class StripeSettings(_Base):
    model_config = SettingsConfigDict(env_prefix="RIDECOOP_STRIPE_", extra="ignore", frozen=True)

    api_key: str = f"sk_test_{PLACEHOLDER_MARKER}-0123456789abcdef"
    webhook_secret: str = f"whsec_{PLACEHOLDER_MARKER}-0123456789abcdef"
    # Tests point this at a loopback fake; production leaves it alone.
    api_base: str = "https://api.stripe.com"
    # Where Stripe sends a driver back after onboarding, and where an expired or used
    # onboarding link sends them to get a fresh one.
    connect_return_url: str = f"https://{PLACEHOLDER_MARKER}.ridecoop.example/connect/return"
    connect_refresh_url: str = f"https://{PLACEHOLDER_MARKER}.ridecoop.example/connect/refresh"
    max_network_retries: int = Field(default=2, ge=0, le=10)
    timeout_s: float = Field(default=10, gt=0, le=80)

    @field_validator("api_key")
    @classmethod
    def _secret_or_restricted_key(cls, value: str) -> str:
        if not value.startswith(("sk_", "rk_")):
            raise ValueError("the Stripe API key is a secret (sk_) or restricted (rk_) key")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_signing_secret(cls, value: str) -> str:
        if not value.startswith("whsec_"):
            raise ValueError("the webhook signing secret starts with whsec_")
        return value

    @field_validator("api_base")
    @classmethod
    def _api_base_without_trailing_slash(cls, value: str) -> str:
        # The SDK appends paths that start with "/".
        return _http_url(value).rstrip("/")

    @field_validator("connect_return_url", "connect_refresh_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        return _http_url(value)

    def placeholders(self) -> list[str]:
        """The names of the variables that still hold a placeholder (empty when configured)."""
        return [
            f"RIDECOOP_STRIPE_{name.upper()}"
            for name in ("api_key", "webhook_secret", "connect_return_url", "connect_refresh_url")
            if PLACEHOLDER_MARKER in getattr(self, name)
        ]


class GovernanceSettings(_Base):
    model_config = SettingsConfigDict(
        env_prefix="RIDECOOP_GOVERNANCE_", extra="ignore", frozen=True
    )

    # The HMAC key of voter tokens (docs/governance.md). Whoever holds it and the record
    # of who voted can tell which ballot is whose: keep it out of the database, and never
    # change it while a vote is open (a member's later ballot would get a new token).
    ballot_secret: str = Field(
        default=f"insecure-ballot-secret-{PLACEHOLDER_MARKER}-0123456789abcdef", min_length=32
    )


class DispatchSettings(_Base):
    model_config = SettingsConfigDict(env_prefix="RIDECOOP_DISPATCH_", extra="ignore", frozen=True)

    # A driver not heard from (position or heartbeat) for this long gets no offers.
    liveness_s: float = Field(default=30.0, gt=0, le=3_600)
    offer_ttl_s: float = Field(default=15.0, gt=0, le=300)
    location_max_age_s: float = Field(default=30.0, gt=0, le=3_600)
    location_max_clock_skew_s: float = Field(default=5.0, ge=0, le=300)
    location_max_speed_mps: float = Field(default=70.0, gt=0, le=1_000)
    # Positions an app kept while offline and uploads later may be this old.
    location_batch_max_age_s: float = Field(default=3_600.0, gt=0, le=7 * 86_400)
    breadcrumb_sample_s: float = Field(default=5.0, ge=0, le=3_600)
    breadcrumb_min_move_m: float = Field(default=30.0, ge=0, le=10_000)
    breadcrumb_flush_s: float = Field(default=2.0, gt=0, le=3_600)
    breadcrumb_flush_max: int = Field(default=1_000, ge=1, le=100_000)
    # A rider is sent their driver's position at most this often.
    tracking_interval_s: float = Field(default=1.0, ge=0, le=60)
    # The matcher (``ridecoop dispatcher``, dispatch/dispatcher.py).
    window_s: float = Field(default=2.0, gt=0, le=60)
    # A region's lease; a dead dispatcher's regions are taken over within it.
    lease_ttl_s: float = Field(default=6.0, gt=0, le=600)
    policy: Literal["batched", "greedy"] = "batched"
    k: int = Field(default=10, ge=1, le=100)
    base_radius_m: float = Field(default=3_000.0, gt=0, le=100_000)
    radius_growth_m_per_s: float = Field(default=25.0, ge=0, le=1_000)
    max_radius_m: float = Field(default=8_000.0, gt=0, le=100_000)
    no_driver_timeout_s: float = Field(default=120.0, gt=0, le=3_600)
    max_requests_per_region: int = Field(default=5_000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _consistent_matching(self) -> Self:
        if self.lease_ttl_s <= self.window_s:
            raise ValueError("RIDECOOP_DISPATCH_LEASE_TTL_S must be longer than a window")
        if self.base_radius_m > self.max_radius_m:
            raise ValueError("RIDECOOP_DISPATCH_BASE_RADIUS_M exceeds MAX_RADIUS_M")
        return self


class Settings(BaseModel):
    """The whole configuration, validated once at start-up."""

    model_config = ConfigDict(frozen=True)

    core: CoreSettings = Field(default_factory=CoreSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    governance: GovernanceSettings = Field(default_factory=GovernanceSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Self:
        if self.core.env is Environment.production:
            if PLACEHOLDER_MARKER in self.auth.jwt_secret:
                raise ValueError(
                    "RIDECOOP_AUTH_JWT_SECRET still holds a placeholder; "
                    "set a random secret of at least 32 characters in production"
                )
            if placeholders := self.stripe.placeholders():
                raise ValueError(f"{', '.join(placeholders)} still hold placeholders")
            if not self.api.metrics_token:
                raise ValueError("RIDECOOP_API_METRICS_TOKEN must be set in production")
            if self.auth.argon2_memory_kib < 19_456 or self.auth.argon2_time_cost < 2:
                raise ValueError(
                    "argon2 costs below OWASP's minimum (19 MiB, 2 passes) in production"
                )
            if PLACEHOLDER_MARKER in self.governance.ballot_secret:
                raise ValueError(
                    "RIDECOOP_GOVERNANCE_BALLOT_SECRET still holds a placeholder; "
                    "set a random secret of at least 32 characters in production"
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

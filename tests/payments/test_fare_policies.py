"""Fare policy versions: stored exactly, chosen by time, guarded by the database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from payments.errors import FarePolicyNotInForce, FarePolicyVersionExists
from payments.policy import FarePolicy
from payments.repository import FarePolicyRepository

SEED_ID = uuid.UUID("00000000-0000-7000-8000-000000000001")
SEED_EFFECTIVE_AT = datetime(2026, 1, 1, tzinfo=UTC)
# Far enough ahead that no other version is in force around it.
LATER = datetime(2031, 6, 1, 8, tzinfo=UTC)


@pytest.fixture
def policies(session: AsyncSession) -> FarePolicyRepository:
    return FarePolicyRepository(session)


def _policy(version: int, effective_at: datetime, **overrides: Any) -> FarePolicy:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "version": version,
        "effective_at": effective_at,
        "currency": "USD",
        "base_fare": 300,
        "per_km": 110,
        "per_minute": 25,
        "booking_fee": 150,
        "minimum_fare": 900,
        "waiting_per_minute": 35,
        "cancellation_fee": 450,
        "no_show_fee": 600,
        "waiting_grace_s": 150,
        "cancellation_grace_s": 90,
        "quote_ttl_s": 240,
        "surge_cap": Decimal("1.75"),
        "commission_rate": Decimal("0.085"),
        "reserve_rate": Decimal("0.015"),
        "deviation_tolerance": Decimal("0.2"),
        "zone_surcharges": {"airport": 350, "stadium": 125},
    }
    fields.update(overrides)
    return FarePolicy(**fields)


async def test_the_seed_policy_is_in_force_after_migrations(
    policies: FarePolicyRepository,
) -> None:
    seed = await policies.policy_in_force(SEED_EFFECTIVE_AT)
    assert seed.id == SEED_ID
    assert seed.version == 1
    assert seed.effective_at == SEED_EFFECTIVE_AT
    assert (seed.currency, seed.base_fare, seed.per_km, seed.per_minute) == ("USD", 250, 120, 30)
    assert (seed.booking_fee, seed.minimum_fare, seed.waiting_per_minute) == (200, 800, 30)
    assert (seed.cancellation_fee, seed.no_show_fee) == (500, 500)
    assert (seed.waiting_grace_s, seed.cancellation_grace_s, seed.quote_ttl_s) == (180, 120, 300)
    assert seed.surge_cap == Decimal("2.0")
    assert (seed.commission_rate, seed.reserve_rate) == (Decimal("0.10"), Decimal("0.02"))
    assert seed.deviation_tolerance == Decimal("0.25")
    assert seed.zone_surcharges == {"airport": 400}


async def test_nothing_is_in_force_before_the_first_version(
    policies: FarePolicyRepository,
) -> None:
    with pytest.raises(FarePolicyNotInForce):
        await policies.policy_in_force(SEED_EFFECTIVE_AT - timedelta(microseconds=1))


async def test_the_policy_in_force_is_the_latest_effective_one(
    policies: FarePolicyRepository,
) -> None:
    second = await policies.add_policy_version(_policy(2, LATER), reason="vote 1")
    third = await policies.add_policy_version(
        _policy(3, LATER + timedelta(days=30)), reason="vote 2"
    )
    assert (await policies.policy_in_force(LATER - timedelta(seconds=1))).version == 1
    assert (await policies.policy_in_force(LATER + timedelta(days=29))).id == second.id
    assert (await policies.policy_in_force(LATER + timedelta(days=365))).id == third.id


async def test_a_new_version_applies_from_its_effective_time_without_caching(
    policies: FarePolicyRepository,
) -> None:
    assert (await policies.policy_in_force(LATER)).version == 1
    await policies.add_policy_version(_policy(2, LATER), reason="passed vote")
    assert (await policies.policy_in_force(LATER - timedelta(microseconds=1))).version == 1
    assert (await policies.policy_in_force(LATER)).version == 2


async def test_a_version_scheduled_out_of_order_still_wins_by_effective_time(
    policies: FarePolicyRepository,
) -> None:
    # An emergency version (3) may take effect before an earlier-voted one (2).
    await policies.add_policy_version(_policy(2, LATER + timedelta(days=10)), reason="vote")
    await policies.add_policy_version(_policy(3, LATER), reason="emergency")
    assert (await policies.policy_in_force(LATER + timedelta(days=1))).version == 3
    assert (await policies.policy_in_force(LATER + timedelta(days=10))).version == 2


async def test_a_policy_round_trips_exactly(policies: FarePolicyRepository) -> None:
    policy = _policy(2, LATER, commission_rate=Decimal("0.123456789"), zone_surcharges={})
    await policies.add_policy_version(policy, reason="exact")
    assert await policies.policy_by_id(policy.id) == policy


async def test_an_unknown_policy_id_finds_nothing(policies: FarePolicyRepository) -> None:
    assert await policies.policy_by_id(uuid.uuid4()) is None


async def test_a_version_number_is_used_once(policies: FarePolicyRepository) -> None:
    await policies.add_policy_version(_policy(2, LATER), reason="first")
    with pytest.raises(FarePolicyVersionExists):
        await policies.add_policy_version(_policy(2, LATER + timedelta(days=1)), reason="again")
    assert (await policies.policy_in_force(LATER + timedelta(days=2))).version == 2


async def test_policy_versions_are_append_only(session: AsyncSession) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text("UPDATE fare_policy_versions SET base_fare_amount = 1"))


def _row(**overrides: object) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "version": 99,
        "effective_at": LATER,
        "currency": "USD",
        "base_fare_amount": 250,
        "per_km_amount": 120,
        "per_minute_amount": 30,
        "booking_fee_amount": 200,
        "minimum_fare_amount": 800,
        "waiting_per_minute_amount": 30,
        "cancellation_fee_amount": 500,
        "no_show_fee_amount": 500,
        "waiting_grace_s": 180,
        "cancellation_grace_s": 120,
        "quote_ttl_s": 300,
        "surge_cap": Decimal(2),
        "commission_rate": Decimal("0.10"),
        "reserve_rate": Decimal("0.02"),
        "deviation_tolerance": Decimal("0.25"),
        "zone_surcharges": '{"airport": 400}',
        "reason": "test",
    } | overrides


async def _insert_row(session: AsyncSession, row: dict[str, object]) -> None:
    names = ", ".join(row)
    values = ", ".join(
        f"CAST(:{name} AS jsonb)" if name == "zone_surcharges" else f":{name}" for name in row
    )
    async with session.begin_nested():
        await session.execute(
            text(f"INSERT INTO fare_policy_versions ({names}) VALUES ({values})"), row
        )


async def test_the_database_accepts_a_valid_row(
    session: AsyncSession, policies: FarePolicyRepository
) -> None:
    await _insert_row(session, _row())
    assert (await policies.policy_in_force(LATER)).version == 99


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("base_fare_amount", -1, "base_fare_amount_non_negative"),
        ("no_show_fee_amount", -1, "no_show_fee_amount_non_negative"),
        ("currency", "XXX", "currency_known"),
        ("version", 0, "version_positive"),
        ("quote_ttl_s", 0, "quote_ttl_positive"),
        ("waiting_grace_s", -1, "waiting_grace_non_negative"),
        ("cancellation_grace_s", -1, "cancellation_grace_non_negative"),
        ("surge_cap", Decimal("0.99"), "surge_cap_at_least_one"),
        ("commission_rate", Decimal("-0.01"), "commission_rate_non_negative"),
        ("reserve_rate", Decimal("-0.01"), "reserve_rate_non_negative"),
        ("commission_rate", Decimal("0.99"), "shares_within_fare"),
        ("deviation_tolerance", Decimal("-0.1"), "deviation_tolerance_non_negative"),
        ("zone_surcharges", '{"airport": -5}', "zone_surcharges_amounts"),
        ("zone_surcharges", '{"airport": 2.5}', "zone_surcharges_amounts"),
        ("zone_surcharges", '{"airport": "400"}', "zone_surcharges_amounts"),
        ("zone_surcharges", "[400]", "zone_surcharges_amounts"),
    ],
)
async def test_the_database_refuses_what_the_policy_refuses(
    session: AsyncSession, column: str, value: object, constraint: str
) -> None:
    with pytest.raises(DBAPIError, match=constraint):
        await _insert_row(session, _row(**{column: value}))

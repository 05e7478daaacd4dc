"""The ledger in PostgreSQL: the database itself refuses what would break the books."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra.clock import FrozenClock
from payments import ledger
from payments.errors import (
    LedgerAccountOverdrawn,
    LedgerIdempotencyConflict,
)
from payments.ledger import AccountKind, LedgerBook, StatementPeriod, TransactionDraft
from payments.ledger_service import LedgerService
from payments.money import Money
from tests.payments.test_ledger import drafts

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
USD = "USD"
# Tests that commit for real use this currency alone, so their cleanup removes exactly
# their own rows.
COMMITTED = "CHF"


def usd(amount: int) -> Money:
    return Money(amount, USD)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def service(session: AsyncSession, clock: FrozenClock) -> LedgerService:
    return LedgerService(session, clock)


def _settlement(ride_id: uuid.UUID, driver_id: uuid.UUID, currency: str = USD) -> TransactionDraft:
    return ledger.ride_settlement(
        ride_id=ride_id,
        driver_id=driver_id,
        charge_id=f"ch_{ride_id.hex[:12]}",
        driver=Money(1_500, currency),
        commission=Money(300, currency),
        reserve=Money(60, currency),
        booking_fee=Money(200, currency),
        pass_through=Money(0, currency),
    )


async def _count(session: AsyncSession, sql: str, **params: object) -> int:
    return int(await session.scalar(text(sql), params) or 0)


# Recording.


async def test_recording_a_settlement_moves_the_balances(service: LedgerService) -> None:
    driver = uuid.uuid4()
    recorded = await service.record(_settlement(uuid.uuid4(), driver))
    assert recorded.created
    assert recorded.recorded_at == NOW
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(1_500)


async def test_an_unused_account_has_a_zero_balance(service: LedgerService) -> None:
    account = ledger.owned_account(AccountKind.tips_payable, uuid.uuid4(), USD)
    assert await service.balance(account) == usd(0)


async def test_recording_twice_makes_one_transaction(
    service: LedgerService, session: AsyncSession
) -> None:
    draft = _settlement(uuid.uuid4(), uuid.uuid4())
    first = await service.record(draft)
    again = await service.record(draft)
    assert not again.created
    assert again.id == first.id
    assert sorted(p.amount for p in again.postings) == sorted(p.amount for p in draft.postings)
    key = draft.idempotency_key
    sql = "SELECT count(*) FROM ledger_transactions WHERE idempotency_key = :key"
    assert await _count(session, sql, key=key) == 1
    payable = next(
        p.account for p in draft.postings if p.account.kind is AccountKind.driver_payable
    )
    assert await service.balance(payable) == usd(1_500)


async def test_the_same_key_with_other_content_is_a_conflict(service: LedgerService) -> None:
    ride, driver = uuid.uuid4(), uuid.uuid4()
    await service.record(_settlement(ride, driver))
    other = ledger.rider_debt(
        ride_id=ride,
        rider_id=uuid.uuid4(),
        driver_id=driver,
        driver=usd(1_500),
        commission=usd(300),
        reserve=usd(60),
        booking_fee=usd(200),
        pass_through=usd(0),
    )
    with pytest.raises(LedgerIdempotencyConflict):
        await service.record(other)
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(1_500)


async def test_an_overdraft_is_refused_and_the_session_stays_usable(
    service: LedgerService,
) -> None:
    driver = uuid.uuid4()
    await service.record(_settlement(uuid.uuid4(), driver))
    too_much = ledger.driver_transfer(transfer_id="tr_big", driver_id=driver, amount=usd(1_501))
    with pytest.raises(LedgerAccountOverdrawn, match="driver_payable"):
        await service.record(too_much)
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(1_500)
    exact = ledger.driver_transfer(transfer_id="tr_exact", driver_id=driver, amount=usd(1_500))
    assert (await service.record(exact)).created
    assert await service.balance(payable) == usd(0)


async def test_balances_list_every_account_of_a_kind(service: LedgerService) -> None:
    drivers = sorted([uuid.uuid4(), uuid.uuid4()], key=str)
    for driver in drivers:
        await service.record(_settlement(uuid.uuid4(), driver))
    listed = {
        b.account.owner_id: b.balance for b in await service.balances(AccountKind.driver_payable)
    }
    assert all(listed[driver] == usd(1_500) for driver in drivers)


async def test_a_statement_shows_the_period_with_its_opening_balance(
    service: LedgerService, clock: FrozenClock
) -> None:
    driver = uuid.uuid4()
    clock.set(NOW - timedelta(days=2))
    await service.record(_settlement(uuid.uuid4(), driver))
    clock.set(NOW)
    await service.record(_settlement(uuid.uuid4(), driver))
    clock.set(NOW + timedelta(hours=1))
    await service.record(
        ledger.driver_transfer(transfer_id="tr_s1", driver_id=driver, amount=usd(2_000))
    )
    clock.set(NOW + timedelta(days=3))
    await service.record(_settlement(uuid.uuid4(), driver))

    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    statement = await service.statement(payable, StatementPeriod(NOW, NOW + timedelta(days=1)))
    assert statement.opening == usd(1_500)
    assert [line.change for line in statement.lines] == [usd(1_500), usd(-2_000)]
    assert [line.balance for line in statement.lines] == [usd(3_000), usd(1_000)]
    assert statement.closing == usd(1_000)
    assert [line.kind.value for line in statement.lines] == ["ride_settlement", "driver_transfer"]


# What the database refuses by itself, whatever the code above it does.


async def _raw_account(session: AsyncSession, kind: AccountKind, currency: str = USD) -> uuid.UUID:
    owner = uuid.uuid4() if ledger.CHART[kind].per_owner else None
    account = ledger.AccountRef(kind, currency, owner)
    await session.execute(
        text(
            "INSERT INTO ledger_accounts (id, code, kind, currency, normal_side, non_negative,"
            " owner_id) VALUES (:id, :code, :kind, :currency, :side, :non_negative, :owner)"
            " ON CONFLICT (code, currency) DO NOTHING"
        ),
        {
            "id": uuid.uuid4(),
            "code": account.code,
            "kind": kind.value,
            "currency": currency,
            "side": account.rule.normal_side.value,
            "non_negative": account.rule.non_negative,
            "owner": owner,
        },
    )
    found = await session.scalar(
        text("SELECT id FROM ledger_accounts WHERE code = :code AND currency = :currency"),
        {"code": account.code, "currency": currency},
    )
    assert isinstance(found, uuid.UUID)
    return found


async def _raw_transaction(
    session: AsyncSession, postings: list[tuple[uuid.UUID, int]]
) -> uuid.UUID:
    transaction_id = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO ledger_transactions (id, idempotency_key, kind, description, fingerprint,"
            " recorded_at) VALUES (:id, :key, 'tip', 'raw', repeat('0', 64), now())"
        ),
        {"id": transaction_id, "key": f"raw:{transaction_id}"},
    )
    for account_id, amount in postings:
        await session.execute(
            text(
                "INSERT INTO ledger_postings (transaction_id, account_id, currency, amount)"
                " SELECT :tx, id, currency, :amount FROM ledger_accounts WHERE id = :account"
            ),
            {"tx": transaction_id, "account": account_id, "amount": amount},
        )
    return transaction_id


@pytest.fixture
async def committing(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions that commit for real; whatever they leave in COMMITTED is removed after."""
    yield async_sessionmaker(engine, expire_on_commit=False)
    async with engine.begin() as connection:
        # The ledger refuses deletes by trigger; replica mode skips user triggers, which
        # only the cleanup of a test may do.
        await connection.execute(text("SET LOCAL session_replication_role = replica"))
        await connection.execute(
            text(
                "DELETE FROM ledger_transactions WHERE id IN (SELECT transaction_id"
                " FROM ledger_postings WHERE currency = :c)"
            ),
            {"c": COMMITTED},
        )
        await connection.execute(
            text("DELETE FROM ledger_postings WHERE currency = :c"), {"c": COMMITTED}
        )
        await connection.execute(
            text("DELETE FROM ledger_accounts WHERE currency = :c"), {"c": COMMITTED}
        )


async def test_an_unbalanced_transaction_is_refused_at_commit(
    committing: async_sessionmaker[AsyncSession],
) -> None:
    async with committing() as session:
        cash = await _raw_account(session, AccountKind.stripe_balance, COMMITTED)
        transaction_id = await _raw_transaction(session, [(cash, 100)])
        # Deferred: the lone posting is accepted until the transaction ends.
        sql = "SELECT count(*) FROM ledger_postings WHERE transaction_id = :t"
        assert await _count(session, sql, t=transaction_id) == 1
        with pytest.raises(DBAPIError, match="does not balance: 100 CHF left over"):
            await session.commit()
    async with committing() as session:
        assert await _count(session, sql, t=transaction_id) == 0


async def test_a_transaction_without_postings_is_refused_at_commit(
    committing: async_sessionmaker[AsyncSession],
) -> None:
    async with committing() as session:
        await _raw_transaction(session, [])
        with pytest.raises(DBAPIError, match="has no postings"):
            await session.commit()


async def test_the_balance_check_fires_when_constraints_turn_immediate(
    session: AsyncSession,
) -> None:
    cash = await _raw_account(session, AccountKind.stripe_balance)
    reserve = await _raw_account(session, AccountKind.reserve)

    async def unbalanced_then_immediate() -> None:
        async with session.begin_nested():
            await _raw_transaction(session, [(cash, 60), (reserve, -100)])
            await session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))

    with pytest.raises(DBAPIError, match="does not balance: -40 USD left over"):
        await unbalanced_then_immediate()


async def test_a_balanced_raw_transaction_passes_the_commit_check(
    committing: async_sessionmaker[AsyncSession],
) -> None:
    async with committing() as session:
        cash = await _raw_account(session, AccountKind.stripe_balance, COMMITTED)
        reserve = await _raw_account(session, AccountKind.reserve, COMMITTED)
        transaction_id = await _raw_transaction(session, [(cash, 100), (reserve, -100)])
        await session.commit()
    async with committing() as session:
        sql = "SELECT count(*) FROM ledger_postings WHERE transaction_id = :t"
        assert await _count(session, sql, t=transaction_id) == 2


async def test_a_non_negative_account_cannot_go_below_zero(session: AsyncSession) -> None:
    cash = await _raw_account(session, AccountKind.stripe_balance)
    payable = await _raw_account(session, AccountKind.driver_payable)
    # Crediting the payable (what the co-op owes) is fine; debiting it past zero is not.
    await _raw_transaction(session, [(cash, 100), (payable, -100)])
    with pytest.raises(DBAPIError, match="may not go negative"):
        async with session.begin_nested():
            await _raw_transaction(session, [(payable, 101), (cash, -101)])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount * 2",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_transactions SET description = 'edited'",
        "DELETE FROM ledger_transactions",
        "DELETE FROM ledger_accounts",
    ],
)
async def test_the_ledger_is_append_only(session: AsyncSession, statement: str) -> None:
    cash = await _raw_account(session, AccountKind.stripe_balance)
    reserve = await _raw_account(session, AccountKind.reserve)
    await _raw_transaction(session, [(cash, 100), (reserve, -100)])
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text(statement))


@pytest.mark.parametrize("table", ["ledger_accounts", "ledger_transactions", "ledger_postings"])
async def test_the_ledger_cannot_be_truncated(session: AsyncSession, table: str) -> None:
    # Nothing inserted first: PostgreSQL refuses to truncate a table with pending
    # deferred checks anyway, which would hide the trigger.
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text(f"TRUNCATE {table} CASCADE"))


async def test_a_cached_balance_cannot_be_edited(session: AsyncSession) -> None:
    await _raw_account(session, AccountKind.reserve)
    with pytest.raises(DBAPIError, match="change only through postings"):
        async with session.begin_nested():
            await session.execute(text("UPDATE ledger_accounts SET balance_amount = 1"))


async def test_a_posting_takes_its_accounts_currency(session: AsyncSession) -> None:
    cash = await _raw_account(session, AccountKind.stripe_balance)
    transaction_id = await _raw_transaction(session, [])
    with pytest.raises(DBAPIError, match="fk_ledger_postings_account_id_ledger_accounts"):
        async with session.begin_nested():
            await session.execute(
                text(
                    "INSERT INTO ledger_postings (transaction_id, account_id, currency, amount)"
                    " VALUES (:t, :a, 'EUR', 100)"
                ),
                {"t": transaction_id, "a": cash},
            )


async def test_an_account_follows_the_chart(session: AsyncSession) -> None:
    owner = uuid.uuid4()
    with pytest.raises(DBAPIError, match="kind_follows_chart"):
        async with session.begin_nested():
            await session.execute(
                text(
                    "INSERT INTO ledger_accounts (id, code, kind, currency, normal_side,"
                    " non_negative, owner_id) VALUES (gen_random_uuid(), :code,"
                    " 'driver_payable', 'USD', 'credit', false, :owner)"
                ),
                # A driver's payable that may go negative: the chart says it may not.
                {"code": f"driver_payable:{owner}", "owner": owner},
            )


# Races between real transactions.


async def test_concurrent_records_of_one_key_make_one_transaction(
    committing: async_sessionmaker[AsyncSession],
) -> None:
    draft = _settlement(uuid.uuid4(), uuid.uuid4(), COMMITTED)

    async def record() -> tuple[uuid.UUID, bool]:
        async with committing() as session:
            recorded = await LedgerService(session, FrozenClock(NOW)).record(draft)
            await session.commit()
            return recorded.id, recorded.created

    outcomes = await asyncio.gather(*(record() for _ in range(5)))
    assert len({transaction_id for transaction_id, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False] * 4 + [True]
    async with committing() as session:
        sql = "SELECT count(*) FROM ledger_transactions WHERE idempotency_key = :key"
        assert await _count(session, sql, key=draft.idempotency_key) == 1


async def test_a_second_recorder_waits_for_the_first_and_gets_its_transaction(
    committing: async_sessionmaker[AsyncSession],
) -> None:
    draft = _settlement(uuid.uuid4(), uuid.uuid4(), COMMITTED)
    async with committing() as first, committing() as second:
        mine = await LedgerService(first, FrozenClock(NOW)).record(draft)
        theirs = asyncio.create_task(LedgerService(second, FrozenClock(NOW)).record(draft))
        await asyncio.sleep(0.3)
        # Blocked on the unique key until the first transaction ends.
        assert not theirs.done()
        await first.commit()
        replay = await asyncio.wait_for(theirs, timeout=10)
        await second.commit()
    assert replay.id == mine.id
    assert not replay.created


# Verification.


async def test_verify_passes_a_sound_ledger(service: LedgerService) -> None:
    await service.record(_settlement(uuid.uuid4(), uuid.uuid4()))
    verification = await service.verify()
    assert verification.ok, verification
    assert verification.postings >= 5
    assert verification.totals[USD] == 0


async def test_verify_finds_a_corrupted_cached_balance(
    service: LedgerService, session: AsyncSession
) -> None:
    driver = uuid.uuid4()
    await service.record(_settlement(uuid.uuid4(), driver))
    code = f"driver_payable:{driver}"
    async with session.begin_nested():
        # Skips the trigger that guards balances, as only a bug or an intruder could.
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        await session.execute(
            text("UPDATE ledger_accounts SET balance_amount = -1400 WHERE code = :code"),
            {"code": code},
        )
        await session.execute(text("SET LOCAL session_replication_role = origin"))
    verification = await service.verify()
    assert not verification.ok
    [mismatch] = verification.mismatched_balances
    assert (mismatch.code, mismatch.cached, mismatch.computed) == (code, -1_400, -1_500)


async def test_verify_finds_unbalanced_and_empty_transactions(
    service: LedgerService, session: AsyncSession
) -> None:
    # Inside the test's transaction the commit-time check never runs: verify must see it.
    cash = await _raw_account(session, AccountKind.stripe_balance)
    reserve = await _raw_account(session, AccountKind.reserve)
    unbalanced = await _raw_transaction(session, [(cash, 100), (reserve, -90)])
    empty = await _raw_transaction(session, [])
    verification = await service.verify()
    assert not verification.ok
    assert [(u.transaction_id, u.imbalance) for u in verification.unbalanced] == [(unbalanced, 10)]
    assert verification.empty_transactions == (empty,)
    assert verification.totals[USD] == 10


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sequence=st.lists(drafts(), min_size=1, max_size=25))
async def test_random_sequences_keep_balances_equal_to_postings(
    session: AsyncSession, sequence: list[TransactionDraft]
) -> None:
    service = LedgerService(session, FrozenClock(NOW))
    model = LedgerBook()
    savepoint = await session.begin_nested()
    try:
        for draft in sequence:
            try:
                expected = model.record(draft)
            except (LedgerAccountOverdrawn, LedgerIdempotencyConflict) as refusal:
                with pytest.raises(type(refusal)):
                    await service.record(draft)
                continue
            recorded = await service.record(draft)
            assert recorded.created == (expected is not model)
            model = expected
        for account in model.balances:
            assert await service.balance(account) == model.balance(account)
        verification = await service.verify()
        assert verification.ok, verification
        assert all(total == 0 for total in verification.totals.values())
    finally:
        await savepoint.rollback()


# Recording many drafts at once (what batch settlement uses).


async def test_many_drafts_are_recorded_in_one_go_in_their_order(
    service: LedgerService, session: AsyncSession
) -> None:
    driver = uuid.uuid4()
    settlements = [_settlement(uuid.uuid4(), driver) for _ in range(5)]
    recorded = await service.record_many(settlements)
    assert [r.idempotency_key for r in recorded] == [d.idempotency_key for d in settlements]
    assert all(r.created for r in recorded)
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(7_500)
    assert (await service.verify()).ok


async def test_many_drafts_with_replays_and_repeats_record_each_key_once(
    service: LedgerService, session: AsyncSession
) -> None:
    driver = uuid.uuid4()
    old, new = _settlement(uuid.uuid4(), driver), _settlement(uuid.uuid4(), driver)
    first = await service.record(old)
    recorded = await service.record_many([old, new, new])
    assert [r.created for r in recorded] == [False, True, False]
    assert recorded[0].id == first.id
    assert sorted(p.amount for p in recorded[0].postings) == sorted(p.amount for p in old.postings)
    assert recorded[1].id == recorded[2].id
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(3_000)


async def test_a_conflict_in_many_drafts_records_none_of_them(service: LedgerService) -> None:
    ride, driver = uuid.uuid4(), uuid.uuid4()
    await service.record(_settlement(ride, driver))
    other_content = ledger.driver_transfer(transfer_id="tr_a", driver_id=driver, amount=usd(100))
    reused = TransactionDraft(
        idempotency_key=_settlement(ride, driver).idempotency_key,
        kind=other_content.kind,
        description="another transaction under a taken key",
        postings=other_content.postings,
    )
    with pytest.raises(LedgerIdempotencyConflict):
        await service.record_many([other_content, reused])
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(1_500)
    assert not await service.has(other_content.idempotency_key)


async def test_one_key_asked_twice_with_different_content_in_one_go_is_a_conflict(
    service: LedgerService,
) -> None:
    driver = uuid.uuid4()
    await service.record(_settlement(uuid.uuid4(), driver))
    small = ledger.driver_transfer(transfer_id="tr_same", driver_id=driver, amount=usd(100))
    large = ledger.driver_transfer(transfer_id="tr_same", driver_id=driver, amount=usd(200))
    with pytest.raises(LedgerIdempotencyConflict):
        await service.record_many([small, large])
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(1_500)


async def test_an_overdraft_in_many_drafts_records_none_of_them(service: LedgerService) -> None:
    driver = uuid.uuid4()
    await service.record(_settlement(uuid.uuid4(), driver))
    fine = ledger.driver_transfer(transfer_id="tr_1", driver_id=driver, amount=usd(1_000))
    over = ledger.driver_transfer(transfer_id="tr_2", driver_id=driver, amount=usd(501))
    with pytest.raises(LedgerAccountOverdrawn, match="driver_payable"):
        await service.record_many([fine, over])
    payable = ledger.owned_account(AccountKind.driver_payable, driver, USD)
    assert await service.balance(payable) == usd(1_500)
    assert not await service.has(fine.idempotency_key)
    # The session is still usable, and what fits is recorded.
    assert [r.created for r in await service.record_many([fine])] == [True]
    assert await service.balance(payable) == usd(500)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(chunks=st.lists(st.lists(drafts(), min_size=1, max_size=6), min_size=1, max_size=6))
async def test_random_batches_keep_the_books_as_the_model_says(
    session: AsyncSession, chunks: list[list[TransactionDraft]]
) -> None:
    """Each batch is recorded or refused as a whole exactly as the pure book's
    ``record_many`` says; balances always equal postings and the model's."""
    service = LedgerService(session, FrozenClock(NOW))
    model = LedgerBook()
    savepoint = await session.begin_nested()
    try:
        for chunk in chunks:
            try:
                expected = model.record_many(chunk)
            except (LedgerAccountOverdrawn, LedgerIdempotencyConflict) as refusal:
                with pytest.raises(type(refusal)):
                    await service.record_many(chunk)
                continue
            await service.record_many(chunk)
            model = expected
        for account in model.balances:
            assert await service.balance(account) == model.balance(account)
        verification = await service.verify()
        assert verification.ok, verification
        assert all(total == 0 for total in verification.totals.values())
    finally:
        await savepoint.rollback()


@pytest.mark.parametrize(
    "function",
    [
        "ledger_check_postings_balance",
        "ledger_check_transaction_has_postings",
        "ledger_apply_postings",
    ],
)
async def test_the_ledger_triggers_look_postings_up_by_index_whatever_the_tables_size(
    session: AsyncSession, function: str
) -> None:
    # A plan cached while the ledger was empty would scan every posting per posting.
    config = await session.scalar(
        text("SELECT proconfig FROM pg_proc WHERE proname = :name"), {"name": function}
    )
    assert config is not None
    assert "enable_seqscan=off" in config

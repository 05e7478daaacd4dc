"""The ledger's pure core: every builder balances, validation refuses what the database
would, and replaying drafts changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments import ledger
from payments.errors import (
    DividendCashShareTooLow,
    LedgerAccountOverdrawn,
    LedgerDraftInvalid,
    LedgerIdempotencyConflict,
)
from payments.ledger import (
    AccountKind,
    AccountRef,
    Clawback,
    LedgerBook,
    Posting,
    StatementEntry,
    StatementPeriod,
    TransactionDraft,
    TransactionKind,
)
from payments.money import Money

# Small pools of people and provider ids, so random transactions meet on the same
# accounts and keys: overdrafts, replays and key conflicts all happen.
DRIVERS = [uuid.UUID(int=0xD1), uuid.UUID(int=0xD2), uuid.UUID(int=0xD3)]
RIDERS = [uuid.UUID(int=0xA1), uuid.UUID(int=0xA2)]
MEMBERS = [uuid.UUID(int=0xC1), uuid.UUID(int=0xC2)]
RIDES = [uuid.UUID(int=0xB0 + i) for i in range(6)]
PROVIDER_IDS = [f"obj_{i}" for i in range(8)]

USD = "USD"


def usd(amount: int) -> Money:
    return Money(amount, USD)


# What st.composite and st.data() both offer: draw a value from a strategy.
Draw = Callable[[st.SearchStrategy[Any]], Any]


def _ride_shares(draw: Draw, currency: str) -> dict[str, Money]:
    # The driver always earns something, so the fare is never zero.
    names = ("commission", "reserve", "booking_fee", "pass_through")
    return {
        "driver": Money(draw(st.integers(1, 20_000)), currency),
        **{name: Money(draw(st.integers(0, 5_000)), currency) for name in names},
    }


def _draw_args(builder: str, draw: Draw, currency: str) -> dict[str, Any]:
    def money(low: int = 1, high: int = 20_000) -> Money:
        return Money(draw(st.integers(low, high)), currency)

    def pick(pool: list[Any]) -> Any:
        return draw(st.sampled_from(pool))

    match builder:
        case "ride_settlement":
            return {
                "ride_id": pick(RIDES),
                "driver_id": pick(DRIVERS),
                "charge_id": pick(PROVIDER_IDS),
                **_ride_shares(draw, currency),
            }
        case "rider_debt":
            return {
                "ride_id": pick(RIDES),
                "rider_id": pick(RIDERS),
                "driver_id": pick(DRIVERS),
                **_ride_shares(draw, currency),
            }
        case "rider_debt_payment":
            return {"rider_id": pick(RIDERS), "charge_id": pick(PROVIDER_IDS), "amount": money()}
        case "stripe_fee":
            return {"charge_id": pick(PROVIDER_IDS), "fee": money(1, 900)}
        case "driver_transfer" | "tip_transfer":
            return {
                "transfer_id": pick(PROVIDER_IDS),
                "driver_id": pick(DRIVERS),
                "amount": money(),
            }
        case "tip":
            return {
                "charge_id": pick(PROVIDER_IDS),
                "ride_id": pick(RIDES),
                "driver_id": pick(DRIVERS),
                "amount": money(),
            }
        case "refund":
            amount = money()
            driver_share = money(0, amount.amount)
            return {
                "refund_id": pick(PROVIDER_IDS),
                "ride_id": pick(RIDES),
                "driver_id": pick(DRIVERS),
                "amount": amount,
                "driver_share": driver_share,
                "pass_through_share": money(0, amount.amount - driver_share.amount),
                "clawback": draw(st.sampled_from(Clawback)),
            }
        case "dispute_opened":
            return {
                "dispute_id": pick(PROVIDER_IDS),
                "charge_id": pick(PROVIDER_IDS),
                "amount": money(),
                "fee": money(0, 1_500),
            }
        case "dispute_closed":
            won = draw(st.booleans())
            return {
                "dispute_id": pick(PROVIDER_IDS),
                "amount": money(),
                "won": won,
                "fee_returned": money(0, 1_500) if won else Money(0, currency),
            }
        case "cancellation_fee":
            driver_id = draw(st.none() | st.sampled_from(DRIVERS))
            return {
                "ride_id": pick(RIDES),
                "charge_id": pick(PROVIDER_IDS),
                "driver_id": driver_id,
                "driver_share": Money(0, currency) if driver_id is None else money(0),
                "coop_share": money(),
                "no_show": draw(st.booleans()),
            }
        case "platform_payout":
            return {"payout_id": pick(PROVIDER_IDS), "amount": money()}
        case "pass_through_remittance":
            return {"remittance_id": pick(PROVIDER_IDS), "amount": money()}
        case "driver_debt_offset":
            return {"offset_id": pick(PROVIDER_IDS), "driver_id": pick(DRIVERS), "amount": money()}
        case "dividend_allocation":
            total = draw(st.integers(1, 50_000))
            cash = draw(st.integers(-(-total // 5), total))
            return {
                "year": draw(st.sampled_from([2026, 2027])),
                "member_id": pick(MEMBERS),
                "cash": Money(cash, currency),
                "capital": Money(total - cash, currency),
            }
        case "dividend_payment":
            return {"payment_id": pick(PROVIDER_IDS), "member_id": pick(MEMBERS), "amount": money()}
    raise AssertionError(f"no strategy for {builder}")


BUILDERS = [
    "ride_settlement",
    "rider_debt",
    "rider_debt_payment",
    "stripe_fee",
    "driver_transfer",
    "tip",
    "tip_transfer",
    "refund",
    "dispute_opened",
    "dispute_closed",
    "cancellation_fee",
    "platform_payout",
    "pass_through_remittance",
    "driver_debt_offset",
    "dividend_allocation",
    "dividend_payment",
]


@st.composite
def drafts_of(draw: st.DrawFn, builder: str, currency: str | None = None) -> TransactionDraft:
    chosen = currency or draw(st.sampled_from([USD, "EUR"]))
    make: Callable[..., TransactionDraft] = getattr(ledger, builder)
    return make(**_draw_args(builder, draw, chosen))


def drafts(currency: str | None = None) -> st.SearchStrategy[TransactionDraft]:
    """Any builder's draft, from small pools of ids so that drafts interact."""
    return st.sampled_from(BUILDERS).flatmap(lambda builder: drafts_of(builder, currency))


def record_or_skip(book: LedgerBook, draft: TransactionDraft) -> LedgerBook:
    """The book with ``draft`` recorded, or unchanged if the rules refuse it."""
    try:
        return book.record(draft)
    except (LedgerAccountOverdrawn, LedgerIdempotencyConflict):
        return book


# Every builder.


def test_every_builder_is_exercised() -> None:
    builders = {
        name
        for name, value in vars(ledger).items()
        if callable(value)
        and not name.startswith("_")
        and getattr(value, "__annotations__", {}).get("return") == "TransactionDraft"
    }
    assert builders == set(BUILDERS)


@pytest.mark.parametrize("builder", BUILDERS)
@given(data=st.data())
def test_every_builder_balances_in_one_currency(builder: str, data: st.DataObject) -> None:
    draft = data.draw(drafts_of(builder))
    assert len(draft.postings) >= 2
    assert len({p.currency for p in draft.postings}) == 1
    assert sum(p.amount for p in draft.postings) == 0
    assert all(p.amount != 0 for p in draft.postings)


@pytest.mark.parametrize("builder", BUILDERS)
@given(data=st.data())
def test_every_builder_derives_its_key_from_its_inputs(builder: str, data: st.DataObject) -> None:
    args = _draw_args(builder, data.draw, USD)
    make: Callable[..., TransactionDraft] = getattr(ledger, builder)
    first, again = make(**args), make(**args)
    assert first.idempotency_key == again.idempotency_key
    assert first.fingerprint() == again.fingerprint()
    assert first.idempotency_key.endswith(":v1")


# Validation.


def _account(kind: AccountKind = AccountKind.stripe_balance, currency: str = USD) -> AccountRef:
    per_owner = ledger.CHART[kind].per_owner
    return AccountRef(kind, currency, DRIVERS[0] if per_owner else None)


def _draft(*postings: Posting, key: str = "test:1:v1") -> TransactionDraft:
    return TransactionDraft(key, TransactionKind.tip, "a test", tuple(postings))


def test_a_balanced_draft_is_accepted() -> None:
    draft = _draft(Posting(_account(), 500), Posting(_account(AccountKind.tips_payable), -500))
    assert draft.currency == USD


@pytest.mark.parametrize(
    ("postings", "reason"),
    [
        ((), "at least two postings"),
        ((Posting(_account(), 0), Posting(_account(AccountKind.reserve), 0)), "zero"),
        ((Posting(_account(), 100), Posting(_account(AccountKind.reserve), -99)), "sum to 1"),
        (
            (Posting(_account(), 100), Posting(_account(AccountKind.reserve, "EUR"), -100)),
            "one currency",
        ),
        ((Posting(_account(), 100),), "at least two postings"),
    ],
    ids=["empty", "zero", "unbalanced", "mixed-currency", "single"],
)
def test_validation_refuses(postings: tuple[Posting, ...], reason: str) -> None:
    with pytest.raises(LedgerDraftInvalid, match=reason):
        _draft(*postings)


@pytest.mark.parametrize("key", ["", "has space", "x" * 201])
def test_validation_refuses_bad_keys(key: str) -> None:
    postings = (Posting(_account(), 1), Posting(_account(AccountKind.reserve), -1))
    with pytest.raises(LedgerDraftInvalid, match="idempotency keys"):
        _draft(*postings, key=key)


@pytest.mark.parametrize("amount", [1.5, True, "100"])
def test_a_posting_is_integer_minor_units(amount: Any) -> None:
    with pytest.raises(LedgerDraftInvalid, match="int minor units"):
        Posting(_account(), amount)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([AccountKind.stripe_balance, AccountKind.reserve, AccountKind.bank]),
            st.sampled_from([USD, "EUR"]),
            st.integers(-1_000, 1_000),
        ),
        max_size=6,
    )
)
def test_validation_accepts_exactly_the_balanced_single_currency_drafts(
    lines: list[tuple[AccountKind, str, int]],
) -> None:
    postings = tuple(
        Posting(AccountRef(kind, currency), amount) for kind, currency, amount in lines
    )
    valid = (
        len(postings) >= 2
        and all(p.amount != 0 for p in postings)
        and len({p.currency for p in postings}) == 1
        and sum(p.amount for p in postings) == 0
    )
    try:
        _draft(*postings)
    except LedgerDraftInvalid:
        assert not valid
    else:
        assert valid


def test_a_per_owner_account_needs_its_owner() -> None:
    with pytest.raises(LedgerDraftInvalid, match="needs owner"):
        AccountRef(AccountKind.driver_payable, USD)
    with pytest.raises(LedgerDraftInvalid, match="takes no owner"):
        AccountRef(AccountKind.reserve, USD, DRIVERS[0])


def test_account_codes_name_kind_and_owner() -> None:
    assert ledger.stripe_balance(USD).code == "stripe_balance"
    driver = ledger.owned_account(AccountKind.driver_payable, DRIVERS[0], USD)
    assert driver.code == f"driver_payable:{DRIVERS[0]}"


def test_a_posting_in_another_currency_than_its_account_is_refused() -> None:
    with pytest.raises(LedgerDraftInvalid, match="posted to a USD account"):
        ledger.debit(ledger.stripe_balance(USD), Money(100, "EUR"))


def test_provider_ids_cannot_make_keys_ambiguous() -> None:
    with pytest.raises(LedgerDraftInvalid, match="without ':'"):
        ledger.stripe_fee(charge_id="ch_1:stripe_fee", fee=usd(30))


def test_the_fingerprint_ignores_posting_order_and_wording() -> None:
    a, b = _account(), _account(AccountKind.reserve)
    first = _draft(Posting(a, 5), Posting(b, -5))
    reordered = TransactionDraft(
        first.idempotency_key, first.kind, "other words", (Posting(b, -5), Posting(a, 5))
    )
    assert first.fingerprint() == reordered.fingerprint()
    assert first.fingerprint() != _draft(Posting(a, 6), Posting(b, -6)).fingerprint()


# Builders, one behaviour each.


def _by_code(draft: TransactionDraft) -> dict[str, int]:
    totals: dict[str, int] = {}
    for posting in draft.postings:
        totals[posting.account.code] = totals.get(posting.account.code, 0) + posting.amount
    return totals


def _settlement_shares() -> dict[str, Any]:
    return {
        "driver": usd(1_500),
        "commission": usd(300),
        "reserve": usd(60),
        "booking_fee": usd(200),
        "pass_through": usd(400),
    }


def test_a_settlement_owes_each_share_to_its_account() -> None:
    ride, driver = RIDES[0], DRIVERS[0]
    draft = ledger.ride_settlement(
        ride_id=ride, driver_id=driver, charge_id="ch_1", **_settlement_shares()
    )
    assert draft.idempotency_key == f"ride:{ride}:settlement:v1"
    assert _by_code(draft) == {
        "stripe_balance": 2_460,
        f"driver_payable:{driver}": -1_500,
        "coop_commission_revenue": -300,
        "reserve": -60,
        "booking_fee_revenue": -200,
        "pass_through_payable": -400,
    }


def test_a_settlement_leaves_out_zero_shares() -> None:
    shares = _settlement_shares() | {"pass_through": usd(0), "reserve": usd(0)}
    draft = ledger.ride_settlement(
        ride_id=RIDES[0], driver_id=DRIVERS[0], charge_id="ch_1", **shares
    )
    assert "pass_through_payable" not in _by_code(draft)
    assert "reserve" not in _by_code(draft)


def test_a_settlement_refuses_a_negative_share() -> None:
    shares = _settlement_shares() | {"reserve": usd(-1)}
    with pytest.raises(LedgerDraftInvalid, match="reserve must not be negative"):
        ledger.ride_settlement(ride_id=RIDES[0], driver_id=DRIVERS[0], charge_id="c", **shares)


def test_a_settlement_refuses_mixed_currencies() -> None:
    shares = _settlement_shares() | {"reserve": Money(60, "EUR")}
    with pytest.raises(LedgerDraftInvalid, match="do not mix"):
        ledger.ride_settlement(ride_id=RIDES[0], driver_id=DRIVERS[0], charge_id="c", **shares)


def test_a_rider_debt_recognises_the_fare_under_the_settlement_key() -> None:
    ride, rider = RIDES[1], RIDERS[0]
    debt = ledger.rider_debt(
        ride_id=ride, rider_id=rider, driver_id=DRIVERS[0], **_settlement_shares()
    )
    settled = ledger.ride_settlement(
        ride_id=ride, driver_id=DRIVERS[0], charge_id="ch_2", **_settlement_shares()
    )
    assert debt.idempotency_key == settled.idempotency_key
    assert _by_code(debt)[f"rider_receivable:{rider}"] == 2_460
    # Recognising a ride's fare twice, once as debt and once captured, is a conflict.
    book = LedgerBook().record(debt)
    with pytest.raises(LedgerIdempotencyConflict):
        book.record(settled)


@pytest.mark.parametrize(
    ("clawback", "expected"),
    [
        (Clawback.none, {"stripe_balance": -1_000, "refunds": 900, "pass_through_payable": 100}),
        (
            Clawback.from_payable,
            {
                "stripe_balance": -1_000,
                "refunds": 300,
                "pass_through_payable": 100,
                f"driver_payable:{DRIVERS[0]}": 600,
            },
        ),
        (
            Clawback.reverse_transfer,
            {"stripe_balance": -400, "refunds": 300, "pass_through_payable": 100},
        ),
        (
            Clawback.receivable,
            {
                "stripe_balance": -1_000,
                "refunds": 300,
                "pass_through_payable": 100,
                f"driver_receivable:{DRIVERS[0]}": 600,
            },
        ),
    ],
)
def test_a_refund_claws_back_the_driver_share_by_policy(
    clawback: Clawback, expected: dict[str, int]
) -> None:
    draft = ledger.refund(
        refund_id="re_1",
        ride_id=RIDES[0],
        driver_id=DRIVERS[0],
        amount=usd(1_000),
        driver_share=usd(600),
        pass_through_share=usd(100),
        clawback=clawback,
    )
    assert _by_code(draft) == expected


def test_a_refund_refuses_shares_larger_than_itself() -> None:
    with pytest.raises(LedgerDraftInvalid, match="exceed the refund"):
        ledger.refund(
            refund_id="re_1",
            ride_id=RIDES[0],
            driver_id=DRIVERS[0],
            amount=usd(1_000),
            driver_share=usd(900),
            pass_through_share=usd(101),
            clawback=Clawback.receivable,
        )


def test_a_won_dispute_reinstates_what_it_withheld() -> None:
    book = LedgerBook()
    for draft in (
        ledger.dispute_opened(
            dispute_id="dp_1", charge_id="ch_1", amount=usd(2_000), fee=usd(1_500)
        ),
        ledger.dispute_closed(
            dispute_id="dp_1", amount=usd(2_000), won=True, fee_returned=usd(1_500)
        ),
    ):
        book = book.record(draft)
    assert book.balance(ledger.shared_account(AccountKind.disputes, USD)) == usd(0)
    assert book.balance(ledger.stripe_balance(USD)) == usd(0)
    assert book.balance(ledger.shared_account(AccountKind.stripe_fees, USD)) == usd(0)


def test_a_lost_dispute_is_written_off() -> None:
    book = LedgerBook()
    for draft in (
        ledger.dispute_opened(dispute_id="dp_1", charge_id="ch_1", amount=usd(2_000), fee=usd(0)),
        ledger.dispute_closed(dispute_id="dp_1", amount=usd(2_000), won=False, fee_returned=usd(0)),
    ):
        book = book.record(draft)
    assert book.balance(ledger.shared_account(AccountKind.dispute_losses, USD)) == usd(2_000)
    assert book.balance(ledger.shared_account(AccountKind.disputes, USD)) == usd(0)


def test_a_lost_dispute_returns_no_fee() -> None:
    with pytest.raises(LedgerDraftInvalid, match="no dispute fee"):
        ledger.dispute_closed(dispute_id="dp_1", amount=usd(1), won=False, fee_returned=usd(1))


def test_closing_more_than_a_dispute_withheld_overdraws_the_disputes_account() -> None:
    with pytest.raises(LedgerAccountOverdrawn, match="disputes"):
        LedgerBook().record(
            ledger.dispute_closed(dispute_id="dp_9", amount=usd(5), won=True, fee_returned=usd(0))
        )


def test_a_cancellation_fee_before_a_driver_is_all_the_coops() -> None:
    draft = ledger.cancellation_fee(
        ride_id=RIDES[0],
        charge_id="ch_1",
        driver_id=None,
        driver_share=usd(0),
        coop_share=usd(500),
        no_show=False,
    )
    assert draft.kind is TransactionKind.cancellation_fee
    assert _by_code(draft) == {"stripe_balance": 500, "cancellation_fee_revenue": -500}


def test_a_no_show_fee_pays_the_driver_their_share() -> None:
    draft = ledger.cancellation_fee(
        ride_id=RIDES[0],
        charge_id="ch_1",
        driver_id=DRIVERS[1],
        driver_share=usd(400),
        coop_share=usd(100),
        no_show=True,
    )
    assert draft.kind is TransactionKind.no_show_fee
    assert _by_code(draft)[f"driver_payable:{DRIVERS[1]}"] == -400


def test_a_driver_share_of_a_fee_needs_a_driver() -> None:
    with pytest.raises(LedgerDraftInvalid, match="needs a driver"):
        ledger.cancellation_fee(
            ride_id=RIDES[0],
            charge_id="ch_1",
            driver_id=None,
            driver_share=usd(1),
            coop_share=usd(1),
            no_show=False,
        )


def test_a_dividend_splits_into_cash_payable_and_capital() -> None:
    member = MEMBERS[0]
    draft = ledger.dividend_allocation(year=2026, member_id=member, cash=usd(200), capital=usd(800))
    assert _by_code(draft) == {
        "patronage_dividends": 1_000,
        f"dividends_payable:{member}": -200,
        f"member_capital:{member}": -800,
    }


def test_a_dividend_pays_at_least_a_fifth_in_cash() -> None:
    with pytest.raises(DividendCashShareTooLow):
        ledger.dividend_allocation(year=2026, member_id=MEMBERS[0], cash=usd(199), capital=usd(801))


def test_a_driver_transfer_cannot_exceed_what_is_owed() -> None:
    book = LedgerBook().record(
        ledger.tip(charge_id="ch_1", ride_id=RIDES[0], driver_id=DRIVERS[0], amount=usd(300))
    )
    with pytest.raises(LedgerAccountOverdrawn, match="tips_payable"):
        book.record(ledger.tip_transfer(transfer_id="tr_1", driver_id=DRIVERS[0], amount=usd(301)))
    paid = book.record(
        ledger.tip_transfer(transfer_id="tr_1", driver_id=DRIVERS[0], amount=usd(300))
    )
    assert paid.balance(ledger.owned_account(AccountKind.tips_payable, DRIVERS[0], USD)) == usd(0)


def test_a_driver_debt_is_offset_against_earnings() -> None:
    driver = DRIVERS[2]
    book = LedgerBook()
    for draft in (
        ledger.ride_settlement(
            ride_id=RIDES[0], driver_id=driver, charge_id="ch_1", **_settlement_shares()
        ),
        ledger.refund(
            refund_id="re_1",
            ride_id=RIDES[3],
            driver_id=driver,
            amount=usd(500),
            driver_share=usd(500),
            pass_through_share=usd(0),
            clawback=Clawback.receivable,
        ),
        ledger.driver_debt_offset(offset_id="off_1", driver_id=driver, amount=usd(500)),
    ):
        book = book.record(draft)
    assert book.balance(ledger.owned_account(AccountKind.driver_receivable, driver, USD)) == usd(0)
    assert book.balance(ledger.owned_account(AccountKind.driver_payable, driver, USD)) == usd(1_000)


# Replays.


@given(st.lists(drafts(), max_size=30))
def test_replaying_the_same_drafts_changes_nothing(sequence: list[TransactionDraft]) -> None:
    book = LedgerBook()
    for draft in sequence:
        book = record_or_skip(book, draft)
    recorded = [d for d in sequence if book.fingerprints.get(d.idempotency_key) == d.fingerprint()]
    for draft in recorded:
        assert book.record(draft) is book
    assert len(book.fingerprints) == len({d.idempotency_key for d in recorded})


@given(st.lists(drafts(), max_size=30))
def test_any_sequence_keeps_every_currency_at_zero(sequence: list[TransactionDraft]) -> None:
    book = LedgerBook()
    for draft in sequence:
        book = record_or_skip(book, draft)
    assert all(total == 0 for total in book.totals().values())
    for account, signed in book.balances.items():
        if account.rule.non_negative:
            assert account.normal(signed).amount >= 0


def test_the_same_key_with_other_postings_is_a_conflict() -> None:
    book = LedgerBook().record(ledger.stripe_fee(charge_id="ch_1", fee=usd(30)))
    with pytest.raises(LedgerIdempotencyConflict):
        book.record(ledger.stripe_fee(charge_id="ch_1", fee=usd(31)))


# Statements.


def test_a_statement_runs_its_balance_from_the_opening() -> None:
    account = ledger.owned_account(AccountKind.driver_payable, DRIVERS[0], USD)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    period = StatementPeriod(start, start + timedelta(days=31))

    def entry(minutes: int, amount: int) -> StatementEntry:
        return StatementEntry(
            uuid.uuid4(), start + timedelta(minutes=minutes), TransactionKind.tip, "t", None, amount
        )

    statement = ledger.build_statement(account, period, -1_000, [entry(1, -500), entry(2, 300)])
    assert statement.opening == usd(1_000)
    assert [line.change for line in statement.lines] == [usd(500), usd(-300)]
    assert [line.balance for line in statement.lines] == [usd(1_500), usd(1_200)]
    assert statement.closing == usd(1_200)


def test_a_statement_period_is_aware_and_ordered() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(LedgerDraftInvalid, match="starts before it ends"):
        StatementPeriod(start, start)
    with pytest.raises(LedgerDraftInvalid, match="timezone-aware"):
        StatementPeriod(start.replace(tzinfo=None), start + timedelta(days=1))


def test_a_settlement_with_an_unpaid_part_leaves_the_rider_owing_it() -> None:
    rider_id, driver_id, ride_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    draft = ledger.ride_settlement(
        ride_id=ride_id,
        driver_id=driver_id,
        charge_id="ch_1",
        driver=usd(800),
        commission=usd(100),
        reserve=usd(20),
        booking_fee=usd(200),
        pass_through=usd(0),
        rider_id=rider_id,
        unpaid=usd(120),
    )
    book = ledger.LedgerBook().record(draft)
    assert book.balance(ledger.stripe_balance("USD")) == usd(1000)
    owed = ledger.owned_account(ledger.AccountKind.rider_receivable, rider_id, "USD")
    assert book.balance(owed) == usd(120)
    with pytest.raises(LedgerDraftInvalid):
        ledger.ride_settlement(
            ride_id=ride_id,
            driver_id=driver_id,
            charge_id="ch_1",
            driver=usd(800),
            commission=usd(100),
            reserve=usd(20),
            booking_fee=usd(200),
            pass_through=usd(0),
            unpaid=usd(120),
        )

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.money import MINOR_UNIT_EXPONENT, CurrencyMismatch, Money, allocate

amounts = st.integers(min_value=-(10**12), max_value=10**12)
currencies = st.sampled_from(sorted(MINOR_UNIT_EXPONENT))
rates = st.decimals(min_value=-100, max_value=100, places=6, allow_nan=False)
weight_lists = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=1000),
        st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False),
    ),
    min_size=1,
    max_size=8,
).filter(lambda weights: sum(weights) > 0)


@given(st.floats(allow_nan=False))
def test_money_refuses_a_float_amount(amount: float) -> None:
    with pytest.raises(TypeError):
        Money(amount, "USD")  # type: ignore[arg-type]


def test_money_refuses_a_bool_amount() -> None:
    with pytest.raises(TypeError):
        Money(True, "USD")


def test_money_refuses_an_unknown_currency() -> None:
    with pytest.raises(ValueError, match="unsupported currency"):
        Money(100, "XYZ")


@pytest.mark.parametrize(
    "operation",
    [operator.add, operator.sub, operator.lt, operator.le, operator.gt, operator.ge],
)
@given(
    left=amounts,
    right=amounts,
    pair=st.lists(currencies, min_size=2, max_size=2, unique=True),
)
def test_money_refuses_to_mix_currencies(
    operation: Callable[[Money, Money], Any], left: int, right: int, pair: list[str]
) -> None:
    with pytest.raises(CurrencyMismatch):
        operation(Money(left, pair[0]), Money(right, pair[1]))


def test_times_refuses_a_float_rate() -> None:
    with pytest.raises(TypeError):
        Money(100, "USD").times(0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "rate", "expected"),
    [
        (5, Decimal("0.5"), 2),
        (15, Decimal("0.5"), 8),
        (25, Decimal("0.1"), 2),
        (35, Decimal("0.1"), 4),
        (-5, Decimal("0.5"), -2),
        (-15, Decimal("0.5"), -8),
        (1, Decimal("0.5000001"), 1),
    ],
)
def test_times_rounds_half_to_even(amount: int, rate: Decimal, expected: int) -> None:
    assert Money(amount, "USD").times(rate) == Money(expected, "USD")


@given(amount=amounts, rate=rates)
def test_times_is_the_nearest_minor_unit_and_even_on_a_tie(amount: int, rate: Decimal) -> None:
    result = Money(amount, "EUR").times(rate).amount
    exact = Fraction(amount) * Fraction(rate)
    assert abs(result - exact) <= Fraction(1, 2)
    if abs(result - exact) == Fraction(1, 2):
        assert result % 2 == 0


def test_times_is_exact_beyond_the_decimal_context_precision() -> None:
    # 10**30 + 1 has 31 digits: the default 28-digit context would round the product
    # before the one rounding we allow.
    assert Money(10**30 + 1, "USD").times(Decimal("0.5")) == Money(5 * 10**29, "USD")


@pytest.mark.parametrize(
    ("amount", "numerator", "denominator", "expected"),
    [(30, 90, 60, 45), (25, 30, 60, 12), (25, 90, 60, 38), (120, 8200, 1000, 984)],
)
def test_times_ratio_rounds_once_half_to_even(
    amount: int, numerator: int, denominator: int, expected: int
) -> None:
    assert Money(amount, "USD").times_ratio(numerator, denominator) == Money(expected, "USD")


def test_times_ratio_refuses_a_zero_denominator() -> None:
    with pytest.raises(ValueError, match="denominator"):
        Money(100, "USD").times_ratio(1, 0)


@given(total=amounts, weights=weight_lists)
def test_allocate_parts_sum_to_the_whole(total: int, weights: list[Decimal | int]) -> None:
    assert sum(allocate(total, weights)) == total


@given(total=amounts, weights=weight_lists)
def test_allocate_parts_are_within_one_unit_of_their_exact_share(
    total: int, weights: list[Decimal | int]
) -> None:
    weight_sum = sum(Fraction(w) for w in weights)
    for part, weight in zip(allocate(total, weights), weights, strict=True):
        assert abs(part - total * Fraction(weight) / weight_sum) < 1


def test_allocate_gives_a_tie_to_the_earlier_weight() -> None:
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]


def test_allocate_refuses_all_zero_weights() -> None:
    with pytest.raises(ValueError, match="all be zero"):
        allocate(10, [0, Decimal(0)])


def test_allocate_refuses_a_negative_weight() -> None:
    with pytest.raises(ValueError, match="negative"):
        allocate(10, [1, -1])


def test_allocate_refuses_a_float_weight() -> None:
    with pytest.raises(TypeError):
        allocate(10, [0.5, 0.5])  # type: ignore[list-item]


def test_money_allocate_keeps_the_currency() -> None:
    parts = Money(100, "JPY").allocate([Decimal("0.8"), Decimal("0.2")])
    assert parts == [Money(80, "JPY"), Money(20, "JPY")]


def test_money_prints_its_major_units() -> None:
    assert (str(Money(2917, "USD")), str(Money(2917, "JPY"))) == ("29.17 USD", "2917 JPY")

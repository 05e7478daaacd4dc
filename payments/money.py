"""Money: an integer number of minor units and an ISO 4217 currency. No floats, ever.

Rates are ``Decimal``; multiplying by a rate rounds once, half-even; splitting uses the
largest-remainder method, so the parts always add up to the whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Self

# Minor units per currency (ISO 4217 exponent) for the currencies we accept.
MINOR_UNIT_EXPONENT: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CAD": 2,
    "AUD": 2,
    "MXN": 2,
    "BRL": 2,
    "CHF": 2,
    "JPY": 0,
    "KRW": 0,
}


class CurrencyMismatch(ValueError):
    pass


def check_currency(currency: str) -> str:
    if currency not in MINOR_UNIT_EXPONENT:
        raise ValueError(f"unsupported currency {currency!r}")
    return currency


@dataclass(frozen=True, slots=True, order=False)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass, and a float would silently lose cents: refuse both.
        if type(self.amount) is not int:
            raise TypeError(f"Money.amount must be int minor units, not {type(self.amount)}")
        check_currency(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Self:
        return cls(0, currency)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency} do not mix")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    def is_zero(self) -> bool:
        return self.amount == 0

    def times(self, rate: Decimal | int) -> Money:
        """This amount times ``rate``, rounded once to a whole minor unit (half-even)."""
        if isinstance(rate, float):
            raise TypeError("rates are Decimal, never float")
        if isinstance(rate, Decimal) and not rate.is_finite():
            raise ValueError(f"rate must be finite, not {rate}")
        # Fractions are exact whatever the decimal context's precision: the rounding below
        # is the only one.
        return Money(round(Fraction(self.amount) * Fraction(rate)), self.currency)

    def times_ratio(self, numerator: int, denominator: int) -> Money:
        """This amount times ``numerator / denominator`` (e.g. a per-minute price for 90 s
        is ``per_minute.times_ratio(90, 60)``), rounded once to a whole minor unit
        (half-even)."""
        if type(numerator) is not int or type(denominator) is not int:
            raise TypeError("a ratio is two ints")
        if denominator == 0:
            raise ValueError("the denominator of a ratio is not zero")
        return Money(round(Fraction(self.amount * numerator, denominator)), self.currency)

    def allocate(self, weights: Sequence[Decimal | int]) -> list[Money]:
        """Splits this amount in proportion to ``weights`` (non-negative, not all zero) by
        the largest-remainder method: the parts sum exactly to the whole, each part is
        within one minor unit of its exact share, and ties go to the earlier weight."""
        return [Money(part, self.currency) for part in allocate(self.amount, weights)]

    def __str__(self) -> str:
        exponent = MINOR_UNIT_EXPONENT[self.currency]
        value = Decimal(self.amount).scaleb(-exponent)
        return f"{value:.{exponent}f} {self.currency}"


def allocate(total: int, weights: Sequence[Decimal | int]) -> list[int]:
    """Largest-remainder split of ``total`` (any sign) by ``weights``; see Money.allocate."""
    if not weights:
        raise ValueError("nothing to allocate to")
    if any(isinstance(w, float) for w in weights):
        raise TypeError("weights are Decimal or int, never float")
    if any(isinstance(w, Decimal) and not w.is_finite() for w in weights):
        raise ValueError("weights must be finite")
    # Fractions, not Decimals: shares must be exact, whatever the decimal context's
    # precision, or a large total drifts from its exact shares.
    fractions = [Fraction(w) for w in weights]
    if any(w < 0 for w in fractions):
        raise ValueError("weights must not be negative")
    weight_sum = sum(fractions, Fraction(0))
    if weight_sum == 0:
        raise ValueError("weights must not all be zero")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    exact = [magnitude * w / weight_sum for w in fractions]
    floors = [math.floor(e) for e in exact]
    leftover = magnitude - sum(floors)
    # Stable sort: equal remainders keep their order, so ties go to the earlier weight.
    order = sorted(range(len(exact)), key=lambda i: exact[i] - floors[i], reverse=True)
    for i in order[:leftover]:
        floors[i] += 1
    return [sign * part for part in floors]

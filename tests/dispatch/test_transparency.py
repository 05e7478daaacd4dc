"""Decisions as stored, read back for a driver; the Lorenz curve of the fairness report."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from dispatch import matching
from dispatch.models import MatchDecision
from dispatch.transparency import explanation_read, lorenz, stored_decision

WINNER = uuid.UUID(int=1)
RUNNER_UP = uuid.UUID(int=2)
DECIDED_AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _row(chosen: uuid.UUID | None = WINNER) -> MatchDecision:
    return MatchDecision(
        id=uuid.UUID(int=9),
        ride_id=uuid.UUID(int=7),
        region="842a101ffffffff",
        policy="batched",
        window_at=DECIDED_AT,
        chosen_driver_id=chosen,
        candidates=[
            {
                "driver_id": str(WINNER),
                "distance_m": 300.0,
                "eta_s": 50.4,
                "fairness_bonus_s": 10.0,
                "cost": 40.4,
            },
            {
                "driver_id": str(RUNNER_UP),
                "distance_m": 200.0,
                "eta_s": 33.6,
                "fairness_bonus_s": 0.0,
                "cost": 33.6,
            },
        ],
        params={"waited_s": 4.0, "radius_m": 3_100.0},
    )


def test_a_stored_decision_reads_back_as_the_matcher_made_it() -> None:
    decision = stored_decision(_row())
    assert decision.driver_id == WINNER
    assert decision.chosen == matching.CandidateCost(WINNER, 300.0, 50.4, 10.0, 40.4)
    assert (decision.waited_s, decision.radius_m) == (4.0, 3_100.0)
    assert [c.driver_id for c in decision.candidates] == [WINNER, RUNNER_UP]


def test_a_cheaper_driver_who_lost_was_needed_elsewhere() -> None:
    told = explanation_read(_row(), RUNNER_UP)
    assert told.outcome == "needed_elsewhere"
    assert told.own is not None
    assert told.winner is not None
    assert (told.own.cost, told.winner.cost) == (33.6, 40.4)
    assert told.candidates == 2


def test_a_request_left_unmatched_has_no_winner() -> None:
    told = explanation_read(_row(chosen=None), WINNER)
    assert told.winner is None
    assert told.outcome == "needed_elsewhere"


@pytest.mark.parametrize(
    ("values", "curve"),
    [
        ([], [0.0] * 10),
        ([0.0, 0.0], [0.0] * 10),
        ([5.0] * 10, [0.1 * step for step in range(1, 11)]),
        ([0.0, 10.0], [0.0] * 5 + [1.0] * 5),
    ],
)
def test_the_lorenz_curve_gives_the_share_of_the_lowest_drivers(
    values: list[float], curve: list[float]
) -> None:
    assert lorenz(values) == pytest.approx(curve)

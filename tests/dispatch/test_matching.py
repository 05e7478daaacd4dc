from __future__ import annotations

import dataclasses
import math
import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.matching import (
    AvailableDriver,
    CostBreakdown,
    EtaModel,
    Explanation,
    FloatArray,
    MatchingParams,
    MatchResult,
    OpenRequest,
    Policy,
    StraightLineEta,
    explain,
    fairness_bonus_s,
    gini,
    haversine_m,
    match,
)

NOW = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
# Midtown Manhattan; offsets below are metres north and east of it.
ORIGIN = (40.7549, -73.9840)
METRES_PER_DEGREE_LAT = 111_195.0
NO_FAIRNESS = MatchingParams(fairness_weight_s=0.0)
POLICIES: tuple[Policy, ...] = ("batched", "greedy")


def at(north_m: float, east_m: float) -> tuple[float, float]:
    lat = ORIGIN[0] + north_m / METRES_PER_DEGREE_LAT
    lng = ORIGIN[1] + east_m / (METRES_PER_DEGREE_LAT * math.cos(math.radians(ORIGIN[0])))
    return lat, lng


def request_id(number: int) -> uuid.UUID:
    return uuid.UUID(int=number + 1)


def driver_id(number: int) -> uuid.UUID:
    return uuid.UUID(int=1_000_000 + number)


def make_request(
    number: int,
    north_m: float = 0.0,
    east_m: float = 0.0,
    *,
    waited_s: float = 0.0,
    excluded: Iterable[uuid.UUID] = (),
) -> OpenRequest:
    lat, lng = at(north_m, east_m)
    return OpenRequest(
        id=request_id(number),
        lat=lat,
        lng=lng,
        requested_at=NOW - timedelta(seconds=waited_s),
        excluded_driver_ids=frozenset(excluded),
    )


def make_driver(
    number: int,
    north_m: float = 0.0,
    east_m: float = 0.0,
    *,
    idle_s: float = 0.0,
    earnings_minor: int = 0,
    online_s: float = 0.0,
) -> AvailableDriver:
    lat, lng = at(north_m, east_m)
    return AvailableDriver(
        id=driver_id(number),
        lat=lat,
        lng=lng,
        idle_since=NOW - timedelta(seconds=idle_s),
        earnings_today_minor=earnings_minor,
        online_s_today=online_s,
    )


def objective(result: MatchResult, params: MatchingParams) -> float:
    """What the batched policy minimises: chosen costs plus a price per unmatched request."""
    return sum(
        d.chosen.cost if d.chosen is not None else params.unmatched_cost(d.waited_s)
        for d in result.decisions
    )


# Positions on a 500 m grid make equal distances, and so ties, common.
grid_metres = st.integers(min_value=-8, max_value=8).map(lambda steps: steps * 500.0)


@st.composite
def windows(
    draw: st.DrawFn, max_requests: int = 7, max_drivers: int = 7
) -> tuple[list[OpenRequest], list[AvailableDriver]]:
    drivers = [
        make_driver(
            number,
            draw(grid_metres),
            draw(grid_metres),
            idle_s=draw(st.integers(min_value=0, max_value=3_600)),
            earnings_minor=draw(st.integers(min_value=0, max_value=40_000)),
            online_s=draw(st.integers(min_value=0, max_value=36_000)),
        )
        for number in range(draw(st.integers(min_value=0, max_value=max_drivers)))
    ]
    ids = [d.id for d in drivers]
    requests = [
        make_request(
            number,
            draw(grid_metres),
            draw(grid_metres),
            waited_s=draw(st.integers(min_value=0, max_value=119)),
            excluded=draw(st.sets(st.sampled_from(ids))) if ids else (),
        )
        for number in range(draw(st.integers(min_value=0, max_value=max_requests)))
    ]
    return requests, drivers


def test_straight_line_eta_drives_one_point_four_times_the_distance_at_30_kmh() -> None:
    origins = np.array([at(0, 0)])
    destinations = np.array([at(1_000, 0)])

    eta = StraightLineEta().eta_s(origins, destinations)

    assert eta[0] == pytest.approx(1_000 * 1.4 / (30 / 3.6), rel=1e-3)


@pytest.mark.parametrize("policy", POLICIES)
def test_without_drivers_every_request_is_unmatched(policy: Policy) -> None:
    requests = [make_request(0), make_request(1, 500, 0)]

    result = match(requests, [], MatchingParams(), NOW, policy)

    assert result.unmatched_request_ids == (request_id(0), request_id(1))
    assert all(d.candidates == () for d in result.decisions)


@pytest.mark.parametrize("policy", POLICIES)
def test_without_requests_there_is_nothing_to_decide(policy: Policy) -> None:
    result = match([], [make_driver(0)], MatchingParams(), NOW, policy)

    assert result.decisions == ()
    assert result.timed_out_request_ids == ()
    assert result.solver == "none"


@pytest.mark.parametrize("policy", POLICIES)
def test_with_more_requests_than_drivers_each_driver_serves_one(policy: Policy) -> None:
    requests = [make_request(n, 100.0 * n, 0) for n in range(5)]
    drivers = [make_driver(0, 50, 0), make_driver(1, 250, 0)]

    result = match(requests, drivers, MatchingParams(), NOW, policy)

    assert sorted(result.assignments.values()) == [driver_id(0), driver_id(1)]
    assert len(result.unmatched_request_ids) == 3


@pytest.mark.parametrize("policy", POLICIES)
def test_an_excluded_driver_is_neither_chosen_nor_a_candidate(policy: Policy) -> None:
    requests = [make_request(0, excluded=[driver_id(0)])]
    drivers = [make_driver(0, 10, 0), make_driver(1, 2_000, 0)]

    decision = match(requests, drivers, MatchingParams(), NOW, policy).decisions[0]

    assert decision.driver_id == driver_id(1)
    assert driver_id(0) not in {c.driver_id for c in decision.candidates}


def test_the_search_radius_grows_with_waiting_time() -> None:
    params = MatchingParams(base_radius_m=3_000, radius_growth_m_per_s=25, max_radius_m=8_000)
    drivers = [make_driver(0, 4_000, 0)]

    fresh = match([make_request(0, waited_s=0)], drivers, params, NOW)
    waited = match([make_request(0, waited_s=60)], drivers, params, NOW)

    assert fresh.decisions[0].radius_m == 3_000
    assert fresh.decisions[0].chosen is None
    assert waited.decisions[0].radius_m == 4_500
    assert waited.decisions[0].driver_id == driver_id(0)


def test_the_search_radius_stops_at_the_maximum() -> None:
    params = MatchingParams(base_radius_m=1_000, radius_growth_m_per_s=1_000, max_radius_m=5_000)

    decision = match(
        [make_request(0, waited_s=100)], [make_driver(0, 5_100, 0)], params, NOW
    ).decisions[0]

    assert decision.radius_m == 5_000
    assert decision.candidates == ()


def test_a_request_keeps_only_its_k_nearest_drivers() -> None:
    drivers = [make_driver(n, 100.0 * (n + 1), 0) for n in range(6)]

    decision = match([make_request(0)], drivers, MatchingParams(k=3), NOW).decisions[0]

    assert [c.driver_id for c in decision.candidates] == [driver_id(0), driver_id(1), driver_id(2)]


def test_a_request_that_waited_the_timeout_gets_no_driver_found() -> None:
    requests = [make_request(0, waited_s=120), make_request(1, waited_s=119)]

    result = match(requests, [make_driver(0)], MatchingParams(no_driver_timeout_s=120), NOW)

    assert result.timed_out_request_ids == (request_id(0),)
    assert result.assignments == {request_id(1): driver_id(0)}


@given(windows(max_requests=0, max_drivers=10), st.floats(0, 600), st.floats(0, 300))
def test_the_fairness_bonus_stays_within_the_cap_and_the_weight(
    window: tuple[list[OpenRequest], list[AvailableDriver]], weight_s: float, cap_s: float
) -> None:
    _, drivers = window
    params = MatchingParams(fairness_weight_s=weight_s, fairness_cap_s=cap_s)

    bonus = fairness_bonus_s(drivers, params, NOW)

    assert ((bonus >= 0) & (bonus <= min(cap_s, weight_s) + 1e-9)).all()


@given(windows(max_requests=0, max_drivers=10))
def test_fairness_weight_zero_gives_no_bonus(
    window: tuple[list[OpenRequest], list[AvailableDriver]],
) -> None:
    _, drivers = window

    bonus = fairness_bonus_s(drivers, MatchingParams(fairness_weight_s=0.0), NOW)

    assert (bonus == 0).all()


def test_a_long_idle_driver_wins_a_near_tie_when_fairness_is_on() -> None:
    # 100 m more is 17 s more; a full idle part is worth 30 s at this weight.
    drivers = [make_driver(0, 100, 0, idle_s=0), make_driver(1, 200, 0, idle_s=1_800)]
    params = MatchingParams(fairness_weight_s=60, fairness_cap_s=60)

    fair = match([make_request(0)], drivers, params, NOW).decisions[0]
    unfair = match([make_request(0)], drivers, NO_FAIRNESS, NOW).decisions[0]

    assert fair.driver_id == driver_id(1)
    assert fair.chosen is not None
    assert fair.chosen.fairness_bonus_s == pytest.approx(30.0)
    assert unfair.driver_id == driver_id(0)


def test_a_driver_earning_less_per_hour_than_the_window_gets_a_bonus() -> None:
    hour = 3_600.0
    drivers = [
        make_driver(0, earnings_minor=1_000, online_s=2 * hour),
        make_driver(1, earnings_minor=3_000, online_s=2 * hour),
    ]
    params = MatchingParams(fairness_weight_s=40, fairness_min_online_s=hour)

    bonus = fairness_bonus_s(drivers, params, NOW)

    # Mean 1000 / h; driver 0 earns 500 / h, half below it: 40 * (0 + 0.5) / 2.
    assert bonus.tolist() == pytest.approx([10.0, 0.0])


def test_a_driver_new_online_today_gets_no_earnings_bonus() -> None:
    drivers = [
        make_driver(0, earnings_minor=0, online_s=60),
        make_driver(1, earnings_minor=3_000, online_s=7_200),
    ]

    bonus = fairness_bonus_s(drivers, MatchingParams(fairness_min_online_s=1_800), NOW)

    assert bonus.tolist() == [0.0, 0.0]


def test_the_fairness_bonus_lowers_the_cost_of_the_pair() -> None:
    params = MatchingParams(fairness_weight_s=60, fairness_cap_s=20)

    chosen = match([make_request(0)], [make_driver(0, 500, 0, idle_s=3_600)], params, NOW)

    assert chosen.decisions[0].chosen is not None
    assert chosen.decisions[0].chosen.fairness_bonus_s == 20
    assert chosen.decisions[0].chosen.cost == pytest.approx(chosen.decisions[0].chosen.eta_s - 20)


@settings(max_examples=150)
@given(windows(), st.sampled_from([0.0, 30.0, 120.0]), st.sampled_from([0.0, 10.0]))
def test_dense_and_sparse_solvers_reach_the_same_total_cost(
    window: tuple[list[OpenRequest], list[AvailableDriver]], weight_s: float, priority: float
) -> None:
    requests, drivers = window
    dense = MatchingParams(k=3, solver="dense", fairness_weight_s=weight_s, wait_priority=priority)
    sparse = dataclasses.replace(dense, solver="sparse")

    dense_result = match(requests, drivers, dense, NOW)
    sparse_result = match(requests, drivers, sparse, NOW)

    assert objective(dense_result, dense) == pytest.approx(
        objective(sparse_result, sparse), rel=1e-9, abs=1e-6
    )
    assert len(dense_result.assignments) == len(sparse_result.assignments)


@given(windows())
def test_the_batched_assignment_never_costs_more_than_greedy(
    window: tuple[list[OpenRequest], list[AvailableDriver]],
) -> None:
    requests, drivers = window
    # Every driver in range is a candidate and costs are plain ETAs, so both policies
    # choose from the same pairs at the same prices.
    params = MatchingParams(k=50, fairness_weight_s=0.0)

    batched = match(requests, drivers, params, NOW, "batched")
    greedy = match(requests, drivers, params, NOW, "greedy")

    assert objective(batched, params) <= objective(greedy, params) + 1e-6


@pytest.mark.parametrize("policy", POLICIES)
@given(window=windows(), k=st.integers(min_value=1, max_value=4))
def test_each_request_gets_at_most_one_eligible_driver_and_each_driver_one_request(
    policy: Policy, window: tuple[list[OpenRequest], list[AvailableDriver]], k: int
) -> None:
    requests, drivers = window

    result = match(requests, drivers, MatchingParams(k=k), NOW, policy)

    chosen = list(result.assignments.values())
    assert len(chosen) == len(set(chosen))
    by_id = {r.id: r for r in requests}
    for decision in result.decisions:
        if decision.chosen is not None:
            assert decision.chosen in decision.candidates
            assert decision.chosen.driver_id not in by_id[decision.request_id].excluded_driver_ids
            assert decision.chosen.distance_m <= decision.radius_m * 1.005


@pytest.mark.parametrize("policy", POLICIES)
@given(window=windows(), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_the_order_of_the_input_does_not_change_the_result(
    policy: Policy, window: tuple[list[OpenRequest], list[AvailableDriver]], seed: int
) -> None:
    requests, drivers = window
    shuffled_requests, shuffled_drivers = list(requests), list(drivers)
    random.Random(seed).shuffle(shuffled_requests)
    random.Random(seed + 1).shuffle(shuffled_drivers)

    first = match(requests, drivers, MatchingParams(k=3), NOW, policy)
    second = match(shuffled_requests, shuffled_drivers, MatchingParams(k=3), NOW, policy)

    assert first == second


@pytest.mark.parametrize("policy", POLICIES)
def test_a_tie_between_equally_near_drivers_goes_to_the_lower_id(policy: Policy) -> None:
    # Mirror images east and west of the pickup on the equator, and a third driver on the
    # first one's spot: three exactly equal ETAs.
    request = OpenRequest(request_id(0), 0.0, 0.0, NOW)
    drivers = [
        AvailableDriver(driver_id(number), 0.0, lng, NOW, 0, 0)
        for number, lng in [(7, 0.003), (3, -0.003), (5, 0.003)]
    ]

    results = {match([request], drivers, NO_FAIRNESS, NOW, policy) for _ in range(3)}

    assert len(results) == 1
    assert results.pop().decisions[0].driver_id == driver_id(3)


def test_greedy_serves_the_oldest_request_first_with_its_nearest_driver() -> None:
    # Driver 0 is nearest to both; the older request 0 takes it and request 1 gets the
    # far driver, although the other way round would be quicker in total.
    requests = [make_request(0, 0, 0, waited_s=10), make_request(1, 0, 400, waited_s=5)]
    drivers = [make_driver(0, 0, 300), make_driver(1, 0, -1_000)]

    result = match(requests, drivers, NO_FAIRNESS, NOW, "greedy")

    assert result.assignments == {request_id(0): driver_id(0), request_id(1): driver_id(1)}


def test_batched_minimises_the_total_pickup_time() -> None:
    requests = [make_request(0, 0, 0, waited_s=10), make_request(1, 0, 400, waited_s=5)]
    drivers = [make_driver(0, 0, 300), make_driver(1, 0, -1_000)]

    result = match(requests, drivers, NO_FAIRNESS, NOW, "batched")

    assert result.assignments == {request_id(0): driver_id(1), request_id(1): driver_id(0)}


def test_batched_serves_as_many_requests_as_the_candidates_allow() -> None:
    # Request 0 could take either driver; only driver 0 reaches request 1.
    requests = [make_request(0, 0, 0), make_request(1, 0, 2_500)]
    drivers = [make_driver(0, 0, 500), make_driver(1, 0, -2_000)]

    result = match(requests, drivers, NO_FAIRNESS, NOW, "batched")

    assert result.assignments == {request_id(0): driver_id(1), request_id(1): driver_id(0)}


def test_an_older_request_wins_a_contested_driver_when_its_wait_outweighs_the_detour() -> None:
    # The only driver is 100 m from the new request and 600 m (84 s more) from the one
    # that has waited 60 s longer.
    requests = [make_request(0, 0, 0, waited_s=70), make_request(1, 700, 0, waited_s=10)]
    drivers = [make_driver(0, 600, 0)]
    by_wait = MatchingParams(fairness_weight_s=0.0, wait_priority=2.0)
    by_eta = MatchingParams(fairness_weight_s=0.0, wait_priority=0.0)

    assert match(requests, drivers, by_wait, NOW).assignments == {request_id(0): driver_id(0)}
    assert match(requests, drivers, by_eta, NOW).assignments == {request_id(1): driver_id(0)}


def test_greedy_looks_past_the_k_nearest_when_they_are_taken() -> None:
    requests = [make_request(0, 0, 0, waited_s=10), make_request(1, 0, 0, waited_s=5)]
    drivers = [make_driver(0, 100, 0), make_driver(1, 900, 0)]

    result = match(requests, drivers, MatchingParams(k=1), NOW, "greedy")

    assert result.assignments == {request_id(0): driver_id(0), request_id(1): driver_id(1)}
    assert result.decisions[1].chosen in result.decisions[1].candidates


def test_greedy_ignores_fairness() -> None:
    drivers = [make_driver(0, 100, 0, idle_s=0), make_driver(1, 200, 0, idle_s=3_600)]
    params = MatchingParams(fairness_weight_s=120, fairness_cap_s=120)

    decision = match([make_request(0)], drivers, params, NOW, "greedy").decisions[0]

    assert decision.driver_id == driver_id(0)
    assert all(c.fairness_bonus_s == 0 for c in decision.candidates)


class _SlowFromTheNorth:
    """An ETA model under which drivers north of their pickup crawl."""

    def eta_s(self, origins: FloatArray, destinations: FloatArray) -> FloatArray:
        base = StraightLineEta().eta_s(origins, destinations)
        slow: FloatArray = np.where(origins[:, 0] > destinations[:, 0], base * 10, base)
        return slow


def test_costs_come_from_the_given_eta_model() -> None:
    eta: EtaModel = _SlowFromTheNorth()
    drivers = [make_driver(0, 300, 0), make_driver(1, -600, 0)]

    decision = match([make_request(0)], drivers, NO_FAIRNESS, NOW, eta=eta).decisions[0]

    assert decision.driver_id == driver_id(1)


class _Unreachable:
    def eta_s(self, origins: FloatArray, destinations: FloatArray) -> FloatArray:
        return np.full(len(origins), math.inf)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_driver_the_eta_model_cannot_route_is_not_a_candidate(policy: Policy) -> None:
    result = match(
        [make_request(0)], [make_driver(0, 100, 0)], NO_FAIRNESS, NOW, policy, _Unreachable()
    )

    assert result.decisions[0].candidates == ()


def test_a_pair_costing_more_than_leaving_the_request_unmatched_is_not_a_candidate() -> None:
    params = MatchingParams(fairness_weight_s=0.0, unmatched_cost_s=300.0)
    # 2 km is 336 s away at the default speed and detour.
    drivers = [make_driver(0, 2_000, 0), make_driver(1, 1_000, 0)]

    decision = match([make_request(0)], drivers, params, NOW).decisions[0]

    assert [c.driver_id for c in decision.candidates] == [driver_id(1)]


def test_a_driver_across_the_antimeridian_is_found() -> None:
    request = OpenRequest(request_id(0), -16.5, 179.999, NOW)
    driver = AvailableDriver(driver_id(0), -16.5, -179.999, NOW, 0, 0)

    decision = match([request], [driver], MatchingParams(), NOW).decisions[0]

    assert decision.chosen is not None
    assert decision.chosen.distance_m == pytest.approx(213, abs=1)


def test_every_decision_records_its_candidates_cheapest_first() -> None:
    drivers = [make_driver(0, 900, 0), make_driver(1, 300, 0), make_driver(2, 600, 0)]

    decision = match([make_request(0)], drivers, NO_FAIRNESS, NOW).decisions[0]

    assert [c.driver_id for c in decision.candidates] == [driver_id(1), driver_id(2), driver_id(0)]
    assert [c.cost for c in decision.candidates] == sorted(c.cost for c in decision.candidates)
    assert decision.candidates[0].distance_m == pytest.approx(300, rel=1e-3)


def _crossing() -> MatchResult:
    # Batched gives driver 0 to request 1 although driver 0 is nearer to request 0.
    requests = [make_request(0, 0, 0, waited_s=10), make_request(1, 0, 400, waited_s=5)]
    drivers = [make_driver(0, 0, 300), make_driver(1, 0, -1_000), make_driver(2, 5_000, 0)]
    return match(requests, drivers, NO_FAIRNESS, NOW, "batched")


def test_explain_tells_the_winner_they_were_offered_the_ride() -> None:
    decision = _crossing().decisions[0]

    explanation = explain(decision, driver_id(1))

    assert explanation.outcome == "offered"
    assert explanation.own == explanation.winner


def test_explain_tells_a_costlier_driver_they_lost_on_cost() -> None:
    decision = _crossing().decisions[1]

    explanation = explain(decision, driver_id(1))

    assert explanation.outcome == "lost_on_cost"
    assert explanation.own is not None
    assert explanation.winner is not None
    assert explanation.own.cost > explanation.winner.cost


def test_explain_tells_a_cheaper_driver_they_were_needed_elsewhere() -> None:
    decision = _crossing().decisions[0]

    explanation = explain(decision, driver_id(0))

    assert explanation.outcome == "needed_elsewhere"
    assert explanation.own is not None
    assert explanation.winner is not None
    assert explanation.own.cost < explanation.winner.cost


def test_explain_tells_a_far_driver_they_were_not_a_candidate() -> None:
    decision = _crossing().decisions[0]

    explanation = explain(decision, driver_id(2))

    assert explanation.outcome == "not_a_candidate"
    assert explanation.own is None


def test_an_explanation_never_names_the_winner() -> None:
    fields = {f.name for f in dataclasses.fields(Explanation)} | {
        f.name for f in dataclasses.fields(CostBreakdown)
    }

    assert not any("driver" in name for name in fields)


@given(windows())
def test_a_driver_needed_elsewhere_by_the_batch_was_assigned_elsewhere(
    window: tuple[list[OpenRequest], list[AvailableDriver]],
) -> None:
    requests, drivers = window

    result = match(requests, drivers, MatchingParams(k=3), NOW, "batched")

    assigned = set(result.assignments.values())
    for decision in result.decisions:
        for candidate in decision.candidates:
            if explain(decision, candidate.driver_id).outcome == "needed_elsewhere":
                assert candidate.driver_id in assigned


def test_gini_of_equal_values_is_zero() -> None:
    assert gini([5.0, 5.0, 5.0]) == 0.0


def test_gini_when_one_holds_everything_is_n_minus_one_over_n() -> None:
    assert gini([0.0, 0.0, 0.0, 12.0]) == pytest.approx(0.75)


def test_gini_of_one_to_four_is_a_quarter() -> None:
    assert gini([4.0, 1.0, 3.0, 2.0]) == pytest.approx(0.25)


@pytest.mark.parametrize("values", [[], [0.0, 0.0]])
def test_gini_of_nothing_is_zero(values: list[float]) -> None:
    assert gini(values) == 0.0


@pytest.mark.parametrize("values", [[1.0, -1.0], [math.nan], [math.inf, 1.0]])
def test_gini_refuses_negative_or_non_finite_values(values: list[float]) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        gini(values)


@pytest.mark.parametrize(
    "overrides",
    [
        {"k": 0},
        {"base_radius_m": 9_000, "max_radius_m": 8_000},
        {"radius_growth_m_per_s": -1},
        {"fairness_weight_s": -1},
        {"fairness_cap_s": math.nan},
        {"fairness_idle_scale_s": 0},
        {"unmatched_cost_s": 0},
    ],
)
def test_matching_params_refuse_nonsense(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        MatchingParams(**overrides)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        match([make_request(0)], [], MatchingParams(), NOW.replace(tzinfo=None))


def test_out_of_range_coordinates_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid coordinates"):
        OpenRequest(request_id(0), 91.0, 0.0, NOW)


def test_two_drivers_with_one_id_are_refused() -> None:
    with pytest.raises(ValueError, match="share an id"):
        match([make_request(0)], [make_driver(0), make_driver(0, 100, 0)], MatchingParams(), NOW)


def test_haversine_measures_a_degree_of_latitude() -> None:
    # 2 * pi * 6,371,008.8 m / 360 on the mean-radius sphere.
    distance = haversine_m(np.array([[10.0, 20.0]]), np.array([[11.0, 20.0]]))[0]

    assert distance == pytest.approx(111_195.08, abs=0.01)

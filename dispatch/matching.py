"""Matching: which available driver gets an offer for which open request, in one window.

Pure: requests, drivers, parameters and ``now`` in; decisions out. The dispatcher calls
:func:`match` once per window and region, and the replay benchmark calls the same function.

Rules:

- A request that has waited ``wait_s = now - requested_at`` looks for drivers within
  ``min(max_radius_m, base_radius_m + radius_growth_m_per_s * wait_s)`` of its pickup and
  keeps the ``k`` nearest, never one of its ``excluded_driver_ids`` (drivers who declined
  it or let its offer expire).
- A request that has waited ``no_driver_timeout_s`` or longer is not matched: it is listed
  in ``MatchResult.timed_out_request_ids`` and its ride becomes ``no_driver_found``.
- A pair costs ``eta_s - fairness_bonus_s`` seconds. The bonus is
  ``min(fairness_cap_s, fairness_weight_s * (idle + low_earnings) / 2)`` where ``idle`` is
  ``min(1, idle time / fairness_idle_scale_s)`` and ``low_earnings`` is how far, from 0 to
  1, the driver's earnings per hour online today fall below the mean of the window's
  available drivers. Drivers online less than ``fairness_min_online_s`` today have too
  little history to compare and get no earnings part. Weight 0 turns fairness off.
- ``batched`` assigns pairs so that the sum of their costs, plus for each request left
  without a driver ``unmatched_cost_s + wait_priority * wait_s``, is the smallest
  possible. With the default ``unmatched_cost_s`` far above any pickup ETA within the
  radius, that serves in practice as many requests as the candidate graph allows, and
  among those the cheapest pairs. ``wait_priority`` (seconds of pickup ETA per second
  waited) makes an older request worth a longer pickup than a newer one competing for
  the same driver, so that requests close to the timeout are not starved by nearer new
  ones. A pair whose cost reaches ``unmatched_cost_s`` is never worth an offer and is not
  a candidate.
- ``greedy`` (the nearest-first baseline) takes requests oldest first; each gets the free
  driver with the smallest pickup ETA within its radius (looking past the ``k`` nearest
  when those are taken). Fairness plays no part in it, so its bonuses are 0.
- Ties are broken by a canonical order (requests by ``(requested_at, id)``, drivers by
  ``id``), so the same input in any order gives the same result.

Where the error is: the candidate search (radius and the ``k`` nearest) measures distance
on a local equirectangular projection centred on the window's points. East-west
distances are scaled by the cosine of the centre latitude instead of each point's own,
a relative error of about ``tan(latitude) * |latitude offset in radians|``: under 0.5 %
for points within 25 km north or south of the centre at 45 degrees, which is below
GPS noise at city scale. ETAs and the distances stored in decisions are great-circle.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_array
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

Policy = Literal["batched", "greedy"]
SolverChoice = Literal["auto", "dense", "sparse"]
Solver = Literal["dense", "sparse", "greedy", "none"]
ExplanationOutcome = Literal["offered", "lost_on_cost", "needed_elsewhere", "not_a_candidate"]

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class OpenRequest:
    id: uuid.UUID
    lat: float
    lng: float
    requested_at: datetime
    excluded_driver_ids: frozenset[uuid.UUID] = frozenset()

    def __post_init__(self) -> None:
        require_coordinates(self.lat, self.lng)
        _require_aware(requested_at=self.requested_at)


@dataclass(frozen=True, slots=True)
class AvailableDriver:
    id: uuid.UUID
    lat: float
    lng: float
    idle_since: datetime
    earnings_today_minor: int
    online_s_today: float

    def __post_init__(self) -> None:
        require_coordinates(self.lat, self.lng)
        _require_aware(idle_since=self.idle_since)
        if self.earnings_today_minor < 0 or self.online_s_today < 0:
            raise ValueError("earnings and time online cannot be negative")


@dataclass(frozen=True, slots=True)
class MatchingParams:
    k: int = 10
    base_radius_m: float = 3_000.0
    radius_growth_m_per_s: float = 25.0
    max_radius_m: float = 8_000.0
    fairness_weight_s: float = 60.0
    fairness_cap_s: float = 120.0
    fairness_idle_scale_s: float = 900.0
    fairness_min_online_s: float = 1_800.0
    unmatched_cost_s: float = 7_200.0
    # Tuned with bench/dispatch_replay.py on fleets just large enough for the demand:
    # 0 served 1 % fewer riders than greedy, 10 about as many, at most of the ETA gain
    # (docs/benchmarks.md).
    wait_priority: float = 10.0
    no_driver_timeout_s: float = 120.0
    solver: SolverChoice = "auto"
    # Cells of the dense matrix (requests with candidates x drivers who are candidates).
    # bench/dispatch_solver.py measures the sparse solver ahead from about 80k cells.
    dense_max_cells: int = 50_000

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be at least 1")
        if not 0 <= self.base_radius_m <= self.max_radius_m:
            raise ValueError("radii must satisfy 0 <= base_radius_m <= max_radius_m")
        nonnegative = {
            "radius_growth_m_per_s": self.radius_growth_m_per_s,
            "fairness_weight_s": self.fairness_weight_s,
            "fairness_cap_s": self.fairness_cap_s,
            "fairness_min_online_s": self.fairness_min_online_s,
            "no_driver_timeout_s": self.no_driver_timeout_s,
            "wait_priority": self.wait_priority,
        }
        for name, value in nonnegative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")
        if not (math.isfinite(self.fairness_idle_scale_s) and self.fairness_idle_scale_s > 0):
            raise ValueError("fairness_idle_scale_s must be > 0")
        if not (math.isfinite(self.unmatched_cost_s) and self.unmatched_cost_s > 0):
            raise ValueError("unmatched_cost_s must be > 0")
        if self.dense_max_cells < 0:
            raise ValueError("dense_max_cells cannot be negative")

    def unmatched_cost(self, wait_s: float) -> float:
        """What leaving a request that has waited ``wait_s`` seconds without a driver costs."""
        return self.unmatched_cost_s + self.wait_priority * wait_s

    def radius_m(self, wait_s: float) -> float:
        """The search radius of a request that has waited ``wait_s`` seconds."""
        return min(self.max_radius_m, self.base_radius_m + self.radius_growth_m_per_s * wait_s)


class EtaModel(Protocol):
    def eta_s(self, origins: FloatArray, destinations: FloatArray) -> FloatArray:
        """Driving seconds from each origin to the destination at the same index.

        Both arrays have shape ``(n, 2)``: latitude and longitude in degrees. The result has
        shape ``(n,)``; ``inf`` means unreachable.
        """
        ...


@dataclass(frozen=True, slots=True)
class StraightLineEta:
    """Great-circle distance times a detour factor, at a constant speed.

    The defaults are the design's city figures (road distance is about 1.4 times the
    straight line; 30 km/h on average) for when no routing engine is configured.
    """

    detour_factor: float = 1.4
    speed_kmh: float = 30.0

    def __post_init__(self) -> None:
        if not (self.detour_factor >= 1 and self.speed_kmh > 0):
            raise ValueError("detour_factor must be >= 1 and speed_kmh > 0")

    def eta_s(self, origins: FloatArray, destinations: FloatArray) -> FloatArray:
        road_m = haversine_m(origins, destinations) * self.detour_factor
        result: FloatArray = road_m / (self.speed_kmh / 3.6)
        return result


@dataclass(frozen=True, slots=True)
class CandidateCost:
    driver_id: uuid.UUID
    distance_m: float
    eta_s: float
    fairness_bonus_s: float
    cost: float


@dataclass(frozen=True, slots=True)
class MatchDecision:
    request_id: uuid.UUID
    policy: Policy
    decided_at: datetime
    waited_s: float
    radius_m: float
    chosen: CandidateCost | None
    # Every driver considered, cheapest first (ties by driver id).
    candidates: tuple[CandidateCost, ...]

    @property
    def driver_id(self) -> uuid.UUID | None:
        return None if self.chosen is None else self.chosen.driver_id


@dataclass(frozen=True, slots=True)
class MatchResult:
    decided_at: datetime
    policy: Policy
    solver: Solver
    # One per request that was not timed out, oldest request first.
    decisions: tuple[MatchDecision, ...]
    timed_out_request_ids: tuple[uuid.UUID, ...]

    @property
    def assignments(self) -> dict[uuid.UUID, uuid.UUID]:
        return {
            decision.request_id: decision.chosen.driver_id
            for decision in self.decisions
            if decision.chosen is not None
        }

    @property
    def unmatched_request_ids(self) -> tuple[uuid.UUID, ...]:
        return tuple(d.request_id for d in self.decisions if d.chosen is None)


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    eta_s: float
    fairness_bonus_s: float
    cost: float


@dataclass(frozen=True, slots=True)
class Explanation:
    request_id: uuid.UUID
    outcome: ExplanationOutcome
    own: CostBreakdown | None
    winner: CostBreakdown | None


@dataclass(frozen=True, slots=True)
class CandidateGraph:
    """The ``k`` nearest eligible drivers of each request: the edges the solvers choose from.

    ``requests`` and ``drivers`` are in canonical order; edge ``i`` joins
    ``requests[request_index[i]]`` and ``drivers[driver_index[i]]``. Edges are grouped by
    request and, within a request, sorted by cost then driver.
    """

    requests: tuple[OpenRequest, ...]
    drivers: tuple[AvailableDriver, ...]
    waited_s: FloatArray
    radius_m: FloatArray
    request_index: IndexArray
    driver_index: IndexArray
    distance_m: FloatArray
    eta_s: FloatArray
    fairness_bonus_s: FloatArray
    cost: FloatArray
    index: _DriverIndex = field(repr=False)

    @property
    def edge_count(self) -> int:
        return int(self.request_index.size)


def haversine_m(origins: FloatArray, destinations: FloatArray) -> FloatArray:
    """Great-circle metres between rows of two ``(n, 2)`` arrays of (lat, lng) degrees."""
    lat1, lng1 = np.radians(origins[:, 0]), np.radians(origins[:, 1])
    lat2, lng2 = np.radians(destinations[:, 0]), np.radians(destinations[:, 1])
    half_chord = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    )
    result: FloatArray = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(half_chord, 0.0, 1.0)))
    return result


def fairness_bonus_s(
    drivers: Sequence[AvailableDriver], params: MatchingParams, now: datetime
) -> FloatArray:
    """Each driver's fairness bonus in seconds, in ``[0, min(fairness_cap_s, weight)]``.

    See the module's rules. The earnings part compares each driver with the mean earnings
    per hour of the drivers given, so pass the whole window's available drivers.
    """
    _require_aware(now=now)
    count = len(drivers)
    if count == 0 or params.fairness_weight_s == 0 or params.fairness_cap_s == 0:
        return np.zeros(count)
    idle_s = np.array([max(0.0, (now - d.idle_since).total_seconds()) for d in drivers])
    idle = np.minimum(1.0, idle_s / params.fairness_idle_scale_s)
    online_s = np.array([float(d.online_s_today) for d in drivers])
    earnings = np.array([float(d.earnings_today_minor) for d in drivers])
    judged = (online_s >= params.fairness_min_online_s) & (online_s > 0)
    low_earnings = np.zeros(count)
    if judged.any():
        per_hour = np.zeros(count)
        per_hour[judged] = earnings[judged] / (online_s[judged] / 3600.0)
        reference = float(per_hour[judged].mean())
        if reference > 0:
            low_earnings[judged] = np.clip(1.0 - per_hour[judged] / reference, 0.0, 1.0)
    bonus: FloatArray = np.minimum(
        params.fairness_cap_s, params.fairness_weight_s * (idle + low_earnings) / 2.0
    )
    return bonus


def build_candidates(
    requests: Iterable[OpenRequest],
    drivers: Iterable[AvailableDriver],
    params: MatchingParams,
    now: datetime,
    eta: EtaModel | None = None,
    *,
    with_fairness: bool = True,
) -> CandidateGraph:
    """The candidate graph of one window: for each request not timed out, its ``k`` nearest
    non-excluded drivers within its radius, with ETA, bonus and cost, minus pairs costing
    ``unmatched_cost_s`` or more (or with an infinite ETA).

    Requests that have timed out are left out (see :func:`match`). Raises ``ValueError``
    if two requests or two drivers share an id.
    """
    _require_aware(now=now)
    eta_model: EtaModel = eta if eta is not None else StraightLineEta()
    ordered_requests = tuple(sorted(requests, key=lambda r: (r.requested_at, r.id)))
    ordered_drivers = tuple(sorted(drivers, key=lambda d: d.id))
    _require_unique_ids([r.id for r in ordered_requests], "request")
    _require_unique_ids([d.id for d in ordered_drivers], "driver")
    waited = np.array([_waited_s(r, now) for r in ordered_requests])
    live = waited < params.no_driver_timeout_s
    live_requests = tuple(r for r, keep in zip(ordered_requests, live, strict=True) if keep)
    waited = waited[live]
    radius = np.array([params.radius_m(w) for w in waited])
    index = _DriverIndex(ordered_drivers, live_requests)
    if with_fairness:
        bonus_by_driver = fairness_bonus_s(ordered_drivers, params, now)
    else:
        bonus_by_driver = np.zeros(len(ordered_drivers))

    rows, cols = index.nearest(live_requests, radius, params.k)
    request_points = index.request_points[rows]
    driver_points = index.driver_points[cols]
    eta_s = np.asarray(eta_model.eta_s(driver_points, request_points), dtype=np.float64)
    if eta_s.shape != rows.shape:
        raise ValueError("the ETA model returned an array of the wrong shape")
    bonus = bonus_by_driver[cols]
    cost = eta_s - bonus
    keep = np.isfinite(eta_s) & (cost < params.unmatched_cost_s)
    rows, cols, eta_s, bonus, cost = rows[keep], cols[keep], eta_s[keep], bonus[keep], cost[keep]
    distance = haversine_m(driver_points[keep], request_points[keep])
    order = np.lexsort((cols, cost, rows))
    return CandidateGraph(
        requests=live_requests,
        drivers=ordered_drivers,
        waited_s=waited,
        radius_m=radius,
        request_index=rows[order],
        driver_index=cols[order],
        distance_m=distance[order],
        eta_s=eta_s[order],
        fairness_bonus_s=bonus[order],
        cost=cost[order],
        index=index,
    )


def match(
    requests: Iterable[OpenRequest],
    drivers: Iterable[AvailableDriver],
    params: MatchingParams,
    now: datetime,
    policy: Policy = "batched",
    eta: EtaModel | None = None,
) -> MatchResult:
    """Decide one window: at most one driver per request and one request per driver.

    Every request (timed-out ones aside) gets a :class:`MatchDecision` with every
    candidate considered and its cost, whether or not it got a driver. A request whose
    wait has reached ``no_driver_timeout_s`` gets no decision and is listed in
    ``timed_out_request_ids``. ``policy`` is ``batched`` (optimal assignment) or
    ``greedy`` (nearest-first baseline); see the module's rules.
    """
    request_list = list(requests)
    graph = build_candidates(
        request_list, drivers, params, now, eta, with_fairness=policy == "batched"
    )
    live_ids = {r.id for r in graph.requests}
    timed_out = tuple(
        r.id
        for r in sorted(request_list, key=lambda r: (r.requested_at, r.id))
        if r.id not in live_ids
    )
    if policy == "batched":
        solver, chosen_edges = solve_assignment(graph, params)
        extra: dict[int, CandidateCost] = {}
    elif policy == "greedy":
        solver = "greedy"
        chosen_edges, extra = _solve_greedy(
            graph, eta if eta is not None else StraightLineEta(), params.unmatched_cost_s
        )
    else:
        raise ValueError(f"unknown policy {policy!r}")
    decisions = _decisions(graph, chosen_edges, extra, policy, now)
    return MatchResult(
        decided_at=now,
        policy=policy,
        solver=solver if graph.requests else "none",
        decisions=decisions,
        timed_out_request_ids=timed_out,
    )


def solve_assignment(
    graph: CandidateGraph, params: MatchingParams
) -> tuple[Solver, dict[int, int]]:
    """The optimal assignment on ``graph``: ``{request position: edge position}``.

    Minimises the sum of the chosen edges' costs plus, for each request left out, its
    :meth:`MatchingParams.unmatched_cost`. ``params.solver`` picks the algorithm
    (``auto``: dense up to ``dense_max_cells`` cells, sparse beyond); both reach the same
    optimal total.
    """
    if graph.edge_count == 0:
        return "none", {}
    rows, row_of_edge = np.unique(graph.request_index, return_inverse=True)
    cols, col_of_edge = np.unique(graph.driver_index, return_inverse=True)
    cells = rows.size * cols.size
    dense = params.solver == "dense" or (
        params.solver == "auto" and cells <= params.dense_max_cells
    )
    unmatched = np.array([params.unmatched_cost(float(graph.waited_s[row])) for row in rows])
    solve = _solve_dense if dense else _solve_sparse
    picked = solve(row_of_edge, col_of_edge, graph.cost, unmatched, cols.size)
    return ("dense" if dense else "sparse"), {
        int(graph.request_index[edge]): int(edge) for edge in picked
    }


def explain(decision: MatchDecision, driver_id: uuid.UUID) -> Explanation:
    """Why ``driver_id`` did or did not get the offer of ``decision``.

    Returns the driver's own cost and the winner's (never the winner's identity):

    - ``offered``: the driver got it.
    - ``lost_on_cost``: the winner cost no more than this driver.
    - ``needed_elsewhere``: this driver cost less, but serving the window's requests as a
      whole needed them for another request (batched), or an older request took them first
      (greedy); also when the request went unmatched although the driver was a candidate.
    - ``not_a_candidate``: outside the request's radius, beyond its ``k`` nearest, or
      excluded after declining or letting an offer expire.
    """
    own = next((c for c in decision.candidates if c.driver_id == driver_id), None)
    winner = decision.chosen
    winner_costs = None if winner is None else _breakdown(winner)
    if own is None:
        return Explanation(decision.request_id, "not_a_candidate", None, winner_costs)
    if winner is not None and winner.driver_id == driver_id:
        return Explanation(decision.request_id, "offered", _breakdown(own), winner_costs)
    if winner is not None and winner.cost <= own.cost:
        return Explanation(decision.request_id, "lost_on_cost", _breakdown(own), winner_costs)
    return Explanation(decision.request_id, "needed_elsewhere", _breakdown(own), winner_costs)


def gini(values: Iterable[float]) -> float:
    """The Gini coefficient of non-negative values: 0 when all are equal, approaching 1 as
    one value holds everything (exactly ``(n - 1) / n`` then). 0 for no values or all
    zeros. Raises ``ValueError`` on a negative or non-finite value."""
    data = np.sort(np.asarray(list(values), dtype=np.float64))
    if data.size == 0:
        return 0.0
    if not np.isfinite(data).all() or data[0] < 0:
        raise ValueError("gini needs finite, non-negative values")
    total = float(data.sum())
    if total == 0:
        return 0.0
    count = data.size
    ranks = np.arange(1, count + 1, dtype=np.float64)
    return float(2.0 * float(np.dot(ranks, data)) / (count * total) - (count + 1) / count)


class _DriverIndex:
    """Drivers in a KD-tree on a local plane, for nearest-neighbour queries by request."""

    def __init__(
        self, drivers: tuple[AvailableDriver, ...], requests: tuple[OpenRequest, ...]
    ) -> None:
        self.drivers = drivers
        self.requests = requests
        self.driver_points = np.array([(d.lat, d.lng) for d in drivers], dtype=np.float64)
        self.request_points = np.array([(r.lat, r.lng) for r in requests], dtype=np.float64)
        self.driver_points = self.driver_points.reshape(-1, 2)
        self.request_points = self.request_points.reshape(-1, 2)
        self.position = {d.id: i for i, d in enumerate(drivers)}
        all_points = np.vstack([self.driver_points, self.request_points])
        if all_points.size:
            self._origin_lat = float(np.radians(all_points[:, 0].mean()))
            self._origin_lng = float(all_points[0, 1])
        else:
            self._origin_lat = self._origin_lng = 0.0
        self._driver_xy = self._project(self.driver_points)
        self._request_xy = self._project(self.request_points)
        self._tree = cKDTree(self._driver_xy) if drivers else None

    def _project(self, points: FloatArray) -> FloatArray:
        # Longitudes are unwrapped around the origin so a window across the antimeridian
        # stays contiguous.
        dlng = (points[:, 1] - self._origin_lng + 180.0) % 360.0 - 180.0
        x = EARTH_RADIUS_M * math.cos(self._origin_lat) * np.radians(dlng)
        y = EARTH_RADIUS_M * np.radians(points[:, 0])
        projected: FloatArray = np.column_stack([x, y]).reshape(-1, 2)
        return projected

    def _excluded_positions(self, request: OpenRequest) -> set[int]:
        return {self.position[i] for i in request.excluded_driver_ids if i in self.position}

    def nearest(
        self, requests: tuple[OpenRequest, ...], radius_m: FloatArray, k: int
    ) -> tuple[IndexArray, IndexArray]:
        """Edges (request position, driver position) to each request's ``k`` nearest
        non-excluded drivers within its radius, nearest first per request."""
        empty = np.zeros(0, dtype=np.intp)
        if self._tree is None or not requests:
            return empty, empty.copy()
        excluded = [self._excluded_positions(r) for r in requests]
        depth = min(len(self.drivers), k + max((len(e) for e in excluded), default=0))
        distances, positions = self._query(np.arange(len(requests)), depth, float(radius_m.max()))
        within = (positions < len(self.drivers)) & (distances <= radius_m[:, None])
        for row, positions_excluded in enumerate(excluded):
            if positions_excluded:
                within[row] &= ~np.isin(positions[row], list(positions_excluded))
        within &= np.cumsum(within, axis=1) <= k
        rows, slots = np.nonzero(within)
        return rows.astype(np.intp), positions[rows, slots].astype(np.intp)

    def nearest_free(
        self,
        request_position: int,
        radius_m: float,
        unavailable: set[int],
        eta: EtaModel,
        start_depth: int,
        max_eta_s: float,
    ) -> tuple[int, float] | None:
        """The driver with the smallest ETA (below ``max_eta_s``) to the request among the
        nearest ones within its radius that are not unavailable: ``(position, eta_s)``.

        Looks deeper into the tree until it finds one or runs out of drivers in range.
        """
        if self._tree is None:
            return None
        depth = max(1, start_depth)
        while True:
            depth = min(depth, len(self.drivers))
            _, positions = self._query(np.array([request_position]), depth, radius_m)
            in_range = positions[0] < len(self.drivers)
            free = [
                int(p)
                for p, ok in zip(positions[0], in_range, strict=True)
                if ok and int(p) not in unavailable
            ]
            if free:
                etas = np.asarray(
                    eta.eta_s(
                        self.driver_points[free],
                        np.repeat(self.request_points[[request_position]], len(free), axis=0),
                    ),
                    dtype=np.float64,
                )
                best = min(range(len(free)), key=lambda i: (float(etas[i]), free[i]))
                if float(etas[best]) < max_eta_s:
                    return free[best], float(etas[best])
            if not in_range.all() or depth == len(self.drivers):
                return None
            depth *= 2

    def _query(
        self, request_positions: IndexArray, depth: int, upper_bound_m: float
    ) -> tuple[FloatArray, IndexArray]:
        assert self._tree is not None
        # A list of ranks keeps the result two-dimensional even for depth 1. The bound is
        # nudged up so a driver exactly on the radius is not lost to rounding.
        distances, positions = self._tree.query(
            self._request_xy[request_positions],
            k=list(range(1, depth + 1)),
            distance_upper_bound=upper_bound_m * (1 + 1e-9) + 1e-6,
        )
        return (
            np.asarray(distances, dtype=np.float64).reshape(len(request_positions), depth),
            np.asarray(positions, dtype=np.intp).reshape(len(request_positions), depth),
        )


def _solve_dense(
    rows: IndexArray,
    cols: IndexArray,
    cost: FloatArray,
    unmatched: FloatArray,
    col_count: int,
) -> list[int]:
    # Each row is shifted by its own unmatched cost: an edge is then worth ``cost -
    # unmatched`` (< 0) and a non-edge 0, exactly what leaving the request unmatched is
    # worth. Any shape then has the optimum of the dummy-column form, even when requests
    # outnumber drivers and some rows are left out.
    row_count = unmatched.size
    matrix = np.zeros((row_count, col_count))
    edge_at = np.full((row_count, col_count), -1, dtype=np.intp)
    matrix[rows, cols] = cost - unmatched[rows]
    edge_at[rows, cols] = np.arange(cost.size)
    picked_rows, picked_cols = linear_sum_assignment(matrix)
    edges = edge_at[picked_rows, picked_cols]
    return [int(edge) for edge in edges if edge >= 0]


def _solve_sparse(
    rows: IndexArray,
    cols: IndexArray,
    cost: FloatArray,
    unmatched: FloatArray,
    col_count: int,
) -> list[int]:
    # One private "unmatched" column per request makes a full matching always exist. The
    # solver treats stored zeros as missing edges, so every weight is shifted to >= 1;
    # each request takes exactly one edge, so the shift does not move the optimum.
    row_count = unmatched.size
    shift = max(0.0, 1.0 - float(min(cost.min(), unmatched.min())))
    dummy_rows = np.arange(row_count, dtype=np.intp)
    weights = np.concatenate([cost + shift, unmatched + shift])
    biadjacency = csr_array(
        (
            weights,
            (np.concatenate([rows, dummy_rows]), np.concatenate([cols, col_count + dummy_rows])),
        ),
        shape=(row_count, col_count + row_count),
    )
    picked_rows, picked_cols = min_weight_full_bipartite_matching(biadjacency)
    real = picked_cols < col_count
    keys = rows.astype(np.int64) * col_count + cols
    order = np.argsort(keys, kind="stable")
    wanted = picked_rows[real].astype(np.int64) * col_count + picked_cols[real]
    return [int(edge) for edge in order[np.searchsorted(keys, wanted, sorter=order)]]


def _solve_greedy(
    graph: CandidateGraph, eta: EtaModel, max_eta_s: float
) -> tuple[dict[int, int], dict[int, CandidateCost]]:
    chosen: dict[int, int] = {}
    beyond_candidates: dict[int, CandidateCost] = {}
    taken: set[int] = set()
    starts = np.searchsorted(graph.request_index, np.arange(len(graph.requests) + 1))
    for row, request in enumerate(graph.requests):
        edges = range(int(starts[row]), int(starts[row + 1]))
        free = [e for e in edges if int(graph.driver_index[e]) not in taken]
        if free:
            # Edges are sorted by cost, and greedy's cost is the ETA.
            edge = free[0]
            chosen[row] = edge
            taken.add(int(graph.driver_index[edge]))
            continue
        if not edges:
            continue
        # Every candidate was taken by an older request: nearest-first keeps looking past
        # the k nearest, as a dispatcher without a candidate limit would.
        unavailable = taken | graph.index._excluded_positions(request)
        found = graph.index.nearest_free(
            row,
            float(graph.radius_m[row]),
            unavailable,
            eta,
            start_depth=2 * len(edges),
            max_eta_s=max_eta_s,
        )
        if found is None:
            continue
        position, eta_s = found
        driver = graph.drivers[position]
        distance = float(
            haversine_m(graph.index.driver_points[[position]], graph.index.request_points[[row]])[0]
        )
        beyond_candidates[row] = CandidateCost(driver.id, distance, eta_s, 0.0, eta_s)
        taken.add(position)
    return chosen, beyond_candidates


def _decisions(
    graph: CandidateGraph,
    chosen_edges: dict[int, int],
    beyond_candidates: dict[int, CandidateCost],
    policy: Policy,
    now: datetime,
) -> tuple[MatchDecision, ...]:
    starts = np.searchsorted(graph.request_index, np.arange(len(graph.requests) + 1)).tolist()
    driver_ids = [driver.id for driver in graph.drivers]
    # Plain Python floats, converted once: a decision is stored and serialised as is.
    every_candidate = list(
        map(
            CandidateCost,
            [driver_ids[position] for position in graph.driver_index.tolist()],
            graph.distance_m.tolist(),
            graph.eta_s.tolist(),
            graph.fairness_bonus_s.tolist(),
            graph.cost.tolist(),
        )
    )
    waited = graph.waited_s.tolist()
    radius = graph.radius_m.tolist()
    decisions = []
    for row, request in enumerate(graph.requests):
        candidates = every_candidate[starts[row] : starts[row + 1]]
        chosen: CandidateCost | None = None
        if row in chosen_edges:
            chosen = candidates[chosen_edges[row] - starts[row]]
        elif row in beyond_candidates:
            chosen = beyond_candidates[row]
            candidates.append(chosen)
        decisions.append(
            MatchDecision(
                request_id=request.id,
                policy=policy,
                decided_at=now,
                waited_s=waited[row],
                radius_m=radius[row],
                chosen=chosen,
                candidates=tuple(candidates),
            )
        )
    return tuple(decisions)


def _breakdown(candidate: CandidateCost) -> CostBreakdown:
    return CostBreakdown(candidate.eta_s, candidate.fairness_bonus_s, candidate.cost)


def _waited_s(request: OpenRequest, now: datetime) -> float:
    return max(0.0, (now - request.requested_at).total_seconds())


def require_coordinates(lat: float, lng: float) -> None:
    """Raises ``ValueError`` unless latitude is in [-90, 90] and longitude in [-180, 180]."""
    if not (math.isfinite(lat) and math.isfinite(lng) and -90 <= lat <= 90 and -180 <= lng <= 180):
        raise ValueError(f"invalid coordinates ({lat}, {lng})")


def _require_aware(**moments: datetime) -> None:
    for name, moment in moments.items():
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware")


def _require_unique_ids(ids: Sequence[uuid.UUID], kind: str) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError(f"two {kind}s share an id")

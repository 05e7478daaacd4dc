"""Replay trips through the production matcher and measure pickup ETAs, match rate and
how evenly earnings are spread.

    python -m bench.dispatch_replay --trips FILE --fleet N --policy {batched,greedy} --window S
    python -m bench.dispatch_replay --synthetic --fleet N --policy batched
    python -m bench.dispatch_replay --suite          # every comparison in docs/benchmarks.md

The simulation advances one matching window at a time. A request joins the first window
at or after its pickup time; every window, :func:`dispatch.matching.match` (the code the
dispatcher runs) pairs open requests with available drivers. Every offer is accepted at
once: the benchmark measures matching, not drivers' answers. A matched driver drives to
the pickup at the ETA model's speed, carries the trip for its real duration (estimated
from its distance if the file has none), and is available again at the drop-off when
that window comes. Idle drivers wait where they are. A request the matcher times out
(120 s by default) is lost. Drivers start at pickups drawn from the file with a fixed
seed and 300 m of jitter, all online for the whole replay. A driver earns
``EARNINGS_BASE_MINOR + EARNINGS_PER_KM_MINOR * road km`` per trip. Both policies see the
same trips, fleet, seed, parameters and ETA model.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import numpy as np

from bench.harness import RESULTS_DIR, machine, merge_results, now_iso, progress
from dispatch.matching import (
    AvailableDriver,
    FloatArray,
    MatchingParams,
    OpenRequest,
    Policy,
    StraightLineEta,
    gini,
    haversine_m,
    match,
)

RESULTS_NAME = "dispatch"
CHART_PATH = Path(__file__).parent.parent / "docs" / "img" / "dispatch_replay.png"
SHARED_DATA = Path(__file__).parent.parent.parent / "shared" / "data"
NYC_TRIPS = SHARED_DATA / "nyc_taxi_2011-01-19_0700-0731.csv"

DEFAULT_PARAMS = MatchingParams()
EARNINGS_BASE_MINOR = 250
EARNINGS_PER_KM_MINOR = 120
START_JITTER_M = 300.0
DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M:%S")

# RideAustin, one day of 2017 (shared/data/README.md): road / straight-line distance
# median 1.41, median speed 30.6 km/h, 15.5k requests a day.
AUSTIN_CENTRE = (30.2672, -97.7431)
AUSTIN_DETOUR = 1.41
AUSTIN_SPEED_KMH = 30.6
AUSTIN_REQUESTS_PER_DAY = 15_500


@dataclass(frozen=True, slots=True)
class Trip:
    requested_s: float
    pickup: tuple[float, float]
    dropoff: tuple[float, float]
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class Demand:
    name: str
    trips: tuple[Trip, ...]
    skipped: int
    eta: StraightLineEta


def load_trips(path: Path) -> tuple[list[Trip], int]:
    """Trips from a CSV with pickup/dropoff datetimes and coordinates (other columns are
    ignored), in pickup order, with times in seconds after the first pickup. Rows with
    unreadable, zero or out-of-range coordinates or an unreadable pickup time are skipped
    and counted."""
    raw: list[tuple[datetime, tuple[float, float], tuple[float, float], float | None]] = []
    skipped = 0
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                requested_at = _parse_datetime(row["pickup_datetime"])
                pickup = (float(row["pickup_latitude"]), float(row["pickup_longitude"]))
                dropoff = (float(row["dropoff_latitude"]), float(row["dropoff_longitude"]))
            except (KeyError, ValueError):
                skipped += 1
                continue
            if not (_plausible(pickup) and _plausible(dropoff)):
                skipped += 1
                continue
            duration_s: float | None = None
            with_dropoff = row.get("dropoff_datetime") or ""
            try:
                duration_s = (_parse_datetime(with_dropoff) - requested_at).total_seconds()
            except ValueError:
                duration_s = None
            if duration_s is not None and duration_s <= 0:
                duration_s = None
            raw.append((requested_at, pickup, dropoff, duration_s))
    if not raw:
        raise SystemExit(f"{path}: no usable trips")
    raw.sort(key=lambda item: item[0])
    first = raw[0][0]
    trips = [
        Trip((at - first).total_seconds(), pickup, dropoff, duration)
        for at, pickup, dropoff, duration in raw
    ]
    return trips, skipped


def synthetic_trips(seed: int, duration_s: float, requests_per_s: float) -> list[Trip]:
    """Demand shaped like a RideAustin evening peak: Poisson arrivals; pickups and
    drop-offs from one mixture of a dense downtown, four secondary centres 5-9 km out and
    a wide suburban spread. Durations are left to the road-distance estimate (1.41 x
    straight line at 30.6 km/h)."""
    rng = np.random.default_rng(seed)
    count = int(rng.poisson(requests_per_s * duration_s))
    times = np.sort(rng.uniform(0.0, duration_s, count))
    pickups = _austin_points(rng, count)
    dropoffs = _austin_points(rng, count)
    return [
        Trip(float(t), (float(p[0]), float(p[1])), (float(d[0]), float(d[1])), None)
        for t, p, d in zip(times, pickups, dropoffs, strict=True)
    ]


def _austin_points(rng: np.random.Generator, count: int) -> FloatArray:
    hubs_km = np.array([[0.0, 0.0], [6.0, 3.0], [-5.0, 4.0], [8.0, -4.0], [-3.0, -7.0]])
    which = rng.choice(np.arange(len(hubs_km) + 1), size=count, p=[0.45, 0.1, 0.1, 0.1, 0.1, 0.15])
    spread_km = np.where(which == 0, 1.5, np.where(which == len(hubs_km), 8.0, 2.0))
    centres = np.vstack([hubs_km, [[0.0, 0.0]]])[which]
    offsets_km = centres + rng.normal(size=(count, 2)) * spread_km[:, None]
    return _offset(np.array([AUSTIN_CENTRE]), offsets_km * 1000.0)


def _offset(origin: FloatArray, north_east_m: FloatArray) -> FloatArray:
    lat = origin[:, 0] + np.degrees(north_east_m[:, 0] / 6_371_008.8)
    lng = origin[:, 1] + np.degrees(
        north_east_m[:, 1] / (6_371_008.8 * np.cos(np.radians(origin[:, 0])))
    )
    return np.column_stack([lat, lng])


@dataclass
class _Fleet:
    position: FloatArray
    free_at_s: FloatArray
    earnings_minor: list[int]
    trips: list[int]


def simulate(
    demand: Demand,
    fleet_size: int,
    policy: Policy,
    window_s: float,
    params: MatchingParams,
    seed: int,
    verbose: bool = True,
) -> dict[str, Any]:
    """Replay ``demand`` with ``fleet_size`` drivers; returns the measured figures."""
    if fleet_size < 1 or window_s <= 0:
        raise ValueError("the fleet needs a driver and the window a positive length")
    trips = demand.trips
    eta = demand.eta
    rng = np.random.default_rng(seed)
    pickups = np.array([trip.pickup for trip in trips])
    starts = pickups[rng.integers(0, len(trips), fleet_size)]
    fleet = _Fleet(
        position=_offset(starts, rng.normal(scale=START_JITTER_M, size=(fleet_size, 2))),
        free_at_s=np.zeros(fleet_size),
        earnings_minor=[0] * fleet_size,
        trips=[0] * fleet_size,
    )
    driver_ids = [uuid.UUID(int=1 << 64 | number) for number in range(fleet_size)]
    position_of = {driver_id: number for number, driver_id in enumerate(driver_ids)}
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    open_requests: dict[uuid.UUID, OpenRequest] = {}
    trip_of: dict[uuid.UUID, Trip] = {}
    pickup_eta_s: list[float] = []
    wait_s: list[float] = []
    lost = 0
    next_trip = 0
    now_s = trips[0].requested_s
    windows = 0
    started = time.perf_counter()
    while next_trip < len(trips) or open_requests:
        while next_trip < len(trips) and trips[next_trip].requested_s <= now_s:
            trip = trips[next_trip]
            request_id = uuid.UUID(int=next_trip + 1)
            open_requests[request_id] = OpenRequest(
                request_id, *trip.pickup, epoch + timedelta(seconds=trip.requested_s)
            )
            trip_of[request_id] = trip
            next_trip += 1
        now = epoch + timedelta(seconds=now_s)
        available = [
            AvailableDriver(
                id=driver_ids[number],
                lat=float(fleet.position[number, 0]),
                lng=float(fleet.position[number, 1]),
                idle_since=epoch + timedelta(seconds=float(fleet.free_at_s[number])),
                earnings_today_minor=fleet.earnings_minor[number],
                online_s_today=now_s,
            )
            for number in np.flatnonzero(fleet.free_at_s <= now_s).tolist()
        ]
        result = match(open_requests.values(), available, params, now, policy, eta)
        for request_id in result.timed_out_request_ids:
            del open_requests[request_id]
            lost += 1
        for decision in result.decisions:
            if decision.chosen is None:
                continue
            request = open_requests.pop(decision.request_id)
            trip = trip_of[decision.request_id]
            number = position_of[decision.chosen.driver_id]
            to_pickup_s = decision.chosen.eta_s
            road_km = _straight_m(trip.pickup, trip.dropoff) * eta.detour_factor / 1000.0
            carrying_s = trip.duration_s
            if carrying_s is None:
                carrying_s = road_km / eta.speed_kmh * 3600.0
            pickup_eta_s.append(to_pickup_s)
            wait_s.append((now - request.requested_at).total_seconds())
            fleet.free_at_s[number] = now_s + to_pickup_s + carrying_s
            fleet.position[number] = trip.dropoff
            fleet.earnings_minor[number] += EARNINGS_BASE_MINOR + round(
                EARNINGS_PER_KM_MINOR * road_km
            )
            fleet.trips[number] += 1
        windows += 1
        if verbose and windows % 200 == 0:
            progress(
                f"  {demand.name} fleet={fleet_size} {policy}: t={now_s:.0f}s "
                f"{next_trip}/{len(trips)} requests, {len(pickup_eta_s)} matched"
            )
        now_s += window_s
    elapsed = time.perf_counter() - started
    etas = np.array(pickup_eta_s)
    waits = np.array(wait_s)
    matched = len(pickup_eta_s)
    return {
        "trips": demand.name,
        "policy": policy,
        "fleet": fleet_size,
        "window_s": window_s,
        "requests": len(trips),
        "matched": matched,
        "lost": lost,
        "match_rate": round(matched / len(trips), 4),
        "pickup_eta_mean_s": _rounded(etas.mean() if matched else math.nan),
        "pickup_eta_median_s": _rounded(np.median(etas) if matched else math.nan),
        "pickup_eta_p95_s": _rounded(np.percentile(etas, 95) if matched else math.nan),
        "wait_to_match_mean_s": _rounded(waits.mean() if matched else math.nan),
        "request_to_pickup_mean_s": _rounded((waits + etas).mean() if matched else math.nan),
        # Every simulated driver is online for the whole replay, so this is also the
        # Gini of earnings per hour online.
        "earnings_gini": round(gini(fleet.earnings_minor), 4),
        "trips_per_driver_mean": round(float(np.mean(fleet.trips)), 2),
        "windows": windows,
        "simulated_s": round(now_s - trips[0].requested_s, 1),
        "wall_s": round(elapsed, 2),
    }


def _straight_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(haversine_m(np.array([a]), np.array([b]))[0])


def _rounded(value: float | np.floating[Any]) -> float | None:
    number = float(value)
    return None if math.isnan(number) else round(number, 1)


def _parse_datetime(text: str) -> datetime:
    text = text.strip()
    for pattern in DATETIME_FORMATS:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _plausible(point: tuple[float, float]) -> bool:
    lat, lng = point
    return (
        math.isfinite(lat)
        and math.isfinite(lng)
        and -90 <= lat <= 90
        and -180 <= lng <= 180
        and not (lat == 0 or lng == 0)
    )


def nyc_demand(path: Path) -> Demand:
    trips, skipped = load_trips(path)
    return Demand(path.stem, tuple(trips), skipped, StraightLineEta())


def austin_demand(seed: int, duration_s: float, peak_factor: float) -> Demand:
    rate = AUSTIN_REQUESTS_PER_DAY / 86_400 * peak_factor
    trips = synthetic_trips(seed, duration_s, rate)
    return Demand(
        f"synthetic_austin_{rate:.2f}_per_s",
        tuple(trips),
        0,
        StraightLineEta(detour_factor=AUSTIN_DETOUR, speed_kmh=AUSTIN_SPEED_KMH),
    )


def _saved_section(section: str) -> dict[str, Any]:
    path = RESULTS_DIR / f"{RESULTS_NAME}.json"
    saved: dict[str, Any] = json.loads(path.read_text()).get(section, {}) if path.exists() else {}
    return saved


def _params_record(params: MatchingParams) -> dict[str, Any]:
    return dataclasses.asdict(params)


def run_suite(
    args: argparse.Namespace, params: MatchingParams
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Every comparison in docs/benchmarks.md: both demands, three fleets each (scarce,
    tight, plentiful), both policies, averaged over ``--seeds`` (the NYC trips stay the
    same; the synthetic demand and every fleet's start are drawn anew per seed); then the
    chart. With ``--sensitivity``, also the radius and fairness sweeps."""
    nyc_path = args.trips or NYC_TRIPS
    plans = [("nyc", fleet) for fleet in args.nyc_fleets] + [
        ("synthetic", fleet) for fleet in args.austin_fleets
    ]
    names = {"nyc": nyc_demand(nyc_path).name, "synthetic": _austin(args, args.seeds[0]).name}
    runs: dict[str, Any] = {}
    for source, fleet in plans:
        pair: dict[str, Any] = {
            policy: _averaged(args, source, fleet, policy, params) for policy in get_args(Policy)
        }
        pair["batched_vs_greedy_mean_eta"] = _change(
            pair["batched"]["pickup_eta_mean_s"], pair["greedy"]["pickup_eta_mean_s"]
        )
        pair["batched_minus_greedy_match_rate"] = round(
            pair["batched"]["match_rate"] - pair["greedy"]["match_rate"], 4
        )
        runs.setdefault(names[source], {})[f"fleet_{fleet}"] = pair
    summary: dict[str, Any] = {
        "params": _params_record(params),
        "seeds": args.seeds,
        "window_s": args.window,
        "measured_at": now_iso(),
        "machine": machine(),
        "runs": runs,
    }
    _chart(runs, args.nyc_fleets, args.austin_fleets, names["nyc"], names["synthetic"])
    if not args.sensitivity:
        return summary, None
    sensitivity = {
        "params": _params_record(params),
        "seeds": args.seeds,
        "measured_at": now_iso(),
        "radius": _radius_sensitivity(args, params),
        "fairness": _fairness_sensitivity(args, params),
    }
    return summary, sensitivity


def _austin(args: argparse.Namespace, seed: int) -> Demand:
    return austin_demand(seed, args.synthetic_duration, args.peak_factor)


def _averaged(
    args: argparse.Namespace, source: str, fleet: int, policy: Policy, params: MatchingParams
) -> dict[str, Any]:
    per_seed = []
    for seed in args.seeds:
        demand = nyc_demand(args.trips or NYC_TRIPS) if source == "nyc" else _austin(args, seed)
        progress(f"{demand.name}: fleet {fleet}, {policy}, seed {seed}")
        per_seed.append(simulate(demand, fleet, policy, args.window, params, seed, False))
    averaged: dict[str, Any] = {"trips": per_seed[0]["trips"], "policy": policy, "fleet": fleet}
    for key, value in per_seed[0].items():
        if key not in averaged and isinstance(value, int | float):
            values = [run[key] for run in per_seed if run[key] is not None]
            averaged[key] = round(float(np.mean(values)), 4) if values else None
    averaged["per_seed_pickup_eta_mean_s"] = [run["pickup_eta_mean_s"] for run in per_seed]
    averaged["per_seed_match_rate"] = [run["match_rate"] for run in per_seed]
    return averaged


RADIUS_GRID = [
    (3_000.0, 25.0, 8_000.0),
    (2_000.0, 25.0, 8_000.0),
    (4_000.0, 25.0, 8_000.0),
    (3_000.0, 50.0, 8_000.0),
    (3_000.0, 0.0, 3_000.0),
    (2_000.0, 10.0, 4_000.0),
]
FAIRNESS_WEIGHTS = [0.0, 30.0, 60.0, 120.0]


def _radius_sensitivity(args: argparse.Namespace, params: MatchingParams) -> list[dict[str, Any]]:
    # Both policies share each radius setting; the scarce and tight fleets are where the
    # radius matters (a plentiful fleet rarely searches far).
    rows = []
    for base, growth, largest in RADIUS_GRID:
        varied = dataclasses.replace(
            params, base_radius_m=base, radius_growth_m_per_s=growth, max_radius_m=largest
        )
        for source, fleet in [("nyc", f) for f in args.nyc_fleets[:2]] + [
            ("synthetic", f) for f in args.austin_fleets[:2]
        ]:
            greedy = _averaged(args, source, fleet, "greedy", varied)
            batched = _averaged(args, source, fleet, "batched", varied)
            rows.append(
                {
                    "trips": source,
                    "fleet": fleet,
                    "base_radius_m": base,
                    "radius_growth_m_per_s": growth,
                    "max_radius_m": largest,
                    "greedy_match_rate": greedy["match_rate"],
                    "greedy_pickup_eta_mean_s": greedy["pickup_eta_mean_s"],
                    "batched_match_rate": batched["match_rate"],
                    "batched_pickup_eta_mean_s": batched["pickup_eta_mean_s"],
                }
            )
    return rows


def _fairness_sensitivity(args: argparse.Namespace, params: MatchingParams) -> list[dict[str, Any]]:
    rows = []
    for weight in FAIRNESS_WEIGHTS:
        varied = dataclasses.replace(
            params, fairness_weight_s=weight, fairness_cap_s=max(params.fairness_cap_s, weight)
        )
        for source, fleet in [("nyc", args.nyc_fleets[-1]), ("synthetic", args.austin_fleets[-1])]:
            batched = _averaged(args, source, fleet, "batched", varied)
            rows.append(
                {
                    "trips": source,
                    "fleet": fleet,
                    "fairness_weight_s": weight,
                    "match_rate": batched["match_rate"],
                    "pickup_eta_mean_s": batched["pickup_eta_mean_s"],
                    "earnings_gini": batched["earnings_gini"],
                }
            )
    return rows


def _change(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or old == 0:
        return None
    return round((new - old) / old, 4)


def _chart(
    runs: Mapping[str, Any],
    nyc_fleets: Sequence[int],
    austin_fleets: Sequence[int],
    nyc_name: str,
    austin_name: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for axis, name, fleets, title in [
        (axes[0], nyc_name, nyc_fleets, "NYC taxi, 2011-01-19 07:00-07:31 (950 usable trips)"),
        (
            axes[1],
            austin_name,
            austin_fleets,
            "Synthetic, calibrated to RideAustin (1 h at 0.36 requests/s)",
        ),
    ]:
        positions = np.arange(len(fleets))
        width = 0.2
        bars = [
            ("greedy", "pickup_eta_mean_s", -1.5, "#9e9e9e", "greedy mean"),
            ("batched", "pickup_eta_mean_s", -0.5, "#1f77b4", "batched mean"),
            ("greedy", "pickup_eta_p95_s", 0.5, "#d0d0d0", "greedy p95"),
            ("batched", "pickup_eta_p95_s", 1.5, "#9ecae1", "batched p95"),
        ]
        for policy, metric, shift, colour, label in bars:
            values = [runs[name][f"fleet_{fleet}"][policy][metric] or 0.0 for fleet in fleets]
            axis.bar(positions + shift * width, values, width, color=colour, label=label)
        kinds = ["scarce", "tight", "plentiful"] if len(fleets) == 3 else [""] * len(fleets)
        ticks = []
        for fleet, kind in zip(fleets, kinds, strict=True):
            pair = runs[name][f"fleet_{fleet}"]
            ticks.append(
                f"{fleet} drivers {f'({kind})' if kind else ''}\n"
                f"match {pair['greedy']['match_rate']:.1%} | {pair['batched']['match_rate']:.1%}"
            )
        axis.set_xticks(positions, ticks, fontsize=8)
        axis.set_ylabel("pickup ETA (s)")
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(
        "Dispatch replay: greedy nearest-first vs 2 s batched assignment "
        "(mean of 3 seeds; match rate greedy | batched under each fleet)"
    )
    CHART_PATH.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(CHART_PATH, dpi=110)
    plt.close(figure)
    progress(f"chart written to {CHART_PATH}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_replay", description=__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--trips", type=Path, help="trip CSV (pickup/dropoff time and place)")
    source.add_argument("--synthetic", action="store_true", help="RideAustin-like demand")
    parser.add_argument("--fleet", type=int, help="number of drivers")
    parser.add_argument("--policy", choices=get_args(Policy), default="batched")
    parser.add_argument("--window", type=float, default=2.0, help="matching window, seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--synthetic-duration", type=float, default=3_600.0)
    parser.add_argument(
        "--peak-factor",
        type=float,
        default=2.0,
        help="synthetic request rate as a multiple of RideAustin's daily mean",
    )
    parser.add_argument("--k", type=int, default=DEFAULT_PARAMS.k)
    parser.add_argument("--base-radius", type=float, default=DEFAULT_PARAMS.base_radius_m)
    parser.add_argument("--radius-growth", type=float, default=DEFAULT_PARAMS.radius_growth_m_per_s)
    parser.add_argument("--max-radius", type=float, default=DEFAULT_PARAMS.max_radius_m)
    parser.add_argument("--fairness-weight", type=float, default=DEFAULT_PARAMS.fairness_weight_s)
    parser.add_argument("--wait-priority", type=float, default=DEFAULT_PARAMS.wait_priority)
    parser.add_argument("--timeout", type=float, default=DEFAULT_PARAMS.no_driver_timeout_s)
    parser.add_argument("--suite", action="store_true", help="run every comparison + chart")
    parser.add_argument(
        "--nyc-fleets", type=int, nargs="+", default=[250, 400, 800], help="scarce tight plenty"
    )
    parser.add_argument("--austin-fleets", type=int, nargs="+", default=[350, 500, 800])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="for --suite")
    parser.add_argument("--sensitivity", action="store_true", help="--suite: radius, fairness")
    parser.add_argument("--no-save", action="store_true", help="print only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    params = MatchingParams(
        k=args.k,
        base_radius_m=args.base_radius,
        radius_growth_m_per_s=args.radius_growth,
        max_radius_m=args.max_radius,
        fairness_weight_s=args.fairness_weight,
        no_driver_timeout_s=args.timeout,
        wait_priority=args.wait_priority,
    )
    if args.suite:
        summary, sensitivity = run_suite(args, params)
        if not args.no_save:
            merge_results(RESULTS_NAME, "replay", summary)
            if sensitivity is not None:
                merge_results(RESULTS_NAME, "replay_sensitivity", sensitivity)
        print(json.dumps({"replay": summary, "replay_sensitivity": sensitivity}, indent=2))
        return 0
    if args.fleet is None:
        raise SystemExit("--fleet is required (or use --suite)")
    if args.synthetic:
        demand = austin_demand(args.seed, args.synthetic_duration, args.peak_factor)
    else:
        demand = nyc_demand(args.trips or NYC_TRIPS)
    if demand.skipped:
        progress(f"{demand.name}: skipped {demand.skipped} unusable rows")
    figures = simulate(demand, args.fleet, args.policy, args.window, params, args.seed)
    figures["params"] = _params_record(params)
    if not args.no_save:
        runs = _saved_section("replay_runs")
        runs[f"{demand.name}/fleet_{args.fleet}/{args.policy}/window_{args.window:g}"] = figures
        merge_results(RESULTS_NAME, "replay_runs", runs)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

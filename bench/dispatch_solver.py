"""Time the matcher's parts on large windows: the K-nearest candidate search, the dense
and sparse assignment solvers, and a whole ``match`` call.

    python -m bench.dispatch_solver [--repeats 7] [--no-save]

Goals (the dispatch issue): 1k requests x 2k drivers solved in <= 20 ms; 10k x 20k
(sparse) in <= 400 ms. Requests and drivers are spread uniformly over a square sized so
that drivers are as dense as in a busy city (2k drivers on 20 km x 20 km), requests have
waited 0-100 s, fairness is on. Every figure is the median of ``--repeats`` runs after
one warm-up run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from bench.dispatch_replay import RESULTS_NAME
from bench.harness import machine, merge_results, now_iso, progress
from dispatch.matching import (
    AvailableDriver,
    MatchingParams,
    OpenRequest,
    SolverChoice,
    StraightLineEta,
    build_candidates,
    match,
    solve_assignment,
)

NOW = datetime(2025, 6, 1, 18, 0, tzinfo=UTC)
CENTRE = (30.2672, -97.7431)
DRIVERS_PER_KM2 = 2_000 / 400.0


def window(
    requests: int, drivers: int, seed: int
) -> tuple[list[OpenRequest], list[AvailableDriver]]:
    """A random window with ``requests`` x ``drivers`` at busy-city driver density."""
    rng = np.random.default_rng(seed)
    side_m = math.sqrt(drivers / DRIVERS_PER_KM2) * 1_000.0

    def points(count: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        offsets = rng.uniform(-side_m / 2, side_m / 2, size=(count, 2))
        lat = CENTRE[0] + np.degrees(offsets[:, 0] / 6_371_008.8)
        lng = CENTRE[1] + np.degrees(
            offsets[:, 1] / (6_371_008.8 * math.cos(math.radians(CENTRE[0])))
        )
        return np.column_stack([lat, lng])

    request_points = points(requests)
    driver_points = points(drivers)
    waited = rng.uniform(0, 100, requests)
    idle = rng.uniform(0, 3_600, drivers)
    earnings = rng.integers(0, 30_000, drivers)
    online = rng.uniform(0, 36_000, drivers)
    return (
        [
            OpenRequest(
                uuid.UUID(int=n + 1),
                float(request_points[n, 0]),
                float(request_points[n, 1]),
                NOW - timedelta(seconds=float(waited[n])),
            )
            for n in range(requests)
        ],
        [
            AvailableDriver(
                uuid.UUID(int=1 << 64 | n),
                float(driver_points[n, 0]),
                float(driver_points[n, 1]),
                NOW - timedelta(seconds=float(idle[n])),
                int(earnings[n]),
                float(online[n]),
            )
            for n in range(drivers)
        ],
    )


def median_ms(action: Callable[[], object], repeats: int) -> float:
    action()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1_000.0)
    return round(statistics.median(samples), 2)


def measure(requests: int, drivers: int, solver: SolverChoice, repeats: int) -> dict[str, Any]:
    """Candidate search, solver alone and a whole ``match`` for one window size."""
    open_requests, available = window(requests, drivers, seed=requests + drivers)
    params = MatchingParams(solver=solver)
    graph = build_candidates(open_requests, available, params, NOW)
    chosen_solver, assignment = solve_assignment(graph, params)
    progress(f"  {requests} x {drivers} {solver}: {graph.edge_count} edges")
    return {
        "requests": requests,
        "drivers": drivers,
        "solver": chosen_solver,
        "k": params.k,
        "edges": graph.edge_count,
        "matched": len(assignment),
        "candidates_ms": median_ms(
            lambda: build_candidates(open_requests, available, params, NOW), repeats
        ),
        "solve_ms": median_ms(lambda: solve_assignment(graph, params), repeats),
        "match_ms": median_ms(lambda: match(open_requests, available, params, NOW), repeats),
    }


def measure_full_dense(requests: int, drivers: int, repeats: int) -> dict[str, Any]:
    """``linear_sum_assignment`` on every request x driver ETA, no candidate limit: the
    textbook dense problem, for comparison with the design's figures."""
    open_requests, available = window(requests, drivers, seed=requests + drivers)
    origins = np.array([(d.lat, d.lng) for d in available])
    destinations = np.array([(r.lat, r.lng) for r in open_requests])
    eta = StraightLineEta()
    costs = eta.eta_s(
        np.repeat(origins, requests, axis=0), np.tile(destinations, (drivers, 1))
    ).reshape(drivers, requests)
    matrix = np.ascontiguousarray(costs.T)
    return {
        "requests": requests,
        "drivers": drivers,
        "solver": "linear_sum_assignment, all pairs",
        "solve_ms": median_ms(lambda: linear_sum_assignment(matrix), repeats),
    }


def crossover(repeats: int) -> list[dict[str, Any]]:
    """Dense against sparse on the same candidate graphs, to place ``dense_max_cells``."""
    rows = []
    for requests in (50, 100, 200, 350, 500):
        drivers = 2 * requests
        open_requests, available = window(requests, drivers, seed=requests)
        graph = build_candidates(open_requests, available, MatchingParams(), NOW)
        timings = {}
        choices: tuple[SolverChoice, ...] = ("dense", "sparse")
        for solver in choices:
            params = dataclasses.replace(MatchingParams(), solver=solver)
            timings[f"{solver}_ms"] = median_ms(
                functools.partial(solve_assignment, graph, params), repeats
            )
        rows.append(
            {"requests": requests, "drivers": drivers, "cells": requests * drivers, **timings}
        )
        progress(f"  crossover {requests} x {drivers}: {timings}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch_solver", description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    # Other work on the machine slows every figure; the load says how busy it was.
    load_before = round(os.getloadavg()[0], 2)
    progress("1k x 2k")
    small_auto = measure(1_000, 2_000, "auto", args.repeats)
    small_dense = measure(1_000, 2_000, "dense", args.repeats)
    full_dense = measure_full_dense(1_000, 2_000, args.repeats)
    progress("10k x 20k")
    large = measure(10_000, 20_000, "sparse", args.repeats)
    progress("dense/sparse crossover")
    results = {
        "machine": machine(),
        "measured_at": now_iso(),
        "repeats": args.repeats,
        "load_average_1m_before": load_before,
        "goals_ms": {"1k_x_2k": 20, "10k_x_20k_sparse": 400},
        "1k_x_2k_auto": small_auto,
        "1k_x_2k_dense_candidates": small_dense,
        "1k_x_2k_dense_all_pairs": full_dense,
        "10k_x_20k_sparse": large,
        "crossover": crossover(args.repeats),
    }
    if not args.no_save:
        merge_results(RESULTS_NAME, "solver", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

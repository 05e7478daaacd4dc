"""Time the governance tallies on 100,000 ballots (goal: instant runoff over 5 alternatives
<= 1 s).

    python -m bench.governance_tally [--ballots N] [--runs R] [--seed S]

Ballots are drawn with a fixed seed. A ranked ballot orders the 5 alternatives by
Plackett-Luce sampling with weights 5:4:3:2:1 (so the count is not a uniform tie) and is
cut after 1 to 5 choices; 2 % are empty (abstentions). Each figure is the median of
``--runs`` runs after one warm-up, timed with ``time.perf_counter``; nothing touches a
database. Measured:

- ``irv``: ``voting.instant_runoff`` on the rankings in memory (the goal).
- ``irv_verify``: what ``python -m governance.verify`` does with a publication of that
  many ranked ballots, 5 % of them a member's second ballot: parse and check every
  canonical ballot text, recompute the hash chain, keep the last ballot of each voter,
  count the runoff.
- ``yes_no``: ``voting.tally_yes_no`` on as many votes (60 % yes, 30 % no, 10 % abstain),
  and ``yes_no_recount``: ``voting.recount`` on as many ballot objects, 5 % of them
  second ballots.
- ``median_decimal`` / ``median_int``: ``voting.median_value`` on as many commission
  rates (Decimal) and base fares (int).

Results go to bench/results/governance.json (section ``tally``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bench.harness import machine, merge_results, now_iso, progress
from governance.constitution import CONSTITUTION
from governance.voting import (
    Ballot,
    ChainedBallot,
    RankedBallot,
    RankedForm,
    YesNoBallot,
    YesNoChoice,
    YesNoForm,
    chain_append,
    chain_genesis,
    instant_runoff,
    median_value,
    parse_ballot,
    recount,
    tally_yes_no,
    verify_chain,
)

GOAL_SECONDS = 1.0
ALTERNATIVES = ("a", "b", "c", "d", "e")
WEIGHTS = (5.0, 4.0, 3.0, 2.0, 1.0)
PROPOSAL = "0196f1c2-0000-7000-8000-00000000be4c"
ORDINARY = CONSTITUTION.rule_class("ordinary")
REVOTE_SHARE = 0.05


def ranking(rng: random.Random) -> tuple[str, ...]:
    if rng.random() < 0.02:
        return ()
    left = list(zip(ALTERNATIVES, WEIGHTS, strict=True))
    order: list[str] = []
    while left:
        pick = rng.choices(range(len(left)), weights=[w for _, w in left])[0]
        order.append(left.pop(pick)[0])
    return tuple(order[: rng.randint(1, len(order))])


def voters(rng: random.Random, ballots: int) -> list[int]:
    """Who cast each ballot: a fresh voter, or (REVOTE_SHARE of the time) one who voted."""
    cast: list[int] = []
    for i in range(ballots):
        again = cast and rng.random() < REVOTE_SHARE
        cast.append(rng.choice(cast) if again else i)
    return cast


def timed(runs: int, work: Callable[[], object]) -> list[float]:
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "seconds": round(statistics.median(times), 4),
        "runs_seconds": [round(t, 4) for t in times],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ballots", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20250601)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    n = args.ballots

    progress(f"drawing {n:,} ranked ballots")
    rankings = [ranking(rng) for _ in range(n)]
    progress("instant runoff")
    irv_times = timed(
        args.runs, lambda: instant_runoff(rankings, ALTERNATIVES, tie_break_seed=PROPOSAL)
    )
    irv = instant_runoff(rankings, ALTERNATIVES, tie_break_seed=PROPOSAL)

    progress("chaining ranked ballots for the verify path")
    genesis = chain_genesis("0" * 64)
    cast_by = voters(rng, n)
    chain: list[ChainedBallot] = []
    previous = genesis
    for i, (voter, order) in enumerate(zip(cast_by, rankings, strict=True), start=1):
        ballot = RankedBallot(PROPOSAL, f"{voter:064x}", f"{i:032x}", order)
        chain.append(chain_append(previous, i, ballot))
        previous = chain[-1].hash
    form = RankedForm(ALTERNATIVES, PROPOSAL)

    def verify_path() -> None:
        if not verify_chain(chain, genesis=genesis, head=previous).valid:
            raise RuntimeError("the benchmark's own chain does not verify")
        parsed: list[Ballot] = [
            parse_ballot(link.ballot_json, form, proposal_id=PROPOSAL) for link in chain
        ]
        recount(parsed, form, proposal_id=PROPOSAL, electorate_size=n, rule=ORDINARY)

    progress("verify path (parse, chain, recount)")
    verify_times = timed(max(1, args.runs // 2), verify_path)

    progress("yes / no")
    choices: list[YesNoChoice] = rng.choices(["yes", "no", "abstain"], weights=[6, 3, 1], k=n)
    yes_no_times = timed(args.runs, lambda: tally_yes_no(choices, n, ORDINARY))
    yes_no_ballots: list[Ballot] = [
        YesNoBallot(PROPOSAL, f"{voter:064x}", f"{i:032x}", choice)
        for i, (voter, choice) in enumerate(zip(cast_by, choices, strict=True))
    ]
    recount_times = timed(
        args.runs,
        lambda: recount(
            yes_no_ballots, YesNoForm(), proposal_id=PROPOSAL, electorate_size=n, rule=ORDINARY
        ),
    )

    progress("median")
    commission = CONSTITUTION.spec("fare.commission_rate")
    rates = [Decimal(rng.randint(0, 300)) / 1000 for _ in range(n)]
    decimal_times = timed(
        args.runs, lambda: median_value(rates, commission, current=Decimal("0.15"))
    )
    base_fare = CONSTITUTION.spec("fare.base_fare")
    fares = [rng.randint(0, 2_000) for _ in range(n)]
    int_times = timed(args.runs, lambda: median_value(fares, base_fare, current=250))

    irv_seconds = statistics.median(irv_times)
    results: dict[str, Any] = {
        "ballots": n,
        "alternatives": len(ALTERNATIVES),
        "seed": args.seed,
        "goal_seconds": GOAL_SECONDS,
        "goal_met": irv_seconds <= GOAL_SECONDS,
        "irv": summary(irv_times)
        | {
            "rounds": len(irv.rounds),
            "winner": irv.winner,
            "first_round": dict(irv.rounds[0].counts),
        },
        "irv_verify": summary(verify_times) | {"revote_share": REVOTE_SHARE},
        "yes_no": summary(yes_no_times),
        "yes_no_recount": summary(recount_times) | {"revote_share": REVOTE_SHARE},
        "median_decimal": summary(decimal_times),
        "median_int": summary(int_times),
        "machine": machine(),
        "date": now_iso(),
    }
    path = merge_results("governance", "tally", results)
    progress(f"results written to {path}")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

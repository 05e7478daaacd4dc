"""``make bench``: every benchmark, one after the other, each in its own process.

Each writes its figures into bench/results/*.json; docs/benchmarks.md summarises them.
A benchmark that misses its goal still counts as run (its JSON says so); one that fails
(a crash, or a correctness check) makes the whole run fail.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

from bench.harness import progress

BENCHMARKS: list[tuple[str, list[str]]] = [
    ("bench.dispatch_solver", []),
    ("bench.dispatch_replay", ["--suite"]),
    ("bench.dispatch_live", []),
    ("bench.dispatch_ingest", []),
    ("bench.dispatch_offers", []),
    ("bench.payments_settle", []),
    ("bench.ledger_verify", []),
    ("bench.governance_tally", []),
    ("bench.governance_impact", []),
    ("bench.governance_votes", []),
]


def main() -> int:
    failed: list[str] = []
    for module, args in BENCHMARKS:
        if importlib.util.find_spec(module) is None:
            progress(f"{module}: not present, skipped")
            continue
        progress(f"{module} {' '.join(args)}")
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", module, *args])
        progress(f"{module}: exit {code} after {time.monotonic() - started:.0f} s")
        if code != 0:
            failed.append(module)
    if failed:
        progress(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

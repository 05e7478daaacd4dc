"""Recount a closed vote from its publication, as any member can.

    python -m governance.verify published.json [--receipt HASH] [--json]

The publication (``build_publication``) is one JSON file: the frozen proposal document,
its hash, the electorate's size, every ballot of the chain in order with its links, the
chain's genesis and head, and the declared result. ``verify_publication`` checks, each
independently: the format, the proposal hash, the genesis, the chain (every link and the
head), that every ballot is canonical and answers the question, that no more voters were
counted than the electorate holds, and that a recount gives the declared result. Exit
status: 0 all checks pass, 1 a check fails (or the receipt is not found), 2 the file
cannot be read as a publication. docs/governance.md describes the same steps by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.constitution import JsonValue, canonical_json, rule_from_json
from governance.errors import BallotInvalid
from governance.voting import (
    Ballot,
    ChainedBallot,
    Outcome,
    chain_genesis,
    form_from_json,
    last_vote_counts,
    outcome_json,
    parse_ballot,
    proposal_hash,
    recount,
    verify_chain,
)

PUBLICATION_FORMAT = "ridecoop-ballots-publication/1"


class PublicationUnreadable(ValueError):
    """The file is not a publication this verifier can read."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    proposal_id: str
    checks: tuple[Check, ...]
    recounted: dict[str, JsonValue] | None

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def build_publication(
    *,
    proposal: Mapping[str, JsonValue],
    electorate_size: int,
    chain: Sequence[ChainedBallot],
    outcome: Outcome,
) -> dict[str, JsonValue]:
    """The file published at close. ``proposal`` is ``voting.proposal_document``;
    ``chain`` every ballot in position order, superseded ones included."""
    digest = proposal_hash(proposal)
    genesis = chain_genesis(digest)
    return {
        "format": PUBLICATION_FORMAT,
        "proposal": proposal,
        "proposal_hash": digest,
        "electorate_size": electorate_size,
        "chain": {
            "genesis": genesis,
            "head": chain[-1].hash if chain else genesis,
            "length": len(chain),
        },
        "ballots": [
            {
                "position": link.position,
                "ballot": link.ballot_json,
                "prev_hash": link.prev_hash,
                "hash": link.hash,
            }
            for link in chain
        ],
        "result": outcome_json(outcome),
    }


def read_publication(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublicationUnreadable(f"{path}: {exc}") from exc
    if not isinstance(document, dict):
        raise PublicationUnreadable(f"{path}: not a JSON object")
    return document


def _chain_of(document: Mapping[str, Any]) -> list[ChainedBallot]:
    try:
        return [
            ChainedBallot(
                position=int(item["position"]),
                ballot_json=str(item["ballot"]),
                prev_hash=str(item["prev_hash"]),
                hash=str(item["hash"]),
            )
            for item in document["ballots"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise PublicationUnreadable(f"the ballots list is malformed: {exc!r}") from exc


def verify_publication(document: Mapping[str, Any]) -> Report:
    """Every check of the module docstring, on a parsed publication. Raises
    ``PublicationUnreadable`` when the parts needed to check anything are missing."""
    try:
        proposal = document["proposal"]
        proposal_id = str(proposal["id"])
        form = form_from_json(proposal["question"])
        rule = rule_from_json(proposal["rule_class"])
        electorate_size = int(document["electorate_size"])
        published_head = str(document["chain"]["head"])
        published_genesis = str(document["chain"]["genesis"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PublicationUnreadable(f"a required part is missing or malformed: {exc!r}") from exc
    chain = _chain_of(document)
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, ok, detail))

    fmt = document.get("format")
    check("format", fmt == PUBLICATION_FORMAT, f"{fmt!r}")
    digest = proposal_hash(proposal)
    check(
        "proposal hash",
        digest == document.get("proposal_hash"),
        f"sha256 of the proposal's canonical JSON is {digest}",
    )
    genesis = chain_genesis(digest)
    check("chain genesis", genesis == published_genesis, genesis)
    verification = verify_chain(chain, genesis=genesis, head=published_head)
    problems = "; ".join(
        f"position {p.position}: {p.reason}" if p.position else p.reason
        for p in verification.problems[:5]
    )
    check(
        "hash chain",
        verification.valid,
        f"{verification.length} ballots, head {verification.computed_head}"
        + (f" ({problems})" if problems else ""),
    )
    ballots: list[Ballot] = []
    refused: list[str] = []
    for link in chain:
        try:
            ballots.append(parse_ballot(link.ballot_json, form, proposal_id=proposal_id))
        except BallotInvalid as exc:
            refused.append(f"position {link.position}: {exc.detail}")
    check(
        "ballots",
        not refused,
        f"{len(ballots)} well-formed" + (f"; refused {'; '.join(refused[:5])}" if refused else ""),
    )
    counted = len(last_vote_counts(ballots))
    check(
        "electorate",
        counted <= electorate_size,
        f"{counted} voters counted of an electorate of {electorate_size}",
    )
    recounted: dict[str, JsonValue] | None = None
    if refused:
        check("result", False, "not recounted: some ballots are refused")
    else:
        outcome = recount(
            ballots, form, proposal_id=proposal_id, electorate_size=electorate_size, rule=rule
        )
        recounted = outcome_json(outcome)
        declared = document.get("result")
        same = isinstance(declared, dict) and canonical_json(declared) == canonical_json(recounted)
        check("result", same, _summary(recounted) if same else _difference(declared, recounted))
    return Report(proposal_id, tuple(checks), recounted)


def _summary(result: Mapping[str, JsonValue]) -> str:
    verdict = "passed" if result.get("passed") else "failed"
    if result.get("kind") == "ranked":
        return f"{verdict}; winner {result.get('winner')}"
    if result.get("kind") == "median":
        return f"{verdict}; {result.get('key')} {result.get('current')} -> {result.get('value')}"
    counts = ", ".join(f"{vote} {result.get(vote)}" for vote in ("yes", "no", "abstain"))
    return f"{verdict}; {counts}"


def _difference(declared: object, recounted: Mapping[str, JsonValue]) -> str:
    if not isinstance(declared, dict):
        return "no declared result to compare with"
    keys = sorted(set(declared) | set(recounted))
    differing = [
        k for k in keys if canonical_json(declared.get(k)) != canonical_json(recounted.get(k))
    ]
    shown = ", ".join(
        f"{k}: declared {canonical_json(declared.get(k))}, "
        f"recounted {canonical_json(recounted.get(k))}"
        for k in differing[:3]
    )
    return f"the recount differs ({shown})"


def find_receipt(document: Mapping[str, Any], receipt: str) -> Check:
    """Where the ballot with ``receipt`` is, and whether it is the one counted for its
    voter (a later ballot of the same voter replaces it)."""
    chain = _chain_of(document)
    for link in chain:
        if link.hash == receipt:
            token = _token_of(link.ballot_json)
            later = [
                other.position
                for other in chain
                if other.position > link.position and _token_of(other.ballot_json) == token
            ]
            if later:
                detail = f"position {link.position}, replaced by the ballot at {later[-1]}"
            else:
                detail = f"position {link.position}, counted: {link.ballot_json}"
            return Check("receipt", True, detail)
    return Check("receipt", False, f"no ballot has the receipt {receipt}")


def _token_of(ballot_text: str) -> object:
    try:
        content = json.loads(ballot_text)
    except json.JSONDecodeError:
        return None
    return content.get("voter_token") if isinstance(content, dict) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m governance.verify",
        description="Recount a closed vote and check its ballot chain from the published file.",
    )
    parser.add_argument("publication", type=Path, help="the published JSON file")
    parser.add_argument("--receipt", help="also find the ballot with this receipt")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    arguments = parser.parse_args(argv)
    try:
        document = read_publication(arguments.publication)
        report = verify_publication(document)
        found = find_receipt(document, arguments.receipt) if arguments.receipt else None
    except PublicationUnreadable as exc:
        print(f"cannot read the publication: {exc}", file=sys.stderr)
        return 2
    checks = (*report.checks, found) if found else report.checks
    ok = all(c.ok for c in checks)
    if arguments.json:
        body = {
            "proposal_id": report.proposal_id,
            "ok": ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
            "recounted": report.recounted,
        }
        print(json.dumps(body, indent=2))
    else:
        print(f"proposal {report.proposal_id}")
        for c in checks:
            print(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        print("verified" if ok else "NOT verified")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from governance.constitution import CONSTITUTION, ParameterChange, RuleClass
from governance.verify import build_publication, find_receipt, main, verify_publication
from governance.voting import (
    Alternative,
    Ballot,
    ChainedBallot,
    MedianBallot,
    MedianQuestion,
    Question,
    RankedBallot,
    RankedQuestion,
    YesNoBallot,
    YesNoChoice,
    YesNoQuestion,
    ballot_json,
    chain_append,
    chain_genesis,
    chain_link,
    form_of,
    proposal_document,
    proposal_hash,
    recount,
)

ROOT = Path(__file__).parent.parent.parent
PROPOSAL = "0196f1c2-0000-7000-8000-000000000001"
ORDINARY = CONSTITUTION.rule_class("ordinary")
FUNDAMENTAL = CONSTITUTION.rule_class("fundamental")
RAISE_BASE_FARE = YesNoQuestion((ParameterChange("fare.base_fare", 250, 300),))


def token(voter: int) -> str:
    return f"{voter:064x}"


def nonce(n: int) -> str:
    return f"{n:032x}"


def yes_no(voter: int, vote: YesNoChoice, n: int) -> YesNoBallot:
    return YesNoBallot(PROPOSAL, token(voter), nonce(n), vote)


def chain_of(ballots: Sequence[Ballot], genesis: str) -> list[ChainedBallot]:
    chain: list[ChainedBallot] = []
    for ballot in ballots:
        chain.append(chain_append(chain[-1].hash if chain else genesis, len(chain) + 1, ballot))
    return chain


def publish(
    question: Question,
    ballots: Sequence[Ballot],
    *,
    electorate_size: int = 10,
    rule: RuleClass = ORDINARY,
) -> dict[str, Any]:
    document = proposal_document(
        proposal_id=PROPOSAL,
        title="Raise the base fare",
        text="Fuel costs more — a lot more.",
        question=question,
        rule=rule,
    )
    chain = chain_of(ballots, chain_genesis(proposal_hash(document)))
    outcome = recount(
        ballots,
        form_of(question),
        proposal_id=PROPOSAL,
        electorate_size=electorate_size,
        rule=rule,
    )
    published = build_publication(
        proposal=document, electorate_size=electorate_size, chain=chain, outcome=outcome
    )
    result: dict[str, Any] = json.loads(json.dumps(published))
    return result


YES_NO_BALLOTS: list[Ballot] = [
    yes_no(1, "yes", 1),
    yes_no(2, "no", 2),
    yes_no(3, "abstain", 3),
    yes_no(1, "no", 4),
    yes_no(4, "yes", 5),
    yes_no(5, "yes", 6),
]


def failed(document: dict[str, Any]) -> set[str]:
    return {check.name for check in verify_publication(document).checks if not check.ok}


def relink(document: dict[str, Any]) -> None:
    """What a forger who recomputes every link and the head after a change publishes."""
    previous = document["chain"]["genesis"]
    for item in document["ballots"]:
        item["prev_hash"] = previous
        item["hash"] = previous = chain_link(previous, item["ballot"])
    document["chain"]["head"] = previous


def test_a_yes_no_publication_verifies() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    report = verify_publication(document)
    assert report.ok, report.checks
    assert [c.name for c in report.checks] == [
        "format",
        "proposal hash",
        "chain genesis",
        "hash chain",
        "ballots",
        "electorate",
        "result",
    ]
    assert report.recounted is not None
    assert (report.recounted["yes"], report.recounted["no"], report.recounted["abstain"]) == (
        2,
        2,
        1,
    )


def test_a_ranked_publication_verifies() -> None:
    question = RankedQuestion(
        (
            Alternative("keep", "Keep the commission", ()),
            Alternative(
                "lower",
                "Lower it to 13 %",
                (ParameterChange("fare.commission_rate", Decimal("0.15"), Decimal("0.13")),),
            ),
        ),
        tie_break_seed=PROPOSAL,
    )
    ballots: list[Ballot] = [
        RankedBallot(PROPOSAL, token(i), nonce(i), ("lower", "keep") if i % 3 else ("keep",))
        for i in range(1, 10)
    ]
    document = publish(question, ballots, rule=FUNDAMENTAL)
    assert verify_publication(document).ok
    assert document["result"]["winner"] == "lower"
    assert document["result"]["passed"]


def test_a_median_publication_verifies() -> None:
    question = MedianQuestion(CONSTITUTION.spec("fare.commission_rate"), Decimal("0.15"))
    values = [Decimal("0.12"), Decimal("0.13"), Decimal("0.14"), None]
    ballots: list[Ballot] = [
        MedianBallot(PROPOSAL, token(i), nonce(i), value) for i, value in enumerate(values, 1)
    ]
    document = publish(question, ballots, electorate_size=8, rule=FUNDAMENTAL)
    assert verify_publication(document).ok
    assert document["result"]["value"] == "0.13"


def test_a_changed_ballot_breaks_the_chain() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    item = document["ballots"][1]
    item["ballot"] = item["ballot"].replace('"no"', '"yes"')
    assert failed(document) == {"hash chain", "result"}


def test_a_removed_ballot_breaks_the_chain() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    del document["ballots"][1]
    assert "hash chain" in failed(document)


def test_a_changed_result_is_found() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    document["result"]["passed"] = not document["result"]["passed"]
    report = verify_publication(document)
    assert {c.name for c in report.checks if not c.ok} == {"result"}
    assert "passed: declared" in report.checks[-1].detail


def test_a_changed_proposal_text_is_found() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    document["proposal"]["text"] = "Fuel costs less."
    assert {"proposal hash", "chain genesis", "hash chain"} <= failed(document)


def test_more_voters_than_the_electorate_is_found() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS, electorate_size=4)
    assert failed(document) == {"electorate"}


def test_a_ballot_that_is_not_canonical_is_refused_even_when_relinked() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    document["ballots"][0]["ballot"] = document["ballots"][0]["ballot"].replace(",", ", ")
    relink(document)
    assert failed(document) == {"ballots", "result"}


def test_a_rewritten_history_loses_the_receipts_after_the_change() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    receipt_of_last = document["ballots"][-1]["hash"]
    assert find_receipt(document, receipt_of_last).ok
    document["ballots"][1]["ballot"] = ballot_json(yes_no(2, "yes", 2))
    relink(document)
    document["result"] = verify_publication(document).recounted
    # Consistent in itself: only the voters' receipts can tell.
    assert verify_publication(document).ok
    assert not find_receipt(document, receipt_of_last).ok


def test_a_receipt_shows_a_replaced_ballot() -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    first_of_voter_1 = document["ballots"][0]["hash"]
    found = find_receipt(document, first_of_voter_1)
    assert found.ok
    assert found.detail == "position 1, replaced by the ballot at 4"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def test_main_says_verified_and_exits_0(tmp_path: Path) -> None:
    path = _write(tmp_path / "published.json", publish(RAISE_BASE_FARE, YES_NO_BALLOTS))
    code, out, _ = _run([str(path)])
    assert code == 0
    assert out.splitlines()[-1] == "verified"
    assert "ok   result: passed; yes 2, no 2, abstain 1" not in out  # 2 yes vs 2 no fails
    assert "ok   result: failed; yes 2, no 2, abstain 1" in out


def test_main_exits_1_when_a_check_fails(tmp_path: Path) -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    document["result"]["yes"] = 5
    code, out, _ = _run([str(_write(tmp_path / "published.json", document))])
    assert code == 1
    assert "FAIL result" in out
    assert out.splitlines()[-1] == "NOT verified"


def test_main_exits_2_for_a_file_that_is_no_publication(tmp_path: Path) -> None:
    path = tmp_path / "published.json"
    path.write_text("[1, 2]")
    assert _run([str(path)])[0] == 2
    path.write_text('{"proposal": {}}')
    assert _run([str(path)])[0] == 2
    assert _run([str(tmp_path / "missing.json")])[0] == 2


def test_main_prints_json_and_finds_a_receipt(tmp_path: Path) -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    path = _write(tmp_path / "published.json", document)
    code, out, _ = _run([str(path), "--json", "--receipt", document["ballots"][4]["hash"]])
    body = json.loads(out)
    assert code == 0
    assert body["ok"]
    assert body["checks"][-1]["name"] == "receipt"
    assert body["checks"][-1]["detail"].startswith("position 5, counted")


def test_main_exits_1_for_an_unknown_receipt(tmp_path: Path) -> None:
    path = _write(tmp_path / "published.json", publish(RAISE_BASE_FARE, YES_NO_BALLOTS))
    code, out, _ = _run([str(path), "--receipt", "0" * 64])
    assert code == 1
    assert "FAIL receipt" in out


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    path = _write(tmp_path / "published.json", publish(RAISE_BASE_FARE, YES_NO_BALLOTS))
    completed = subprocess.run(
        [sys.executable, "-m", "governance.verify", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "verified"


def _by_hand_snippet() -> str:
    text = (ROOT / "docs" / "governance.md").read_text()
    section = text.split("### Verifying by hand", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert found is not None
    return found.group(1)


def _run_snippet(directory: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(directory)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_by_hand_snippet(), "docs/governance.md", "exec"), {})
    return out.getvalue()


def test_the_documented_procedure_recounts_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "published.json", publish(RAISE_BASE_FARE, YES_NO_BALLOTS))
    printed = _run_snippet(tmp_path, monkeypatch)
    assert printed == "6 ballots chained, 5 counted: {'abstain': 1, 'no': 2, 'yes': 2}\n"


def test_the_documented_procedure_finds_a_changed_ballot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = publish(RAISE_BASE_FARE, YES_NO_BALLOTS)
    tampered = copy.deepcopy(document)
    tampered["ballots"][2]["ballot"] = ballot_json(yes_no(3, "yes", 3))
    _write(tmp_path / "published.json", tampered)
    with pytest.raises(AssertionError, match="ballot 3 was changed"):
        _run_snippet(tmp_path, monkeypatch)

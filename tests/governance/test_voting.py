from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from governance.constitution import (
    CONSTITUTION,
    ParameterChange,
    ParameterSpec,
    RuleClass,
    Threshold,
)
from governance.errors import BallotInvalid, ParameterOutOfBounds
from governance.voting import (
    Ballot,
    ChainedBallot,
    MedianBallot,
    MedianForm,
    RankedBallot,
    RankedForm,
    YesNoBallot,
    YesNoChoice,
    YesNoForm,
    YesNoQuestion,
    ballot_json,
    chain_append,
    chain_genesis,
    chain_link,
    check_ballot,
    decide_median,
    decide_ranked,
    instant_runoff,
    last_vote_counts,
    median_value,
    parse_ballot,
    proposal_document,
    proposal_hash,
    quorum_needed,
    receipt,
    recount,
    tally_yes_no,
    tie_break_hash,
    verify_chain,
    voter_token,
)

PROPOSAL = "0196f1c2-0000-7000-8000-000000000001"
ALTERNATIVES = ("a", "b", "c", "d", "e")
ORDINARY = CONSTITUTION.rule_class("ordinary")
FUNDAMENTAL = CONSTITUTION.rule_class("fundamental")
BASE_FARE = CONSTITUTION.spec("fare.base_fare")
COMMISSION = CONSTITUTION.spec("fare.commission_rate")


def token(voter: int) -> str:
    return f"{voter:064x}"


def nonce(n: int) -> str:
    return f"{n:032x}"


def yes_no(voter: int, vote: YesNoChoice, n: int = 0) -> YesNoBallot:
    return YesNoBallot(PROPOSAL, token(voter), nonce(n or voter), vote)


def ranked(voter: int, *ranking: str) -> RankedBallot:
    return RankedBallot(PROPOSAL, token(voter), nonce(voter), ranking)


def rule(threshold: Threshold, quorum: str = "0.25") -> RuleClass:
    return dataclasses.replace(ORDINARY, threshold=threshold, quorum=Decimal(quorum))


def votes(yes: int, no: int, abstain: int = 0) -> list[YesNoChoice]:
    counts: dict[YesNoChoice, int] = {"yes": yes, "no": no, "abstain": abstain}
    return [vote for vote, count in counts.items() for _ in range(count)]


def chain_of(ballots: Sequence[Ballot], genesis: str) -> list[ChainedBallot]:
    chain: list[ChainedBallot] = []
    for ballot in ballots:
        chain.append(chain_append(chain[-1].hash if chain else genesis, len(chain) + 1, ballot))
    return chain


# -- Quorum and yes / no -------------------------------------------------------------------


def test_reaching_the_quorum_exactly_meets_it() -> None:
    assert quorum_needed(ORDINARY, 100) == 25
    assert tally_yes_no(votes(20, 5), 100, ORDINARY).quorum_met
    assert not tally_yes_no(votes(20, 4), 100, ORDINARY).quorum_met


def test_the_quorum_rounds_up() -> None:
    assert quorum_needed(ORDINARY, 101) == 26
    assert quorum_needed(ORDINARY, 10) == 3


def test_abstentions_count_towards_quorum_only() -> None:
    result = tally_yes_no(votes(3, 2, abstain=20), 100, ORDINARY)
    assert result.quorum_met
    assert result.cast == 25
    assert result.passed
    assert not tally_yes_no(votes(3, 3, abstain=20), 100, ORDINARY).passed


def test_an_empty_electorate_never_meets_quorum() -> None:
    result = tally_yes_no([], 0, ORDINARY)
    assert not result.quorum_met
    assert not result.passed


def test_a_simple_majority_tie_fails() -> None:
    assert not tally_yes_no(votes(50, 50), 100, rule("simple_majority")).passed
    assert tally_yes_no(votes(51, 50), 101, rule("simple_majority")).passed


def test_two_thirds_is_met_at_exactly_two_thirds() -> None:
    assert tally_yes_no(votes(200, 100), 300, FUNDAMENTAL).passed
    assert not tally_yes_no(votes(199, 100), 299, FUNDAMENTAL).passed


def test_two_thirds_of_only_abstentions_fails() -> None:
    assert not tally_yes_no(votes(0, 0, abstain=10), 10, FUNDAMENTAL).passed


@given(
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(1, 200),
    st.sampled_from(["simple_majority", "two_thirds"]),
    st.sampled_from(["0.1", "0.25", "0.333", "0.5", "1"]),
)
def test_yes_no_matches_the_documented_inequalities(
    yes: int, no: int, abstain: int, electorate: int, threshold: Threshold, quorum: str
) -> None:
    result = tally_yes_no(votes(yes, no, abstain), electorate, rule(threshold, quorum))
    cast = yes + no + abstain
    assert result.quorum_met == (Fraction(cast, electorate) >= Fraction(Decimal(quorum)))
    share = Fraction(yes, yes + no) if yes + no else Fraction(0)
    if threshold == "simple_majority":
        assert result.threshold_met == (share > Fraction(1, 2))
    else:
        assert result.threshold_met == (share >= Fraction(2, 3))
    assert result.passed == (result.quorum_met and result.threshold_met)


def test_an_unknown_vote_is_refused() -> None:
    with pytest.raises(BallotInvalid):
        tally_yes_no(["yes", "maybe"], 10, ORDINARY)  # type: ignore[list-item]


def test_the_last_vote_of_each_voter_counts() -> None:
    ballots = [yes_no(1, "yes", 1), yes_no(2, "no", 2), yes_no(1, "no", 3), yes_no(3, "abstain", 4)]
    counted = last_vote_counts(ballots)
    assert counted == [ballots[1], ballots[2], ballots[3]]


# -- Instant runoff ------------------------------------------------------------------------


def test_votes_move_from_the_eliminated_alternative() -> None:
    rankings = [("a",)] * 4 + [("b", "a")] * 2 + [("c", "b")] * 3
    result = instant_runoff(rankings, ["a", "b", "c"], tie_break_seed=PROPOSAL)
    assert [dict(r.counts) for r in result.rounds] == [{"a": 4, "b": 2, "c": 3}, {"a": 6, "c": 3}]
    assert result.rounds[0].eliminated == "b"
    assert result.winner == "a"


def test_ballots_with_no_alternative_left_are_exhausted() -> None:
    rankings = [("a",)] * 3 + [("b",)] * 2 + [("c",)] * 1 + [()] * 2
    result = instant_runoff(rankings, ["a", "b", "c"], tie_break_seed=PROPOSAL)
    assert result.ballots == 8
    assert [r.exhausted for r in result.rounds] == [2, 3]
    assert result.winner == "a"


def test_a_count_without_any_preference_has_no_winner() -> None:
    result = instant_runoff([(), ()], ["a", "b"], tie_break_seed=PROPOSAL)
    assert result.winner is None
    assert not decide_ranked(result, 2, ORDINARY).passed


def test_an_elimination_tie_goes_to_the_earlier_rounds() -> None:
    # Round 1: a 3, b 2, c 4, d 1; d is out and its ballot moves to b.
    rankings = [("a",)] * 3 + [("b",)] * 2 + [("c",)] * 4 + [("d", "b")] * 1
    result = instant_runoff(rankings, ["a", "b", "c", "d"], tie_break_seed=PROPOSAL)
    # Round 2: a 3, b 3, c 4: a and b tie, and b had fewer in round 1 (2 < 3).
    assert dict(result.rounds[1].counts) == {"a": 3, "b": 3, "c": 4}
    assert result.rounds[1].eliminated == "b"
    assert result.rounds[1].tie_break == "earlier_rounds"


def test_earlier_rounds_are_compared_from_the_first_round_on() -> None:
    # Round 1: a 4, b 5, c 10, d 2, e 3 (d out, to a). Round 2: a 6, b 5, c 10, e 3 (e out:
    # one to a, two to b). Round 3: a 7, b 7, c 10: a had fewer in round 1, more in round 2.
    rankings = (
        [("a",)] * 4
        + [("b",)] * 5
        + [("c",)] * 10
        + [("d", "a")] * 2
        + [("e", "a")] * 1
        + [("e", "b")] * 2
    )
    result = instant_runoff(rankings, ALTERNATIVES, tie_break_seed=PROPOSAL)
    assert dict(result.rounds[2].counts) == {"a": 7, "b": 7, "c": 10}
    assert result.rounds[2].eliminated == "a"
    assert result.rounds[2].tie_break == "earlier_rounds"


def test_a_tie_in_every_round_goes_to_the_smallest_hash() -> None:
    rankings = [("a",), ("b",), ("c",)]
    result = instant_runoff(rankings, ["a", "b", "c"], tie_break_seed=PROPOSAL)
    expected = min("abc", key=lambda a: hashlib.sha256(f"{PROPOSAL}\n{a}".encode()).hexdigest())
    assert result.rounds[0].eliminated == expected
    assert result.rounds[0].tie_break == "hash"
    assert tie_break_hash(PROPOSAL, "a") == hashlib.sha256(f"{PROPOSAL}\na".encode()).hexdigest()


def test_a_tied_final_round_is_decided_but_does_not_pass() -> None:
    result = instant_runoff([("a",), ("b",)], ["a", "b"], tie_break_seed=PROPOSAL)
    assert result.winner is not None
    assert len(result.rounds) == 1
    assert result.rounds[0].tie_break == "hash"
    decided = decide_ranked(result, 2, ORDINARY)
    assert decided.quorum_met
    assert not decided.threshold_met


def test_two_thirds_is_measured_in_the_final_round() -> None:
    rankings = [("a",)] * 5 + [("b",)] * 3 + [("c", "a")] * 1
    result = instant_runoff(rankings, ["a", "b", "c"], tie_break_seed=PROPOSAL)
    assert dict(result.final_round.counts) == {"a": 6, "b": 3}
    assert decide_ranked(result, 9, FUNDAMENTAL).passed
    weaker = instant_runoff([*rankings[:-1], ("c", "b")], ["a", "b", "c"], tie_break_seed=PROPOSAL)
    assert weaker.winner == "a"
    assert not decide_ranked(weaker, 9, FUNDAMENTAL).passed


def test_a_ranking_naming_an_unknown_alternative_is_refused() -> None:
    with pytest.raises(BallotInvalid):
        instant_runoff([("a", "z")], ["a", "b"], tie_break_seed=PROPOSAL)


def test_a_ranking_naming_an_alternative_twice_is_refused() -> None:
    with pytest.raises(BallotInvalid):
        instant_runoff([("a", "b", "a")], ["a", "b"], tie_break_seed=PROPOSAL)


def reference_irv(
    rankings: Sequence[Sequence[str]], alternatives: Sequence[str], seed: str
) -> tuple[list[dict[str, int]], str | None]:
    """The documented rules, recounting every ballot every round."""
    standing = list(alternatives)
    history: list[dict[str, int]] = []
    while True:
        counts = dict.fromkeys(standing, 0)
        for ranking in rankings:
            top = next((a for a in ranking if a in counts), None)
            if top is not None:
                counts[top] += 1
        history.append(counts)
        if sum(counts.values()) == 0:
            return history, None
        if len(standing) <= 2 and len(set(counts.values())) == len(standing):
            return history, max(counts, key=lambda a: counts[a])
        tied = [a for a in standing if counts[a] == min(counts.values())]
        for earlier in history[:-1]:
            if len(tied) == 1:
                break
            tied = [a for a in tied if earlier[a] == min(earlier[b] for b in tied)]
        loser = min(tied, key=lambda a: hashlib.sha256(f"{seed}\n{a}".encode()).hexdigest())
        standing.remove(loser)
        if len(standing) == 1:
            return history, standing[0]


def rankings_of(alternatives: Sequence[str]) -> st.SearchStrategy[list[tuple[str, ...]]]:
    one = st.permutations(alternatives).flatmap(
        lambda order: st.integers(0, len(order)).map(lambda k: tuple(order[:k]))
    )
    return st.lists(one, max_size=40)


@given(rankings_of(ALTERNATIVES[:4]), st.text(max_size=8))
def test_instant_runoff_follows_the_documented_rules(
    rankings: list[tuple[str, ...]], seed: str
) -> None:
    result = instant_runoff(rankings, ALTERNATIVES[:4], tie_break_seed=seed)
    history, winner = reference_irv(rankings, ALTERNATIVES[:4], seed)
    assert [dict(r.counts) for r in result.rounds] == history
    assert result.winner == winner


@given(rankings_of(ALTERNATIVES))
def test_the_winner_holds_a_majority_of_the_last_rounds_live_ballots(
    rankings: list[tuple[str, ...]],
) -> None:
    result = instant_runoff(rankings, ALTERNATIVES, tie_break_seed=PROPOSAL)
    assume(result.winner is not None)
    last = result.final_round
    assert len(last.counts) == 2
    assert 2 * result.winner_votes >= last.active
    if 2 * result.winner_votes == last.active:
        assert last.tie_break is not None
    for r in result.rounds:
        assert r.active + r.exhausted == len(rankings)


@given(rankings_of(ALTERNATIVES), st.randoms(use_true_random=False))
def test_the_order_of_ballots_and_of_alternatives_changes_nothing(
    rankings: list[tuple[str, ...]], rng: random.Random
) -> None:
    result = instant_runoff(rankings, ALTERNATIVES, tie_break_seed=PROPOSAL)
    shuffled_ballots = rankings[:]
    rng.shuffle(shuffled_ballots)
    shuffled_alternatives = list(ALTERNATIVES)
    rng.shuffle(shuffled_alternatives)
    again = instant_runoff(shuffled_ballots, shuffled_alternatives, tie_break_seed=PROPOSAL)
    assert again.winner == result.winner
    assert [r.eliminated for r in again.rounds] == [r.eliminated for r in result.rounds]
    assert [dict(r.counts) for r in again.rounds] == [dict(r.counts) for r in result.rounds]


# -- Median ----------------------------------------------------------------------------------

WIDE = dataclasses.replace(BASE_FARE, max_step=2_000)


def test_an_odd_number_of_values_gives_the_median() -> None:
    assert median_value([200, 300, 260], WIDE, current=250) == 260
    assert median_value([200, 300, 260], WIDE, current=1_000) == 260


@pytest.mark.parametrize(("current", "expected"), [(100, 260), (280, 280), (500, 300)])
def test_an_even_number_of_values_moves_only_as_far_as_the_nearer_middle(
    current: int, expected: int
) -> None:
    assert median_value([200, 260, 300, 320], WIDE, current=current) == expected


def test_two_thirds_widens_the_band() -> None:
    values = list(range(100, 1_000, 100))  # 9 values: band from the 4th to the 6th
    assert median_value(values, WIDE, current=0, threshold="two_thirds") == 400
    assert median_value(values, WIDE, current=0) == 500
    assert median_value(values, WIDE, current=450, threshold="two_thirds") == 450


def test_the_result_moves_at_most_the_max_step() -> None:
    assert median_value([1_000, 1_200, 1_500], BASE_FARE, current=250) == 350
    assert median_value([0, 10], BASE_FARE, current=250) == 150


def test_the_step_edges_are_rounded_onto_the_grid_towards_the_current_value() -> None:
    coarse = dataclasses.replace(COMMISSION, granularity=Decimal("0.01"))
    current = Decimal("0.155")  # from before the grid was coarsened
    assert median_value([Decimal("0.3")], coarse, current=current) == Decimal("0.17")
    assert median_value([Decimal("0")], coarse, current=current) == Decimal("0.14")


def test_the_bounds_win_over_the_step() -> None:
    assert median_value([0], BASE_FARE, current=2_500) == 2_000


def test_no_values_keep_the_current_value() -> None:
    assert median_value([], BASE_FARE, current=250) == 250


def test_decimal_values_give_a_decimal() -> None:
    value = median_value(
        [Decimal("0.14"), Decimal("0.13"), Decimal("0.2")], COMMISSION, current=Decimal("0.15")
    )
    assert value == Decimal("0.14")
    assert isinstance(value, Decimal)


def test_a_value_outside_the_bounds_is_refused() -> None:
    with pytest.raises(ParameterOutOfBounds):
        median_value([2_001], BASE_FARE, current=250)


def test_abstentions_count_towards_quorum_but_not_the_value() -> None:
    form = MedianForm(WIDE, 250)
    result = decide_median([300, None, None, None], form, 16, ORDINARY)
    assert result.quorum_met
    assert (result.value, result.ballots, result.values) == (300, 4, 1)
    assert result.passed


def test_a_median_that_lands_on_the_current_value_fails() -> None:
    result = decide_median([200, 300], MedianForm(WIDE, 250), 4, ORDINARY)
    assert result.quorum_met
    assert result.value == 250
    assert not result.passed


money = st.integers(0, 200).map(lambda n: n * 10)
profiles = st.lists(money, min_size=1, max_size=15)
thresholds = st.sampled_from(["simple_majority", "two_thirds"])


def _spec_with_step(step: int) -> ParameterSpec:
    return dataclasses.replace(BASE_FARE, max_step=step)


@given(profiles, st.data(), money, thresholds, st.sampled_from([10, 100, 2_000]))
def test_no_member_pulls_the_median_towards_their_value_by_misreporting(
    values: list[int], data: st.DataObject, current: int, threshold: Threshold, step: int
) -> None:
    spec = _spec_with_step(step)
    voter = data.draw(st.integers(0, len(values) - 1))
    misreport = data.draw(money)
    peak = values[voter]
    truthful = median_value(values, spec, current=current, threshold=threshold)
    lied = [*values[:voter], misreport, *values[voter + 1 :]]
    outcome = median_value(lied, spec, current=current, threshold=threshold)
    assert isinstance(truthful, int)
    assert isinstance(outcome, int)
    if truthful < peak:
        assert outcome <= truthful
    elif truthful > peak:
        assert outcome >= truthful


@given(profiles, st.data(), money, thresholds)
def test_moving_a_value_within_its_side_of_the_median_changes_nothing(
    values: list[int], data: st.DataObject, current: int, threshold: Threshold
) -> None:
    result = median_value(values, WIDE, current=current, threshold=threshold)
    assert isinstance(result, int)
    voter = data.draw(st.integers(0, len(values) - 1))
    assume(values[voter] != result)
    if values[voter] > result:
        moved = data.draw(st.integers(result // 10 + 1, 200).map(lambda n: n * 10))
    else:
        moved = data.draw(st.integers(0, (result - 1) // 10).map(lambda n: n * 10))
    values[voter] = moved
    assert median_value(values, WIDE, current=current, threshold=threshold) == result


@given(profiles, money, thresholds)
def test_the_median_is_a_value_the_parameter_can_take(
    values: list[int], current: int, threshold: Threshold
) -> None:
    result = median_value(values, BASE_FARE, current=current, threshold=threshold)
    assert isinstance(result, int)
    assert BASE_FARE.minimum is not None
    assert BASE_FARE.maximum is not None
    assert BASE_FARE.minimum <= result <= BASE_FARE.maximum
    assert abs(result - current) <= 100


# -- Ballots ---------------------------------------------------------------------------------


def test_a_ballot_has_one_canonical_text() -> None:
    assert ballot_json(yes_no(1, "yes")) == (
        '{"kind":"yes_no","nonce":"00000000000000000000000000000001",'
        f'"proposal_id":"{PROPOSAL}","version":1,"vote":"yes",'
        '"voter_token":"0000000000000000000000000000000000000000000000000000000000000001"}'
    )


@pytest.mark.parametrize(
    ("ballot", "form"),
    [
        (yes_no(1, "abstain"), YesNoForm()),
        (ranked(2, "c", "a"), RankedForm(ALTERNATIVES, PROPOSAL)),
        (ranked(3), RankedForm(ALTERNATIVES, PROPOSAL)),
        (
            MedianBallot(PROPOSAL, token(4), nonce(4), Decimal("0.14")),
            MedianForm(COMMISSION, Decimal("0.15")),
        ),
        (MedianBallot(PROPOSAL, token(5), nonce(5), None), MedianForm(COMMISSION, Decimal("0.15"))),
    ],
)
def test_a_ballot_reads_back_from_its_text(
    ballot: Ballot, form: YesNoForm | RankedForm | MedianForm
) -> None:
    assert parse_ballot(ballot_json(ballot), form, proposal_id=PROPOSAL) == ballot


def test_a_ballot_text_that_is_not_canonical_is_refused() -> None:
    text = ballot_json(yes_no(1, "yes")).replace(",", ", ")
    with pytest.raises(BallotInvalid, match="canonical"):
        parse_ballot(text, YesNoForm(), proposal_id=PROPOSAL)


def test_a_median_value_with_trailing_zeros_is_not_canonical() -> None:
    ballot = MedianBallot(PROPOSAL, token(1), nonce(1), Decimal("0.14"))
    text = ballot_json(ballot).replace('"0.14"', '"0.140"')
    with pytest.raises(BallotInvalid, match="canonical"):
        parse_ballot(text, MedianForm(COMMISSION, Decimal("0.15")), proposal_id=PROPOSAL)


def test_a_ballot_for_another_proposal_is_refused() -> None:
    with pytest.raises(BallotInvalid, match="proposal"):
        check_ballot(yes_no(1, "yes"), YesNoForm(), proposal_id="another")


def test_a_ballot_of_another_kind_is_refused() -> None:
    with pytest.raises(BallotInvalid, match="ranking"):
        check_ballot(yes_no(1, "yes"), RankedForm(ALTERNATIVES, PROPOSAL), proposal_id=PROPOSAL)


def test_a_ranking_of_unknown_alternatives_is_refused() -> None:
    with pytest.raises(BallotInvalid, match="'z'"):
        check_ballot(ranked(1, "a", "z"), RankedForm(ALTERNATIVES, PROPOSAL), proposal_id=PROPOSAL)


def test_a_median_ballot_outside_the_bounds_names_the_bound() -> None:
    ballot = MedianBallot(PROPOSAL, token(1), nonce(1), Decimal("0.31"))
    with pytest.raises(ParameterOutOfBounds) as refused:
        check_ballot(ballot, MedianForm(COMMISSION, Decimal("0.15")), proposal_id=PROPOSAL)
    assert refused.value.extra["bound"] == "maximum"


def test_a_malformed_voter_token_is_refused() -> None:
    ballot = dataclasses.replace(yes_no(1, "yes"), voter_token="member-42")
    with pytest.raises(BallotInvalid, match="token"):
        check_ballot(ballot, YesNoForm(), proposal_id=PROPOSAL)


def test_a_voter_token_is_stable_per_proposal_and_unlinkable_across() -> None:
    secret = b"s" * 32
    first = voter_token(secret, PROPOSAL, "member-1")
    assert first == voter_token(secret, PROPOSAL, "member-1")
    assert first != voter_token(secret, "other-proposal", "member-1")
    assert first != voter_token(secret, PROPOSAL, "member-2")
    assert first != voter_token(b"t" * 32, PROPOSAL, "member-1")
    assert len(first) == 64


# -- The hash chain --------------------------------------------------------------------------

GENESIS = chain_genesis("f" * 64)


def test_the_chain_links_are_the_documented_hashes() -> None:
    assert hashlib.sha256(("ridecoop-ballots/1\n" + "f" * 64).encode()).hexdigest() == GENESIS
    chain = chain_of([yes_no(1, "yes"), yes_no(2, "no")], GENESIS)
    assert chain[0].prev_hash == GENESIS
    text = ballot_json(yes_no(2, "no"))
    assert chain[1].hash == hashlib.sha256(f"{chain[0].hash}\n{text}".encode()).hexdigest()
    assert receipt(chain[1]) == chain[1].hash


def test_an_intact_chain_verifies() -> None:
    chain = chain_of([yes_no(i, "yes") for i in range(1, 6)], GENESIS)
    verification = verify_chain(chain, genesis=GENESIS, head=chain[-1].hash)
    assert verification.valid
    assert verification.length == 5


def test_an_empty_chain_ends_at_its_genesis() -> None:
    assert verify_chain([], genesis=GENESIS, head=GENESIS).valid
    assert not verify_chain([], genesis=GENESIS, head="0" * 64).valid


def _tamper(chain: list[ChainedBallot], how: str, i: int, j: int) -> list[ChainedBallot]:
    changed = chain[:]
    if how == "modify":
        link = changed[i]
        changed[i] = dataclasses.replace(
            link, ballot_json=link.ballot_json.replace('"yes"', '"no"')
        )
    elif how == "remove":
        del changed[i]
    elif how == "reorder":
        changed[i], changed[j] = changed[j], changed[i]
    elif how == "insert":
        changed.insert(i, chain[j])
    elif how == "truncate":
        changed = changed[:i]
    return changed


def _relinked(chain: list[ChainedBallot]) -> list[ChainedBallot]:
    """What a forger who recomputes every hash after the change would publish."""
    relinked: list[ChainedBallot] = []
    previous = GENESIS
    for position, link in enumerate(chain, start=1):
        current = chain_link(previous, link.ballot_json)
        relinked.append(ChainedBallot(position, link.ballot_json, previous, current))
        previous = current
    return relinked


@given(
    st.integers(2, 8),
    st.sampled_from(["modify", "remove", "reorder", "insert", "truncate"]),
    st.data(),
    st.booleans(),
)
def test_any_change_to_the_chain_is_detected(
    length: int, how: str, data: st.DataObject, relink: bool
) -> None:
    chain = chain_of([yes_no(i, "yes") for i in range(1, length + 1)], GENESIS)
    head = chain[-1].hash
    i = data.draw(st.integers(0, length - 1))
    j = data.draw(st.integers(0, length - 1).filter(lambda j: j != i))
    tampered = _tamper(chain, how, i, j)
    if relink:
        tampered = _relinked(tampered)
    assert not verify_chain(tampered, genesis=GENESIS, head=head).valid


def test_a_link_whose_prev_hash_was_altered_is_reported() -> None:
    chain = chain_of([yes_no(i, "yes") for i in range(1, 4)], GENESIS)
    chain[1] = dataclasses.replace(chain[1], prev_hash="0" * 64)
    problems = verify_chain(chain, genesis=GENESIS, head=chain[-1].hash).problems
    assert [(p.position, p.reason) for p in problems] == [(2, "prev_hash is not the previous hash")]


def test_a_problem_names_the_position() -> None:
    chain = chain_of([yes_no(i, "yes") for i in range(1, 4)], GENESIS)
    tampered = _tamper(chain, "modify", 1, 0)
    problems = verify_chain(tampered, genesis=GENESIS, head=chain[-1].hash).problems
    assert problems[0].position == 2
    assert "hash does not match" in problems[0].reason


# -- Proposals and recounts ------------------------------------------------------------------


def test_the_proposal_hash_covers_text_changes_and_rules() -> None:
    question = YesNoQuestion((ParameterChange("fare.base_fare", 250, 300),))

    def digest(**overrides: object) -> str:
        fields: dict[str, object] = {
            "proposal_id": PROPOSAL,
            "title": "Raise the base fare",
            "text": "Fuel costs more.",
            "question": question,
            "rule": ORDINARY,
        } | overrides
        return proposal_hash(proposal_document(**fields))  # type: ignore[arg-type]

    assert digest() == digest()
    assert digest() != digest(text="Fuel costs more!")
    assert digest() != digest(
        question=YesNoQuestion((ParameterChange("fare.base_fare", 250, 301),))
    )
    assert digest() != digest(rule=FUNDAMENTAL)


def test_a_recount_counts_the_last_ballot_of_each_voter() -> None:
    ballots = [yes_no(1, "yes", 1), yes_no(2, "yes", 2), yes_no(1, "no", 3), yes_no(3, "no", 4)]
    result = recount(ballots, YesNoForm(), proposal_id=PROPOSAL, electorate_size=4, rule=ORDINARY)
    assert result == tally_yes_no(["yes", "no", "no"], 4, ORDINARY)


def test_a_ranked_recount_runs_the_runoff() -> None:
    ballots = [ranked(1, "a"), ranked(2, "b", "a"), ranked(3, "c", "a"), ranked(3, "a")]
    form = RankedForm(("a", "b", "c"), PROPOSAL)
    result = recount(ballots, form, proposal_id=PROPOSAL, electorate_size=3, rule=ORDINARY)
    assert result.passed
    assert result.irv.winner == "a"  # type: ignore[union-attr]


def test_a_recount_refuses_a_ballot_of_another_proposal() -> None:
    stray = YesNoBallot("another", token(1), nonce(1), "yes")
    with pytest.raises(BallotInvalid):
        recount([stray], YesNoForm(), proposal_id=PROPOSAL, electorate_size=4, rule=ORDINARY)


def test_hundred_thousand_ranked_ballots_count_quickly() -> None:
    rng = random.Random(20250601)
    rankings = []
    for _ in range(100_000):
        order = list(ALTERNATIVES)
        rng.shuffle(order)
        rankings.append(tuple(order[: rng.randint(0, 5)]))
    result = instant_runoff(rankings, ALTERNATIVES, tie_break_seed=PROPOSAL)
    assert result.ballots == 100_000
    assert len(result.rounds) == 4

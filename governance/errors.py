from __future__ import annotations

from infra.errors import Conflict, Forbidden, Invalid, NotFound


class MembershipNotFound(NotFound):
    type = "membership-not-found"
    title = "No membership for this account"


class MembershipTransitionNotAllowed(Conflict):
    type = "membership-transition-not-allowed"
    title = "The membership cannot move to that status from its current one"


class ShareNotPaid(Invalid):
    type = "share-not-paid"
    title = "A member must have paid the share"


class NotAMember(Forbidden):
    type = "not-a-member"
    title = "Only active members of the co-op may do this"


# The pricing constitution and ballots. Parameter values in extras are their canonical
# text ("250", "0.15"): JSON numbers would turn rates into floats.


class UnknownParameter(Invalid):
    type = "unknown-parameter"
    title = "The constitution governs no parameter of that name"

    def __init__(self, key: str) -> None:
        super().__init__(f"{key!r} is not a governable parameter", key=key)
        self.key = key


class ParameterValueInvalid(Invalid):
    type = "parameter-value-invalid"
    title = "The value is not one this parameter can take"

    def __init__(self, key: str, reason: str, **extra: str) -> None:
        super().__init__(f"{key}: {reason}", key=key, reason=reason, **extra)
        self.key = key
        self.reason = reason


class ParameterOutOfBounds(Invalid):
    type = "parameter-out-of-bounds"
    title = "The value is outside the parameter's bounds"

    def __init__(self, key: str, *, bound: str, limit: str, proposed: str) -> None:
        word = "below the minimum" if bound == "minimum" else "above the maximum"
        super().__init__(
            f"{key} = {proposed} is {word} {limit}",
            key=key,
            bound=bound,
            proposed=proposed,
            **{bound: limit},
        )
        self.key = key
        self.bound = bound
        self.limit = limit


class ParameterStepTooLarge(Invalid):
    type = "parameter-step-too-large"
    title = "The change is larger than one vote may make"

    def __init__(self, key: str, *, max_step: str, current: str, proposed: str) -> None:
        super().__init__(
            f"{key} may move at most {max_step} in one change, not from {current} to {proposed}",
            key=key,
            bound="max_step",
            max_step=max_step,
            current=current,
            proposed=proposed,
        )
        self.key = key
        self.max_step = max_step


class ParameterChangesInvalid(Invalid):
    type = "parameter-changes-invalid"
    title = "The set of parameter changes is not valid"

    def __init__(self, reason: str, *, key: str | None = None) -> None:
        super().__init__(reason, key=key)
        self.reason = reason


class ParameterChangedMeanwhile(Conflict):
    type = "parameter-changed-meanwhile"
    title = "The parameter no longer has the value the change was made from"

    def __init__(self, key: str, *, expected: str, current: str) -> None:
        super().__init__(
            f"{key} was {expected} when the change was proposed and is {current} now",
            key=key,
            expected=expected,
            current=current,
        )
        self.key = key


class BallotInvalid(Invalid):
    type = "ballot-invalid"
    title = "The ballot does not answer this proposal's question"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, reason=reason)
        self.reason = reason


# Proposals, votes and emergency changes.


class ProposalNotFound(NotFound):
    type = "proposal-not-found"
    title = "No such proposal"


class ProposalQuestionInvalid(Invalid):
    type = "proposal-question-invalid"
    title = "The proposal's question cannot be put to a vote"


class ProposalNotDraft(Conflict):
    type = "proposal-not-draft"
    title = "The proposal is no longer a draft"


class NotProposalAuthor(Forbidden):
    type = "not-proposal-author"
    title = "Only the proposal's author may do this"


class AuthorCannotCosign(Conflict):
    type = "author-cannot-cosign"
    title = "The author of a proposal does not co-sign it"


class CosignersMissing(Conflict):
    type = "cosigners-missing"
    title = "The proposal does not have enough co-signers to enter notice"


class ParameterAlreadyProposed(Conflict):
    type = "parameter-already-proposed"
    title = "Another open proposal already changes this parameter"

    def __init__(self, key: str, proposal_id: str) -> None:
        super().__init__(
            f"{key} is already changed by open proposal {proposal_id}",
            key=key,
            proposal_id=proposal_id,
        )
        self.key = key


class VotingNotOpen(Conflict):
    type = "voting-not-open"
    title = "Voting on this proposal has not opened yet"


class ProposalClosed(Conflict):
    type = "proposal-closed"
    title = "Voting on this proposal is closed"


class NotEligibleToVote(Forbidden):
    type = "not-eligible-to-vote"
    title = "This account may not vote on this proposal"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail, reason=reason)
        self.reason = reason


class ProposalNotClosed(Conflict):
    type = "proposal-not-closed"
    title = "The vote has not closed yet: nothing is published"


class EmergencyChangeInvalid(Invalid):
    type = "emergency-change-invalid"
    title = "The change is not one an emergency allows"

    def __init__(self, reason: str, **extra: str) -> None:
        super().__init__(reason, reason=reason, **extra)
        self.reason = reason

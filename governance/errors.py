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

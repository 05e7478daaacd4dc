from __future__ import annotations

import uuid

from infra.errors import Conflict


class FarePolicyMismatch(Conflict):
    type = "fare-policy-mismatch"
    title = "The fare policy version given is not the one this fare was priced with"

    def __init__(
        self,
        *,
        expected_id: uuid.UUID,
        expected_version: int,
        given_id: uuid.UUID,
        given_version: int,
    ) -> None:
        super().__init__(
            f"priced with fare policy {expected_id} v{expected_version}, "
            f"given {given_id} v{given_version}"
        )
        self.expected_id = expected_id
        self.expected_version = expected_version
        self.given_id = given_id
        self.given_version = given_version

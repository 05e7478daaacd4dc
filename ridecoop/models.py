"""Every domain's tables on one metadata, for Alembic and for tests."""

from __future__ import annotations

from sqlalchemy import MetaData

import accounts.models
import dispatch.models
import governance.models
import payments.models
from infra.db import Base

__all__ = ["accounts", "dispatch", "governance", "metadata", "payments"]

metadata: MetaData = Base.metadata

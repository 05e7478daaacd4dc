"""The documentation names every setting and every problem type the code has."""

from __future__ import annotations

import importlib
import pkgutil
import re
from enum import Enum
from pathlib import Path

from pydantic_settings import BaseSettings

from infra.errors import DomainError
from infra.settings import (
    ApiSettings,
    AuthSettings,
    CoreSettings,
    DatabaseSettings,
    DispatchSettings,
    GovernanceSettings,
    RedisSettings,
    StripeSettings,
)

DOCS = Path(__file__).parent.parent / "docs"


def _default_text(value: object) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def test_every_setting_is_documented_with_its_default() -> None:
    text = (DOCS / "configuration.md").read_text()
    classes: list[type[BaseSettings]] = [
        CoreSettings,
        DatabaseSettings,
        RedisSettings,
        AuthSettings,
        ApiSettings,
        StripeSettings,
        GovernanceSettings,
        DispatchSettings,
    ]
    for cls in classes:
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            variable = f"{prefix}{name.upper()}"
            rows = [line for line in text.splitlines() if line.startswith(f"| `{variable}` |")]
            assert rows, f"{variable} is not in docs/configuration.md"
            assert f"`{_default_text(field.default)}`" in rows[0], f"{variable}'s default"


def _domain_errors() -> set[type[DomainError]]:
    for package in ("accounts", "dispatch", "payments", "governance", "infra"):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if info.name.endswith(".errors"):
                importlib.import_module(info.name)
    found: set[type[DomainError]] = set()
    pending = [DomainError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_problem_type_is_documented() -> None:
    text = (DOCS / "errors.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.M))
    for cls in _domain_errors():
        assert cls.type in documented, f"{cls.__name__} ({cls.type}) is not in docs/errors.md"

"""The ``ridecoop`` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

import uvloop
from pydantic import ValidationError

from infra.settings import Settings, get_settings

ROLES = ("api", "worker", "dispatcher")


def _run_api(settings: Settings) -> int:
    import uvicorn

    if settings.api.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker is its own process; metrics must be summed across them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ridecoop-metrics-")
    uvicorn.run(
        "ridecoop.asgi:app_factory",
        factory=True,
        host=settings.api.host,
        port=settings.api.port,
        workers=settings.api.workers,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=10,
    )
    return 0


def _run_worker(settings: Settings) -> int:
    from ridecoop.worker import run_worker

    uvloop.run(run_worker(settings))
    return 0


def _run_dispatcher(settings: Settings) -> int:
    # Every domain's tables are mapped before the first flush: the ORM orders inserts by
    # foreign keys that cross domains (an offer's driver is a user).
    import ridecoop.models  # noqa: F401
    from dispatch.channel import ride_events_published
    from dispatch.dispatcher import run_dispatcher
    from infra.pubsub import after_publish

    # A ride's committed events move its driver's live trip link and outbox, whichever
    # process commits them.
    after_publish(ride_events_published)
    # uvloop, as uvicorn gives the api: a window's round trips to PostgreSQL and Redis
    # cost less of the loop's time.
    uvloop.run(run_dispatcher(settings))
    return 0


ROLE_RUNNERS: dict[str, Callable[[Settings], int]] = {
    "api": _run_api,
    "worker": _run_worker,
    "dispatcher": _run_dispatcher,
}


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from ridecoop.supervisor import supervise

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        print(f"unknown role(s): {', '.join(unknown)}; known: {', '.join(ROLES)}", file=sys.stderr)
        return 2
    return supervise(roles)


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from infra.migrations import upgrade

    upgrade(settings.database.async_url, args.revision)
    return 0


def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from accounts.models import Role
    from accounts.passwords import Passwords
    from accounts.service import AccountService
    from infra.clock import SystemClock
    from infra.db import create_engine, create_sessionmaker, transaction
    from infra.events import EventBuffer

    password = os.environ.get("RIDECOOP_ADMIN_PASSWORD") or getpass.getpass("Password: ")
    if len(password) < 12:
        print("an admin password needs at least 12 characters", file=sys.stderr)
        return 2

    async def create() -> None:
        engine = create_engine(settings.database)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                service = AccountService(
                    session, settings.auth, Passwords(settings.auth), SystemClock(), EventBuffer()
                )
                user = await service.create_user(
                    role=Role.admin,
                    email=args.email,
                    phone=args.phone,
                    full_name=args.name,
                    password=password,
                )
                print(f"admin {user.email} created with id {user.id}")
        finally:
            await engine.dispose()

    asyncio.run(create())
    return 0


def _governance_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Recounts a closed vote: its publication read from the database (or ``--file``)
    and checked by governance.verify, with the same output and exit status."""
    import json
    import uuid

    from dispatch.history import CompletedTripService
    from governance.service import GovernanceService
    from governance.verify import main as verify_main
    from infra.clock import SystemClock
    from infra.db import create_engine, create_sessionmaker, transaction
    from infra.errors import DomainError
    from infra.events import EventBuffer

    options = [*(["--receipt", args.receipt] if args.receipt else []), *(["--json"] * args.json)]
    if (args.proposal is None) == (args.file is None):
        print("give either a PROPOSAL id or --file", file=sys.stderr)
        return 2
    if args.file is not None:
        return verify_main([args.file, *options])
    try:
        proposal_id = uuid.UUID(args.proposal)
    except ValueError:
        print(f"{args.proposal!r} is not a proposal id", file=sys.stderr)
        return 2

    async def fetch() -> dict[str, object]:
        engine = create_engine(settings.database)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                service = GovernanceService(
                    session,
                    SystemClock(),
                    EventBuffer(),
                    ballot_secret=settings.governance.ballot_secret,
                    trips=CompletedTripService(session),
                )
                return await service.publication(proposal_id)
        finally:
            await engine.dispose()

    try:
        document = asyncio.run(fetch())
    except DomainError as exc:
        print(f"cannot verify proposal {proposal_id}: {exc.detail}", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as file:
        json.dump(document, file)
        file.flush()
        return verify_main([file.name, *options])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ridecoop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run every role (or --roles) until Ctrl-C")
    serve.add_argument("--roles", default=",".join(ROLES), help="comma-separated roles")
    serve.set_defaults(handler=_serve)
    for role in ROLES:
        sub.add_parser(role, help=f"run the {role} role alone").set_defaults(
            handler=lambda settings, _args, role=role: ROLE_RUNNERS[role](settings)
        )
    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(handler=_migrate)
    admin = sub.add_parser("create-admin", help="create an operator account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", required=True)
    admin.add_argument("--phone", default=None)
    admin.set_defaults(handler=_create_admin)
    governance = sub.add_parser("governance", help="members' tools: recount a closed vote")
    governance_sub = governance.add_subparsers(dest="governance_command", required=True)
    verify = governance_sub.add_parser(
        "verify", help="check a closed vote's ballot chain and recount it"
    )
    verify.add_argument("proposal", nargs="?", help="the proposal id (read from the database)")
    verify.add_argument("--file", help="a downloaded publication instead")
    verify.add_argument("--receipt", help="also find the ballot with this receipt")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_governance_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        # Refuse to start on bad configuration, and say exactly what is wrong.
        print(f"ridecoop: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    return handler(settings, args)

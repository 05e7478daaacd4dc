"""Make PostgreSQL + PostGIS and Redis available, and write where they are to an env file.

Which servers, in order of preference:

1. the configured ones, ``RIDECOOP_DATABASE_URL`` and ``RIDECOOP_REDIS_URL``;
2. the local ones on the default ports, 127.0.0.1:5432 and 127.0.0.1:6379;
3. private ones under ``.run/`` in the current directory (PostgreSQL on 127.0.0.1:55432,
   Redis on 127.0.0.1:56379), installed with apt-get when their binaries are missing.

``--private`` (or ``RIDECOOP_SERVICES=private``) skips straight to 3; ``--stop`` stops the
private servers. Every run is idempotent: servers already running are reused, and the
database and the PostGIS extension are created only when missing.

    python -m infra.deploy.services --env-file .run/env
    set -a; source .run/env; set +a
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import redis
import redis.exceptions

LOOPBACK = "127.0.0.1"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_PG_PORT = 5432
PRIVATE_PG_PORT = 55432
DEFAULT_REDIS_PORT = 6379
PRIVATE_REDIS_PORT = 56379
WAIT_S = 30.0
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
CONF_MARKER = "# ridecoop: private instance settings"


class ServiceError(Exception):
    """A failure with a message meant for the person running the command."""


def say(message: str) -> None:
    print(f"services: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / ".run"

    @property
    def pg(self) -> Path:
        return self.run / "postgres"

    @property
    def pg_data(self) -> Path:
        return self.pg / "data"

    @property
    def pg_log(self) -> Path:
        return self.pg / "postgres.log"

    @property
    def pg_superuser(self) -> Path:
        return self.pg / "superuser"

    @property
    def redis(self) -> Path:
        return self.run / "redis"

    @property
    def redis_pid(self) -> Path:
        return self.redis / "redis.pid"

    @property
    def redis_log(self) -> Path:
        return self.redis / "redis.log"


# --- processes -----------------------------------------------------------------------------


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int = 20) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return f"({path} could not be read)"


def run(
    cmd: Sequence[str],
    *,
    as_user: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> tuple[int, str]:
    """Run ``cmd`` (as ``as_user`` through runuser), returning its exit code and output.

    Output goes to a temporary file rather than a pipe: a daemon the command leaves behind
    may inherit the descriptors, and a pipe would then never reach end-of-file.
    """
    argv = ["runuser", "-u", as_user, "--", *cmd] if as_user else list(cmd)
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                check=False,
            )
        except OSError as exc:
            raise ServiceError(f"cannot run {argv[0]}: {exc}") from exc
        out.seek(0)
        text = out.read().decode(errors="replace")
    if check and proc.returncode != 0:
        raise ServiceError(
            f"`{shlex.join(argv)}` failed with exit code {proc.returncode}:\n{_tail(text)}"
        )
    return proc.returncode, text


def is_root() -> bool:
    return os.geteuid() == 0


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@functools.cache
def _apt_update(prefix: tuple[str, ...]) -> None:
    say("apt-get update")
    run([*prefix, "apt-get", "update"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def apt_install(*packages: str) -> None:
    names = " ".join(packages)
    if shutil.which("apt-get") is None:
        raise ServiceError(f"{names} is missing and there is no apt-get here to install it")
    prefix: tuple[str, ...] = ()
    if not is_root():
        if shutil.which("sudo") is None:
            raise ServiceError(f"{names} is missing; as root, run: apt-get install -y {names}")
        prefix = ("sudo", "-n")
    _apt_update(prefix)
    say(f"apt-get install -y {names}")
    run(
        [*prefix, "apt-get", "install", "-y", *packages],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``KEY=value`` lines that ``set -a; source file`` reads back, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `python -m infra.deploy.services`; rewritten on every run."]
    lines += [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)  # the URLs may hold passwords
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- PostgreSQL ----------------------------------------------------------------------------


class _Connection(Protocol):
    async def fetchval(self, query: str, *args: object) -> Any: ...

    async def execute(self, query: str, *args: object) -> str: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class PgTarget:
    url: str
    dsn: str  # the URL in the form asyncpg takes
    admin_dsn: str  # the same server's ``postgres`` database
    database: str
    host: str | None

    @property
    def is_local(self) -> bool:
        return self.host is None or self.host in LOCAL_HOSTS

    @classmethod
    def parse(cls, url: str) -> PgTarget:
        parts = urlsplit(url)
        if not parts.scheme.startswith("postgres"):
            raise ServiceError(f"not a PostgreSQL URL: {redact(url)}")
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise ServiceError(f"the database URL names no database: {redact(url)}")
        plain = parts._replace(scheme="postgresql", fragment="")
        host = unquote(parts.hostname) if parts.hostname else None
        if host is None or host.startswith("/"):
            host = None  # a Unix socket: this machine
        return cls(
            url=url,
            dsn=urlunsplit(plain),
            admin_dsn=urlunsplit(plain._replace(path="/postgres")),
            database=database,
            host=host,
        )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _connect(dsn: str) -> _Connection:
    conn: _Connection = await asyncpg.connect(dsn, timeout=10)
    return conn


async def wait_for_postgres(target: PgTarget, timeout_s: float = WAIT_S) -> None:
    """Return once the server accepts a login; fail at once when the login is refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            conn = await _connect(target.admin_dsn)
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
        ) as exc:
            raise ServiceError(
                f"PostgreSQL at {redact(target.url)} refuses the login: {exc}. "
                "Fix RIDECOOP_DATABASE_URL, set PGUSER, or run with --private."
            ) from exc
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if loop.time() >= deadline:
                raise ServiceError(
                    f"PostgreSQL at {redact(target.url)} did not answer within "
                    f"{timeout_s:.0f} s: {exc}"
                ) from exc
            await asyncio.sleep(0.5)
        else:
            await conn.close()
            return


async def postgis_status(target: PgTarget) -> tuple[bool, int]:
    """Whether the server offers PostGIS, and its major version."""
    conn = await _connect(target.admin_dsn)
    try:
        available = await conn.fetchval(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
        )
        version_num = int(await conn.fetchval("SHOW server_version_num"))
    finally:
        await conn.close()
    return available is not None, version_num // 10000


async def ensure_database(target: PgTarget) -> None:
    admin = await _connect(target.admin_dsn)
    try:
        exists = await admin.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", target.database
        )
        if exists is None:
            say(f"creating database {target.database}")
            try:
                await admin.execute(f"CREATE DATABASE {quote_ident(target.database)}")
            except asyncpg.DuplicateDatabaseError:
                pass  # another run created it meanwhile
            except asyncpg.InsufficientPrivilegeError as exc:
                raise ServiceError(
                    f"cannot create database {target.database}: {exc}; create it, or give "
                    "the URL's role CREATEDB"
                ) from exc
    finally:
        await admin.close()

    conn = await _connect(target.dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'postgis'") is None:
            say(f"creating extension postgis in {target.database}")
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                pass  # another run created it meanwhile
            except asyncpg.InsufficientPrivilegeError as exc:
                raise ServiceError(
                    f"cannot create the postgis extension in {target.database}: {exc}; "
                    "a superuser must run CREATE EXTENSION postgis there"
                ) from exc
    finally:
        await conn.close()


def _pg_bin_dirs() -> dict[int, Path]:
    found: dict[int, Path] = {}
    for bin_dir in Path("/").glob(PG_BIN_GLOB.lstrip("/")):
        version = bin_dir.parent.name.split(".")[0]
        if version.isdigit() and (bin_dir / "initdb").is_file():
            found[int(version)] = bin_dir
    return found


def pg_bin_dir(major: int | None = None) -> Path | None:
    """The binaries of PostgreSQL ``major``, or of the highest version installed."""
    dirs = _pg_bin_dirs()
    if major is not None:
        return dirs.get(major)
    return dirs[max(dirs)] if dirs else None


def _cluster_major(paths: Paths) -> int | None:
    try:
        text = (paths.pg_data / "PG_VERSION").read_text().strip()
    except OSError:
        return None
    return int(text.split(".")[0])


def _cluster_bin_dir(paths: Paths, major: int) -> Path:
    bin_dir = pg_bin_dir(major)
    if bin_dir is None:
        raise ServiceError(
            f"the private cluster in {paths.pg_data} is PostgreSQL {major}, whose binaries "
            f"are missing: apt-get install postgresql-{major}, or delete {paths.pg}"
        )
    return bin_dir


def _pg_os_user(paths: Paths) -> str | None:
    """The OS user to run the private server's commands as (None: as ourselves).

    PostgreSQL refuses to run as root, so root hands the cluster to the ``postgres`` user.
    """
    if not is_root():
        return None
    if paths.pg_data.exists():
        owner = pwd.getpwuid(paths.pg_data.stat().st_uid).pw_name
        if owner != "root":
            return owner
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "running as root, the private PostgreSQL needs a `postgres` OS user to run as; "
            "create one (useradd --system postgres) or run as a normal user"
        ) from None
    if shutil.which("runuser") is None:
        raise ServiceError("running as root, the private PostgreSQL needs runuser (util-linux)")
    return "postgres"


def _write_pg_conf(paths: Paths, os_user: str | None) -> None:
    """Our settings live in ``ridecoop.conf``, rewritten on every start, included once."""
    socket_dir = str(paths.pg).replace("'", "''")
    settings = (
        f"{CONF_MARKER}; rewritten by infra/deploy/services.py on every start.\n"
        f"port = {PRIVATE_PG_PORT}\n"
        f"listen_addresses = '{LOOPBACK}'\n"
        f"unix_socket_directories = '{socket_dir}'\n"
    )
    conf = paths.pg_data / "ridecoop.conf"
    conf.write_text(settings)
    if os_user is not None:
        user = pwd.getpwnam(os_user)
        os.chown(conf, user.pw_uid, user.pw_gid)
    main_conf = paths.pg_data / "postgresql.conf"
    if CONF_MARKER not in main_conf.read_text():
        with main_conf.open("a") as handle:
            handle.write(f"\n{CONF_MARKER}\ninclude 'ridecoop.conf'\n")


def ensure_private_postgres(paths: Paths) -> str:
    major = _cluster_major(paths)
    if major is not None:
        bin_dir = _cluster_bin_dir(paths, major)
    else:
        found = pg_bin_dir()
        if found is None:
            say(f"no PostgreSQL binaries in {PG_BIN_GLOB}")
            apt_install("postgresql")
            found = pg_bin_dir()
            if found is None:
                raise ServiceError(f"apt-get installed postgresql, yet {PG_BIN_GLOB} is empty")
        bin_dir = found
    os_user = _pg_os_user(paths)

    paths.pg.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os_user is not None:
        owner = pwd.getpwnam(os_user)
        os.chown(paths.pg, owner.pw_uid, owner.pw_gid)
        code, _ = run(["test", "-w", str(paths.pg)], as_user=os_user, check=False)
        if code != 0:
            raise ServiceError(
                f"the {os_user} OS user cannot reach {paths.pg}: every directory above it must "
                f"be searchable by {os_user}; set RIDECOOP_DATABASE_URL to use another server"
            )

    if major is None:
        superuser = current_user()
        say(f"initialising a private PostgreSQL cluster in {paths.pg_data} ({bin_dir})")
        run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(paths.pg_data),
                "--auth=trust",
                "-U",
                superuser,
                "--encoding=UTF8",
                "--no-locale",
            ],
            as_user=os_user,
            cwd=paths.pg,
        )
        paths.pg_superuser.write_text(superuser + "\n")
    try:
        superuser = paths.pg_superuser.read_text().strip() or current_user()
    except OSError:
        superuser = current_user()

    pg_ctl = str(bin_dir / "pg_ctl")
    code, _ = run([pg_ctl, "status", "-D", str(paths.pg_data)], as_user=os_user, check=False)
    if code == 0:
        say(f"reusing the private PostgreSQL on {LOOPBACK}:{PRIVATE_PG_PORT}")
    else:
        if port_open(PRIVATE_PG_PORT):
            raise ServiceError(
                f"{LOOPBACK}:{PRIVATE_PG_PORT} is taken by a process other than the private "
                f"PostgreSQL in {paths.pg_data}; stop it, or set RIDECOOP_DATABASE_URL"
            )
        _write_pg_conf(paths, os_user)
        say(f"starting the private PostgreSQL on {LOOPBACK}:{PRIVATE_PG_PORT}")
        try:
            run(
                [
                    pg_ctl,
                    "start",
                    "-D",
                    str(paths.pg_data),
                    "-l",
                    str(paths.pg_log),
                    "-w",
                    "-t",
                    str(int(WAIT_S)),
                ],
                as_user=os_user,
                cwd=paths.pg,
            )
        except ServiceError as exc:
            raise ServiceError(f"{exc}\n{paths.pg_log}:\n{_tail_file(paths.pg_log)}") from exc
    return f"postgresql+asyncpg://{quote(superuser, safe='')}@{LOOPBACK}:{PRIVATE_PG_PORT}/ridecoop"


def stop_private_postgres(paths: Paths) -> None:
    major = _cluster_major(paths)
    if major is None:
        say(f"no private PostgreSQL in {paths.pg_data}")
        return
    pg_ctl = str(_cluster_bin_dir(paths, major) / "pg_ctl")
    os_user = _pg_os_user(paths)
    code, _ = run([pg_ctl, "status", "-D", str(paths.pg_data)], as_user=os_user, check=False)
    if code != 0:
        say("the private PostgreSQL is not running")
        return
    say("stopping the private PostgreSQL")
    run(
        [pg_ctl, "stop", "-D", str(paths.pg_data), "-m", "fast", "-w", "-t", str(int(WAIT_S))],
        as_user=os_user,
        cwd=paths.pg,
    )


def ensure_postgres(paths: Paths, *, private: bool) -> str:
    configured = os.environ.get("RIDECOOP_DATABASE_URL", "").strip()
    if configured and not private:
        url = configured
        say(f"database: {redact(url)} (RIDECOOP_DATABASE_URL)")
    elif not private and port_open(DEFAULT_PG_PORT):
        user = os.environ.get("PGUSER") or current_user()
        url = f"postgresql+asyncpg://{quote(user, safe='')}@{LOOPBACK}:{DEFAULT_PG_PORT}/ridecoop"
        say(f"database: the local PostgreSQL, {url}")
    else:
        if configured:
            say("private mode: ignoring RIDECOOP_DATABASE_URL")
        url = ensure_private_postgres(paths)
        say(f"database: the private PostgreSQL, {url}")

    target = PgTarget.parse(url)
    asyncio.run(wait_for_postgres(target))
    available, major = asyncio.run(postgis_status(target))
    if not available:
        if not target.is_local:
            raise ServiceError(
                f"PostGIS is not installed on the PostgreSQL {major} server at {target.host}; "
                "install it there (postgresql-<version>-postgis-3, or a postgis/postgis image)"
            )
        say(f"PostGIS is missing from the local PostgreSQL {major}")
        apt_install(f"postgresql-{major}-postgis-3")
        available, _ = asyncio.run(postgis_status(target))
        if not available:
            raise ServiceError(
                f"postgresql-{major}-postgis-3 is installed, yet the server at {target.host} "
                "still does not offer PostGIS; is it running on this machine?"
            )
    asyncio.run(ensure_database(target))
    return url


# --- Redis ---------------------------------------------------------------------------------


def _ping(url: str) -> None:
    with redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0) as client:
        client.ping()


def redis_answers(url: str) -> bool:
    try:
        _ping(url)
    except (redis.exceptions.RedisError, OSError, ValueError):
        return False
    return True


def wait_for_redis(url: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _ping(url)
        except redis.exceptions.AuthenticationError as exc:
            raise ServiceError(f"Redis at {redact(url)} refuses the login: {exc}") from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"Redis at {redact(url)} did not answer within {timeout_s:.0f} s: {exc}"
                ) from exc
            time.sleep(0.25)
        except (redis.exceptions.RedisError, ValueError) as exc:
            raise ServiceError(f"Redis at {redact(url)} does not answer PING: {exc}") from exc
        else:
            return


def _is_redis_process(pid: int) -> bool:
    if not pid_alive(pid):
        return False
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no /proc to tell: trust the pid file


def ensure_private_redis(paths: Paths) -> str:
    url = f"redis://{LOOPBACK}:{PRIVATE_REDIS_PORT}/0"
    pid = read_pid(paths.redis_pid)
    if pid is not None and _is_redis_process(pid):
        say(f"reusing the private Redis on {LOOPBACK}:{PRIVATE_REDIS_PORT} (pid {pid})")
        wait_for_redis(url)
        return url
    if port_open(PRIVATE_REDIS_PORT):
        raise ServiceError(
            f"{LOOPBACK}:{PRIVATE_REDIS_PORT} is taken by a process other than the private "
            f"Redis of {paths.redis}; stop it, or set RIDECOOP_REDIS_URL"
        )
    binary = shutil.which("redis-server")
    if binary is None:
        say("redis-server is not on PATH")
        apt_install("redis-server")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).is_file():
            raise ServiceError("apt-get installed redis-server, yet there is no redis-server")
    paths.redis.mkdir(parents=True, exist_ok=True, mode=0o700)
    say(f"starting the private Redis on {LOOPBACK}:{PRIVATE_REDIS_PORT}")
    run(
        [
            binary,
            "--bind",
            LOOPBACK,
            "--port",
            str(PRIVATE_REDIS_PORT),
            "--protected-mode",
            "yes",
            "--daemonize",
            "yes",
            "--dir",
            str(paths.redis),
            "--save",
            "",
            "--appendonly",
            "no",
            "--pidfile",
            str(paths.redis_pid),
            "--logfile",
            str(paths.redis_log),
        ],
        cwd=paths.redis,
    )
    try:
        wait_for_redis(url)
    except ServiceError as exc:
        raise ServiceError(f"{exc}\n{paths.redis_log}:\n{_tail_file(paths.redis_log)}") from exc
    return url


def stop_private_redis(paths: Paths) -> None:
    pid = read_pid(paths.redis_pid)
    if pid is None or not _is_redis_process(pid):
        say("the private Redis is not running")
        return
    say(f"stopping the private Redis (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT_S
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            raise ServiceError(f"the private Redis (pid {pid}) did not stop within {WAIT_S:.0f} s")
        time.sleep(0.1)
    paths.redis_pid.unlink(missing_ok=True)


def ensure_redis(paths: Paths, *, private: bool) -> str:
    configured = os.environ.get("RIDECOOP_REDIS_URL", "").strip()
    default = f"redis://{LOOPBACK}:{DEFAULT_REDIS_PORT}/0"
    if configured and not private:
        say(f"redis: {redact(configured)} (RIDECOOP_REDIS_URL)")
        wait_for_redis(configured)
        return configured
    if not private and redis_answers(default):
        say(f"redis: the local Redis, {default}")
        return default
    if configured:
        say("private mode: ignoring RIDECOOP_REDIS_URL")
    url = ensure_private_redis(paths)
    say(f"redis: the private Redis, {url}")
    return url


# --- command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy.services",
        description="Make PostgreSQL + PostGIS and Redis available and write their URLs.",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(".run/env"),
        help="where to write RIDECOOP_DATABASE_URL and RIDECOOP_REDIS_URL (default: .run/env)",
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="use private servers under .run/ even when others are configured or running "
        "(also: RIDECOOP_SERVICES=private)",
    )
    parser.add_argument(
        "--stop", action="store_true", help="stop the private servers under .run/ and exit"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = os.environ.get("RIDECOOP_SERVICES", "").strip().lower()
    if mode not in {"", "auto", "private"}:
        print(
            f"services: error: RIDECOOP_SERVICES={mode!r}; expected 'private' or 'auto'",
            file=sys.stderr,
        )
        return 2
    private = bool(args.private) or mode == "private"
    paths = Paths(Path.cwd())
    try:
        if args.stop:
            stop_private_redis(paths)
            stop_private_postgres(paths)
            return 0
        database_url = ensure_postgres(paths, private=private)
        redis_url = ensure_redis(paths, private=private)
        env_file: Path = args.env_file
        write_env_file(
            env_file, {"RIDECOOP_DATABASE_URL": database_url, "RIDECOOP_REDIS_URL": redis_url}
        )
        say(f"wrote {env_file}")
    except ServiceError as exc:
        print(f"services: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, asyncpg.PostgresError, redis.exceptions.RedisError) as exc:
        print(f"services: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

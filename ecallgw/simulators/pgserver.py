"""A private PostgreSQL server for tests, benchmarks and the demo.

    with PgServer() as pg:                 # initdb in a temporary directory, then pg_ctl start
        dsn = pg.create_database()         # postgresql://ecallgw@127.0.0.1:PORT/db_...
        pg.restart("immediate")            # same data directory, same port: crash recovery

The cluster lives in one directory: ``data/`` (the cluster), ``sock/`` (the Unix socket) and
``postgres.log``. It trusts every local and 127.0.0.1 connection and has one superuser,
``ecallgw``, and a database of the same name (``dsn``). The server listens on 127.0.0.1 only, on a
free port chosen at the first start and kept across restarts.

TLS (optional): ``ssl_cert`` and ``ssl_key`` turn ``ssl = on`` with that certificate (copied into
the data directory, owned by the server's user: PostgreSQL refuses a key others can read);
``ssl_ca`` is the CA of client certificates it accepts; ``require_ssl`` makes pg_hba accept TCP
connections over TLS only (``hostssl``), so a client with ``sslmode=disable`` is refused. psql here
connects with libpq's default ``sslmode=prefer``, so `sql` keeps working.

PostgreSQL refuses to run as root: when this process is root, initdb, pg_ctl and the server run
as the ``postgres`` system user, which then owns the directory, and the directory's ancestors are
made traversable by others (pytest's temporary directories are 0700). Clients (psql here, asyncpg
in tests) may run as anyone: they connect over TCP.

Only the standard library; the server binaries come from Debian's ``postgresql`` package
(``./run`` installs it), found by `find_bindir`.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["SUPERUSER", "PgServer", "find_bindir"]

SUPERUSER = "ecallgw"
_NOT_FOUND = "PostgreSQL server binaries not found: install the postgresql package"
_INITDB_TIMEOUT_S = 120.0
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0
_SQL_TIMEOUT_S = 60.0
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; the socket's name adds ".s.PGSQL.NNNNN"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_counter = itertools.count(1)


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin/initdb; versions are "15", "16" (or "9.6" long ago).
    try:
        return tuple(int(p) for p in path.parents[1].name.split("."))
    except ValueError:
        return (-1,)


def find_bindir() -> Path:
    """The directory that holds initdb, pg_ctl, postgres and psql.

    ``pg_config --bindir`` when that is the server's (it holds initdb; the pg_config of libpq-dev
    alone may point at client binaries only), else the highest version among
    /usr/lib/postgresql/*/bin. Raises `RuntimeError` when there is none.
    """
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_server(Path(out)):
            return Path(out)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    for initdb in reversed(found):
        if _has_server(initdb.parent):
            return initdb.parent
    raise RuntimeError(_NOT_FOUND)


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty server log)"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgServer:
    """One PostgreSQL cluster and its postmaster; `stop` and `start` again keep data and port.

    ``base_dir``: where the cluster lives, kept afterwards (default: a temporary directory,
    removed on exit). ``port``: default a free one, chosen at the first start. ``fsync=False``
    turns off fsync (and initdb's sync): faster, and nothing is lost unless the OS crashes.
    ``log_to``: the server log (default ``postgres.log`` in the directory). ``ssl_cert``,
    ``ssl_key``, ``ssl_ca``, ``require_ssl``: TLS (module docstring).
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        fsync: bool = True,
        log_to: Path | None = None,
        ssl_cert: Path | None = None,
        ssl_key: Path | None = None,
        ssl_ca: Path | None = None,
        require_ssl: bool = False,
    ) -> None:
        if (ssl_cert is None) != (ssl_key is None) or ((ssl_ca or require_ssl) and ssl_cert is None):
            raise ValueError("TLS needs ssl_cert and ssl_key (ssl_ca and require_ssl need them too)")
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="ecallgw-pg-")) if base_dir is None else base_dir
        self.base_dir = self.base_dir.absolute()
        self.data_dir = self.base_dir / "data"
        self.log_path = (log_to if log_to is not None else self.base_dir / "postgres.log").absolute()
        self._socket_dir = self.base_dir / "sock"
        self._own_socket_dir = False
        self._port = port
        self._fixed_port = port is not None
        self.fsync = fsync
        self._ssl = {"cert": ssl_cert, "key": ssl_key, "ca": ssl_ca}
        self.require_ssl = require_ssl
        self._bindir: Path | None = None
        self._running = False
        self._atexit_registered = False
        # (uid, gid) of the user the server runs as, when that is not this process's user.
        self._as: tuple[int, int] | None = None

    # -- properties ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 (chosen at the first start unless given)."""
        if self._port is None:
            raise RuntimeError("the server has no port yet: start() it first")
        return self._port

    @property
    def dsn(self) -> str:
        """The DSN of the default database, ``ecallgw``."""
        return self.dsn_for(SUPERUSER)

    def dsn_for(self, database: str) -> str:
        """The DSN of ``database`` on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int:
        """The postmaster's process id, from ``postmaster.pid``."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"the server is not running (no postmaster.pid in {self.data_dir})") from exc

    @property
    def running(self) -> bool:
        """Whether this object started the server and has not stopped it since."""
        return self._running

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster if it does not exist yet, then start it and wait until it accepts."""
        if self._running:
            raise RuntimeError("the server is running already")
        if self._bindir is None:
            self._bindir = find_bindir()
        self._prepare_dirs()
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        attempts = 1 if self._fixed_port or self._port is not None else 3
        for attempt in range(attempts):
            if self._port is None:
                self._port = _free_port()
            self._write_config()
            try:
                self._pg_ctl_start()
                break
            except RuntimeError:
                # A free port may be taken between choosing it and binding it: choose again,
                # unless the port was given or has been used already (restarts keep it).
                if attempt + 1 == attempts or "could not bind" not in _tail(self.log_path, 10):
                    raise
                self._port = None
        self._running = True
        if not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        if fresh:
            self.sql(f"CREATE DATABASE {_quote_ident(SUPERUSER)}", database="postgres")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast|smart|immediate`` and wait; does nothing if not running."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"stop mode must be smart, fast or immediate, not {mode!r}")
        if not self._running:
            return
        self._run(
            [self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w",
             "-t", str(int(_STOP_TIMEOUT_S))],
            timeout=_STOP_TIMEOUT_S + 10,
            what=f"pg_ctl stop -m {mode}",
        )  # fmt: skip
        self._running = False

    def restart(self, mode: str = "fast") -> None:
        """Stop (``mode``) and start again: same data directory, same port."""
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        """Remove the directory this server created for itself (stop it first)."""
        if self._own_socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop("fast")
        except RuntimeError:
            self.stop("immediate")
        finally:
            self.cleanup()

    def _stop_at_exit(self) -> None:
        # A test session that ends without __exit__ must not leave a postmaster behind.
        if self._running:
            with contextlib.suppress(RuntimeError, OSError):
                self.stop("immediate")

    # -- SQL -------------------------------------------------------------------------------------

    def create_database(self, name: str | None = None) -> str:
        """``CREATE DATABASE`` (a fresh unique name by default); returns its DSN."""
        if name is None:
            name = f"db_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:8]}"
        self.sql(f"CREATE DATABASE {_quote_ident(name)}", database="postgres")
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE IF EXISTS ... WITH (FORCE)``: ends its sessions first."""
        self.sql(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)", database="postgres")

    def sql(self, statement: str, *, database: str = SUPERUSER) -> str:
        """Run one statement with psql over TCP; returns its unaligned output."""
        if not self._running:
            raise RuntimeError("the server is not running")
        env = self._env()
        env["PGCONNECT_TIMEOUT"] = "10"
        try:
            done = subprocess.run(
                [self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                 "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                 "-c", statement],
                capture_output=True, text=True, env=env, timeout=_SQL_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"psql timed out after {_SQL_TIMEOUT_S:.0f} s: {statement}") from exc
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}) on {statement!r}: {done.stderr.strip()}")
        return done.stdout

    # -- internals -------------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        if self._bindir is None:
            self._bindir = find_bindir()
        return str(self._bindir / name)

    def _env(self) -> dict[str, str]:
        # PG* variables of the caller (PGHOST, PGPORT, PGDATA, PGOPTIONS...) must not redirect us.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self._socket_dir)) > _SOCKET_PATH_MAX - len("/.s.PGSQL.65535"):
            # A deep base_dir would make the socket's path too long for sun_path.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="ecallgw-pgsock-"))
            self._own_socket_dir = True
        self._socket_dir.mkdir(exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError(
                "running as root, and PostgreSQL refuses to: no 'postgres' user to run it as "
                "(the postgresql package creates it)"
            ) from exc
        self._as = (pw.pw_uid, pw.pw_gid)
        for path in (self.base_dir, self._socket_dir, self.log_path):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        if self.data_dir.exists():
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        for path in {self.base_dir, self._socket_dir, self.log_path.parent}:
            _make_traversable(path)

    def _run(self, argv: list[str], *, timeout: float, what: str) -> str:
        kwargs: dict[str, Any] = {}
        if self._as is not None:
            kwargs.update(user=self._as[0], group=self._as[1], extra_groups=[])
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, env=self._env(), cwd=self.base_dir,
                timeout=timeout, check=False, **kwargs,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{what} did not finish in {timeout:.0f} s; "
                f"server log {self.log_path}:\n{_tail(self.log_path)}"
            ) from exc
        if done.returncode != 0:
            raise RuntimeError(
                f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}\n"
                f"server log {self.log_path}:\n{_tail(self.log_path)}"
            )
        out: str = done.stdout
        return out

    def _initdb(self) -> None:
        argv = [
            self._bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--no-locale",
        ]  # fmt: skip
        if not self.fsync:
            argv.append("--no-sync")
        self._run(argv, timeout=_INITDB_TIMEOUT_S, what="initdb")
        # Only what we use: local socket and 127.0.0.1, trusted (a private server for tests).
        tcp = "hostssl" if self.require_ssl else "host"
        (self.data_dir / "pg_hba.conf").write_text(f"local all all trust\n{tcp} all all 127.0.0.1/32 trust\n")
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write("\ninclude_if_exists = 'ecallgw.conf'\n")

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._socket_dir}'",
            "max_connections": "200",
            "shared_buffers": "'64MB'",
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] '",
            "log_timezone": "'UTC'",
            "timezone": "'UTC'",
        }
        for name, source in self._ssl.items():
            if source is not None:
                copy = self.data_dir / f"ecallgw-ssl-{name}.pem"
                copy.write_bytes(Path(source).read_bytes())
                copy.chmod(0o600)
                if self._as is not None:
                    os.chown(copy, *self._as)
                settings[f"ssl_{name}_file"] = f"'{copy}'"
        if self._ssl["cert"] is not None:
            settings["ssl"] = "on"
        conf = self.data_dir / "ecallgw.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if self._as is not None:
            os.chown(conf, *self._as)

    def _pg_ctl_start(self) -> None:
        self._run(
            [self._bin("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
             "-t", str(int(_START_TIMEOUT_S))],
            timeout=_START_TIMEOUT_S + 10,
            what=f"pg_ctl start (port {self._port})",
        )  # fmt: skip


def _make_traversable(path: Path) -> None:
    """Give others the search bit on ``path`` and its ancestors that lack it (root's 0700 dirs)."""
    for p in (path, *path.parents):
        mode = p.stat().st_mode
        if not mode & stat.S_IXOTH:
            p.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

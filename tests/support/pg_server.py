"""A throwaway PostgreSQL server for the tests and benches: Debian's ``postgresql``
package, ``initdb`` into a temporary directory, listening on a free loopback port with
its unix socket in that directory, stopped (and deleted) at the end. It is a
``LoopbackServer`` (``with PostgresServer() as server:``, or ``start()``).

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` OS
user (``runuser``) and the directory is handed to it. No pytest here.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import urllib.parse

from tests.support.loopback import HOST, LoopbackServer, ServerDidNotStart, free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server did not start."""


def find_bin() -> str | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``initdb``, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


def create_database(server_url: str, name: str) -> str:
    """Create an empty UTF-8 database ``name`` on the server at ``server_url`` (a
    superuser's URL); returns the database's URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'".encode())
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


class PostgresServer(LoopbackServer):
    """``durable=False`` (tests) turns fsync off; the benches pass ``durable=True`` to
    measure a server that syncs its commits."""

    startup_timeout_s = 60.0

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.as_postgres = os.geteuid() == 0
        self.bindir = ""
        self.root = ""
        self.datadir = ""
        self.settings = ""

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def pause(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again)."""
        self._pg_ctl("-m", "fast", "-w", "stop", check=True)

    def resume(self) -> None:
        self._pg_ctl_start()

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self.as_postgres else list(args)

    def _pg_ctl(self, *args: str, check: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._cmd(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, *args),
            capture_output=True,
            text=True,
            check=check,
            timeout=90,
        )

    def _launch(self) -> None:
        bindir = find_bin()
        if bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "apt-get install -y postgresql, or set STEPTRACE_TEST_POSTGRES_URL"
            )
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="steptrace-pg-")
        self.datadir = os.path.join(self.root, "data")
        if self.as_postgres:
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        init = subprocess.run(
            self._cmd(
                os.path.join(bindir, "initdb"),
                *("-D", self.datadir, "-U", "postgres", "-A", "trust", "-E", "UTF8"),
                *("--locale=C", "--no-sync"),
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if init.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            raise PostgresUnavailable(f"initdb failed: {init.stderr or init.stdout}")
        settings = [
            f"-p {self.port}",
            f"-c listen_addresses={HOST}",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
            "-c shared_buffers=256MB",
        ]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self.settings = " ".join(settings)
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        log = os.path.join(self.root, "log")
        started = self._pg_ctl(
            "-l", log, "-o", self.settings, "-w", "-t", "60", "start", check=False
        )
        if started.returncode != 0:
            tail = ""
            if os.path.exists(log):
                with open(log) as f:
                    tail = f.read()[-2000:]
            shutil.rmtree(self.root, ignore_errors=True)
            raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr}\n{tail}")

    def _halt(self) -> str:
        self._pg_ctl("-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        return ""


def start(*, durable: bool = False) -> PostgresServer:
    """A fresh server, started (see ``PostgresServer``)."""
    try:
        return PostgresServer(durable=durable).start()
    except (OSError, ServerDidNotStart) as exc:  # runuser missing, or no connections
        raise PostgresUnavailable(str(exc)) from exc

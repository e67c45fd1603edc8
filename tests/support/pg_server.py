"""A throwaway PostgreSQL server for the tests and benches: Debian's ``postgresql``
package, ``initdb`` into a temporary directory, listening on a free loopback port with
its unix socket in that directory, stopped (and deleted) at the end.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` OS
user (``runuser``) and the directory is handed to it. Plain functions, no pytest.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server did not start."""


def find_bin() -> str | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``initdb``, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    bindir: str
    datadir: str
    root: str
    port: int
    as_postgres: bool
    settings: str = ""

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self.as_postgres else list(args)

    def pause(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again)."""
        subprocess.run(
            self._cmd(
                os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "fast", "-w", "stop"
            ),
            capture_output=True,
            check=True,
            timeout=60,
        )

    def resume(self) -> None:
        _pg_ctl_start(self)

    def stop(self) -> None:
        subprocess.run(
            self._cmd(
                os.path.join(self.bindir, "pg_ctl"),
                "-D",
                self.datadir,
                "-m",
                "immediate",
                "-w",
                "stop",
            ),
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start(*, durable: bool = False) -> Server:
    """Start a fresh server. ``durable=False`` (tests) turns fsync off; the benches
    pass ``durable=True`` to measure a server that syncs its commits."""
    bindir = find_bin()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
            "apt-get install -y postgresql, or set STEPTRACE_TEST_POSTGRES_URL"
        )
    as_postgres = os.geteuid() == 0
    root = tempfile.mkdtemp(prefix="steptrace-pg-")
    datadir = os.path.join(root, "data")
    if as_postgres:
        os.chmod(root, 0o755)
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    server = Server(bindir, datadir, root, port, as_postgres)
    init = subprocess.run(
        server._cmd(
            os.path.join(bindir, "initdb"),
            "-D",
            datadir,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {init.stderr or init.stdout}")
    settings = [
        f"-p {port}",
        "-c listen_addresses=127.0.0.1",
        f"-c unix_socket_directories={root}",
        "-c max_connections=200",
        "-c shared_buffers=256MB",
    ]
    if not durable:
        settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    server.settings = " ".join(settings)
    _pg_ctl_start(server)
    return server


def _pg_ctl_start(server: Server) -> None:
    root = server.root
    started = subprocess.run(
        server._cmd(
            os.path.join(server.bindir, "pg_ctl"),
            "-D",
            server.datadir,
            "-l",
            os.path.join(root, "log"),
            "-o",
            server.settings,
            "-w",
            "-t",
            "60",
            "start",
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    if started.returncode != 0:
        log = ""
        if os.path.exists(os.path.join(root, "log")):
            with open(os.path.join(root, "log")) as f:
                log = f.read()[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"pg_ctl start failed: {started.stderr}\n{log}")
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise PostgresUnavailable("PostgreSQL did not accept connections") from None
            time.sleep(0.1)

"""``steptrace ui`` as the web UI's tests meet it: the real command in a subprocess,
serving a store on loopback (a ``LoopbackServer``, ready once it accepts connections).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx

from tests.support.loopback import LoopbackServer, ServerDidNotStart, free_port


class _Recorded(Protocol):
    url: str


T = TypeVar("T", bound=_Recorded)

STEPTRACE = [sys.executable, "-m", "steptrace"]
"""The command line of ``steptrace`` (this interpreter's)."""


def env_without_otel() -> dict[str, str]:
    """This process's environment without ``OTEL_*`` settings or a UI token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("STEPTRACE_UI_TOKEN", None)
    return env


class UIServer(LoopbackServer):
    """``steptrace ui --store STORE --port P --no-open ARGS…``; ``stop()`` returns what
    the command printed."""

    def __init__(self, store: Path | str, *args: str, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.args = args
        self.env = env

    def _launch(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                *STEPTRACE,
                "ui",
                "--store",
                str(self.store),
                "--port",
                str(self.port),
                "--no-open",
                *self.args,
            ],
            env=self.env or env_without_otel(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            out = self.process.stdout.read() if self.process.stdout else ""
            raise ServerDidNotStart(f"steptrace ui exited with {self.process.returncode}: {out}")
        return super()._ready()

    def _halt(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


def start_ui(store: Path | str, *args: str, env: dict[str, str] | None = None) -> UIServer:
    """A started ``UIServer`` (see there); the caller stops it."""
    return UIServer(store, *args, env=env).start()


def data_and_api(
    request: Any, data: str, server: str, record: Callable[[str], T]
) -> Iterator[tuple[T, httpx.Client]]:
    """For a fixture parametrised ``sqlite``/``postgresql``: the test data and a client of
    a UI over it. On SQLite, the module's fixtures named ``data`` and ``server``; on
    PostgreSQL, ``record(url)`` into a fresh database and a UI started over it."""
    if request.param == "sqlite":
        made, ui = request.getfixturevalue(data), request.getfixturevalue(server)
        with httpx.Client(base_url=ui.url, timeout=10) as client:
            yield made, client
        return
    made = record(request.getfixturevalue("new_postgres_database")())
    ui = start_ui(made.url)
    try:
        with httpx.Client(base_url=ui.url, timeout=10) as client:
            yield made, client
    finally:
        ui.stop()

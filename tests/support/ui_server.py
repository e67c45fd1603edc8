"""``steptrace ui`` as the web UI's tests meet it: the real command in a subprocess,
serving a store on loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STEPTRACE = [sys.executable, "-m", "steptrace"]


def env_without_otel() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("STEPTRACE_UI_TOKEN", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class UIServer:
    url: str
    port: int
    store: Path | str
    process: subprocess.Popen[str]

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out


def start_ui(store: Path | str, *args: str, env: dict[str, str] | None = None) -> UIServer:
    """``steptrace ui --store STORE --port P --no-open ARGS…`` in a subprocess, once it
    answers."""
    port = free_port()
    process = subprocess.Popen(
        [*STEPTRACE, "ui", "--store", str(store), "--port", str(port), "--no-open", *args],
        env=env or env_without_otel(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"steptrace ui exited with {process.returncode}: {out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("steptrace ui did not start listening in 30 s") from None
            time.sleep(0.1)
    return UIServer(url, port, store, process)

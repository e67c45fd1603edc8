"""``steptrace ui``: a local web UI over a store — find the run, the failing step, the
LLM call. ``serve(...)`` checks the address and token rules and runs the server
(``steptrace.ui.app``) with uvicorn; the pages and their JS and CSS ship in
``static/``, so nothing is fetched from the internet.

Needs the ``ui`` extra (``pip install 'steptrace[ui]'``); importing this package
without it raises ``ConfigError`` saying so.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import webbrowser
from urllib.parse import quote

from steptrace.errors import ConfigError
from steptrace.masking import mask_url

INSTALL_HINT = "the web UI needs its extra: pip install 'steptrace[ui]'"

try:
    import fastapi  # noqa: F401
    import uvicorn
except ImportError as exc:  # pragma: no cover - exercised in a venv without the extra
    raise ConfigError(f"{INSTALL_HINT} ({exc.name} is missing)") from None

from steptrace.store import Store  # noqa: E402
from steptrace.ui.app import create_app  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (``ConfigError``) to listen beyond loopback without a token: every stored
    input, output and prompt would be readable by anyone who can reach the address."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve the UI on {host} without a token: anyone who can reach that "
            "address could read every stored input, output and prompt. Set STEPTRACE_UI_TOKEN "
            "or pass --token-file PATH (or --token TOKEN), or bind 127.0.0.1"
        )


def check_port(host: str, port: int) -> None:
    """Refuse (``ConfigError``) a port something else listens on, before saying where
    the UI is."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port"
            ) from None


def url_of(host: str, port: int, token: str | None = None) -> str:
    """The address to open; with the token as ``?token=`` (the UI moves it to a cookie)."""
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if name in ("0.0.0.0", "[::]"):
        name = "127.0.0.1"
    return f"http://{name}:{port}/" + (f"?token={quote(token)}" if token else "")


def serve(
    store_url: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    trace_url: str | None = None,
    open_browser: bool = True,
) -> None:
    """Serve the UI over the store at ``store_url`` until interrupted."""
    check_bind(host, token)
    check_port(host, port)
    store = Store.open(store_url)
    try:
        app = create_app(store, token=token, trace_url=trace_url, port=port)
        config = uvicorn.Config(
            app, host=host.strip("[]"), port=port, log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
        address = url_of(host, port, token)
        shown = mask_url(store.url)
        print(f"steptrace UI on {address}  (store: {shown}; Ctrl-C to stop)", flush=True)
        if open_browser:
            threading.Timer(0.5, webbrowser.open, [address]).start()
        server.run()
    finally:
        store.close()


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "check_bind",
    "check_port",
    "create_app",
    "is_loopback",
    "serve",
]

"""Who may use the UI, and what every answer carries: ``install(app, ...)`` adds the
access rules, the security headers, ``HEAD`` wherever ``GET`` is, and the one JSON
shape of errors to a FastAPI app.

- With a token, every request carries it (``Authorization: Bearer``, or the cookie a
  ``?token=`` link sets). Without one, only requests addressed to a loopback host name
  are answered, so a page on another site cannot reach the UI by rebinding a name of
  its own to 127.0.0.1.
- Every response, a 401 or a 500 as much as a page, carries the same headers: a
  Content-Security-Policy that allows only the UI's own scripts and no framing,
  ``nosniff``, no referrer, and ``Cache-Control: no-store`` (what the UI shows is the
  store's content, which no shared or disk cache should keep).
- Every error is ``{"error": {"code": "...", "message": "..."}}``; an unexpected one is
  a 500 of that shape, without the traceback (logged on the ``steptrace`` logger).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from steptrace.errors import QueryError, RunNotFound

log = logging.getLogger("steptrace")

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_parameter",
    500: "internal_error",
}
_Next = Callable[[Request], Awaitable[Response]]
_Scope = MutableMapping[str, Any]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of the UI's errors."""
    code = ERROR_CODES.get(status, f"http_{status}")
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


class Access:
    """The token rule of one UI instance.

    The cookie a ``?token=`` link sets is named after the port the UI listens on
    (``steptrace_ui_8765``; ``__Host-`` first over https): browsers send a host's
    cookies to every port of it, so a fixed name would let two UIs on one machine
    overwrite each other's. For the same reason its value is not the token but an HMAC
    of it under a key made when this UI started: whatever else listens on the host
    receives the cookie, never the token (which may also be used as a Bearer token by
    scripts, and stays valid across restarts). The cookie is ``HttpOnly`` (no script
    reads it), ``SameSite=Strict`` (no other site's page sends it), ``Path=/`` and, over
    https, ``Secure``; a restart of the UI ends the sessions (open the link again)."""

    def __init__(self, token: str, port: int | None) -> None:
        self._token = token.encode()
        self._base_name = f"steptrace_ui_{port}" if port else "steptrace_ui"
        self._session = hmac.new(
            self._token, b"steptrace-ui-session:" + os.urandom(16), hashlib.sha256
        ).hexdigest()

    def cookie_name(self, request: Request) -> str:
        return ("__Host-" if _https(request) else "") + self._base_name

    def is_token(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def admits(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return self.is_token(header[7:])
        cookie = request.cookies.get(self.cookie_name(request), "")
        return hmac.compare_digest(cookie.encode(), self._session.encode())

    def login(self, request: Request) -> Response:
        """The answer to a link carrying the right token: a cookie, and a redirect to
        the same address without the token (out of the address bar, the history and
        Referer headers)."""
        redirect = RedirectResponse(local_target(request), status_code=303)
        redirect.set_cookie(
            self.cookie_name(request),
            self._session,
            httponly=True,
            samesite="strict",
            path="/",
            secure=_https(request),
        )
        return redirect


def _https(request: Request) -> bool:
    # The scheme uvicorn reports: https when it serves TLS itself, or when a trusted
    # proxy (--forwarded-allow-ips) says so with X-Forwarded-Proto.
    return request.url.scheme == "https"


_UNSAFE_PATH_CHARS = "/\\"


def local_target(request: Request) -> str:
    """The request's own path and query, without ``token``, as a path on this origin:
    never ``//host`` or ``/\\host`` (which browsers read as another host), whatever
    the path held, encoded or not (the server hands it over decoded)."""
    # The decoded path (``request.url.path`` has some characters encoded again).
    path = "/" + str(request.scope["path"]).lstrip(_UNSAFE_PATH_CHARS)
    # Percent-encode all but the unreserved characters and "/": a backslash, a tab or
    # a newline (which browsers drop from addresses) cannot turn it into "//host".
    path = quote(path, safe="/-._~!$&'()*+,;=:@")
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    return path + (f"?{query}" if query else "")


def host_name(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8765`` -> ``[::1]``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def _has_nul(request: Request) -> bool:
    """A NUL in the path or query (``%00``): PostgreSQL takes no such text, and no run
    id, name or filter holds one. (Invalid UTF-8 arrives as U+FFFD, which is text.)"""
    pairs = request.query_params.multi_items()  # every value of a repeated parameter
    texts = (str(request.scope["path"]), *(text for pair in pairs for text in pair))
    return any("\x00" in text for text in texts)


class _HeadAsGet:
    """ASGI middleware: a ``HEAD`` request is answered as ``GET`` without the body, on
    every route (Starlette registers ``HEAD`` only for some of them)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: Any, send: _Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(dict(scope, method="GET"), receive, headers_only)


def install(app: FastAPI, *, token: str | None, port: int | None) -> None:
    """Add the access rules, the headers, ``HEAD`` and the error shape to ``app``."""
    access = Access(token, port) if token is not None else None

    @app.middleware("http")
    async def guard(request: Request, call_next: _Next) -> Response:
        try:
            response = await _answer(request, call_next)
        except Exception:
            log.error("steptrace ui: %s %s failed", request.method, request.url.path, exc_info=True)
            response = error(500, "the UI failed to answer this request (see its log)")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _answer(request: Request, call_next: _Next) -> Response:
        if access is not None:
            given = request.query_params.get("token")
            if given is not None and access.is_token(given):
                return access.login(request)
            if not access.admits(request):
                return error(
                    401,
                    "a token is required: open the link steptrace ui printed, "
                    "or send Authorization: Bearer TOKEN",
                    {"WWW-Authenticate": 'Bearer realm="steptrace"'},
                )
        elif host_name(request.headers.get("host", "")) not in LOOPBACK_NAMES:
            return error(403, "this UI answers only requests addressed to 127.0.0.1 or localhost")
        if request.method != "GET":
            return error(405, "the UI is read-only", {"Allow": "GET, HEAD"})
        if _has_nul(request):
            return error(400, "the address holds a NUL character")
        return await call_next(request)

    app.add_middleware(_HeadAsGet)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for item in exc.errors():
            where = ".".join(str(part) for part in item.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        return error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, exc: QueryError) -> Response:
        return error(400, str(exc))

    @app.exception_handler(RunNotFound)
    async def _not_found(request: Request, exc: RunNotFound) -> Response:
        return error(404, str(exc))

"""Credentials masked wherever steptrace shows a URL, a header or an error's text.

One set of rules for every place a store URL, an OTLP endpoint or its headers, or the
text of an exception reaches a person (a message, a warning, ``steptrace status``,
the UI, a row of ``store_health`` or ``otel_export``):

- ``mask_url``: the password in a URL's userinfo (``postgresql://u:****@h/db``) and the
  value of every query parameter whose name looks secret (``?password=****``,
  ``sslpassword``, ``token``, ``api_key``, ``sig``, ``X-Amz-Signature``…; see
  ``is_secret_name``). Everything else is kept as written, so the URL still says which
  store or endpoint it is.
- ``mask_text``: free text (an error message). URLs in it as ``mask_url``; ``name=value``
  and ``name: value`` pairs whose name ends in ``password``, ``secret``, ``token``,
  ``api_key``, ``authorization``… (libpq's conninfo form ``password='…'``); ``Bearer``
  and ``Basic`` credentials; and, anywhere, the exact secret values given (the password
  of the store URL, in the forms a driver may echo). Secrets shorter than
  ``MIN_SECRET_CHARS`` are not searched for in free text: masking every ``a`` of a
  message would hide it without hiding anything worth hiding.
- ``mask_headers``: every header value (an OTLP header is there to authenticate, and
  vendors' names for their key vary: ``x-honeycomb-team``, ``dd-api-key``…).

These rules are fixed (not the configurable redaction of recorded values): what they
protect is the process's own credentials.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, unquote_plus

MASK = "****"
MIN_SECRET_CHARS = 4

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "token",
        "key",
        "apikey",
        "auth",
        "authorization",
        "sig",
        "signature",
        "credential",
        "credentials",
        "cookie",
        "session",
        "sessionid",
        "jwt",
    }
)
_SECRET_PARTS = ("password", "passwd", "secret", "apikey")


def is_secret_name(name: str) -> bool:
    """Whether a parameter or key of this name holds a secret: lower-cased with ``-``
    read as ``_``, it is one of the words (``password``, ``token``, ``key``, ``sig``…),
    ends with ``_`` + one (``api_key``, ``access_token``, ``x_amz_signature``), ends with
    ``token``, or contains ``password``, ``passwd``, ``secret`` or ``apikey``
    (``sslpassword``). ``passfile`` and ``sslkey`` (paths) and ``max_tokens`` are not."""
    norm = name.strip().lower().replace("-", "_")
    if norm in _SECRET_WORDS or norm.endswith("token"):
        return True
    if any(part in norm for part in _SECRET_PARTS):
        return True
    return "_" in norm and norm.rsplit("_", 1)[1] in _SECRET_WORDS


def _split(url: str) -> tuple[str, str, str, str, str] | None:
    """``(scheme://, userinfo@, host and path, ?query, #fragment)`` of a URL, or ``None``
    for a path. As libpq does, the userinfo ends at the last ``@`` before the first
    ``/``, so a password holding an unencoded ``?`` or ``#`` is still found."""
    head, sep, tail = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", head):
        return None
    slash = tail.find("/")
    userinfo, at, rest = tail[: len(tail) if slash == -1 else slash].rpartition("@")
    if at:
        rest = tail[len(userinfo) + 1 :]
        userinfo += "@"
    else:
        userinfo, rest = "", tail
    # A query runs to the end (a fragment's ``#`` may be part of a libpq value).
    rest, question, query = rest.partition("?")
    if question:
        return head + "://", userinfo, rest, question + query, ""
    rest, hash_, fragment = rest.partition("#")
    return head + "://", userinfo, rest, "", hash_ + fragment


def _mask_pairs(text: str, found: list[str] | None = None) -> str:
    """``a=1&password=x`` with secret-named values masked (collected into ``found``)."""
    if not text:
        return text
    lead, body = text[0], text[1:]
    out = []
    for pair in re.split(r"([&;])", body):
        name, eq, value = pair.partition("=")
        if eq and value and value != MASK and is_secret_name(unquote_plus(name)):
            if found is not None:
                found.extend((value, unquote_plus(value)))
            pair = f"{name}={MASK}"
        out.append(pair)
    return lead + "".join(out)


def _masked(url: str, found: list[str] | None = None) -> str:
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, middle, query, fragment = parts
    if userinfo:
        user, colon, password = userinfo[:-1].partition(":")
        if colon and password and password != MASK:
            if found is not None:
                found.extend((password, unquote(password)))
            userinfo = f"{user}:{MASK}@"
    return scheme + userinfo + middle + _mask_pairs(query, found) + _mask_pairs(fragment, found)


def mask_url(url: str) -> str:
    """``url`` for display: its userinfo password and secret-named query (and fragment)
    parameters replaced by ``****``. A path, or a URL with no secret, is returned as is."""
    return _masked(url)


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The secret values in ``url`` (as written and percent-decoded), for ``mask_text``
    to find where a driver echoes them outside the URL."""
    if not url:
        return ()
    found: list[str] = []
    _masked(url, found)
    return tuple(dict.fromkeys(found))


def header_secrets(headers: Mapping[str, str] | str | None) -> tuple[str, ...]:
    """The values of ``headers`` (a mapping, or the ``k=v,k2=v2`` form of
    ``OTEL_EXPORTER_OTLP_HEADERS``), for ``mask_text``."""
    if not headers:
        return ()
    values = headers.values() if isinstance(headers, Mapping) else _header_pairs(headers).values()
    found: list[str] = []
    for value in values:
        value = value.strip()
        found.extend((value, unquote(value)))
        scheme, space, credential = value.partition(" ")
        if space and scheme.lower() in ("bearer", "basic", "token"):
            found.append(credential.strip())
    return tuple(dict.fromkeys(v for v in found if v))


def _header_pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in text.split(","):
        name, eq, value = item.partition("=")
        if name.strip():
            pairs[name.strip()] = value if eq else ""
    return pairs


def mask_headers(headers: Mapping[str, str] | str | None) -> dict[str, str]:
    """Header names with every value shown as ``****`` (a mapping, or the ``k=v,k2=v2``
    form of ``OTEL_EXPORTER_OTLP_HEADERS``)."""
    if not headers:
        return {}
    names = headers if isinstance(headers, Mapping) else _header_pairs(headers)
    return {unquote(name).strip(): MASK for name in names}


_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]+")
_TRAILING = ".,:;!)]}"
_PAIR_IN_TEXT = re.compile(
    # Only names that end in a secret word match, so a pair never swallows the next
    # one (``url: /v1/traces?token=…``). Narrower than ``is_secret_name``: ``key=…``
    # or ``step_key=…`` in a message is seldom a secret, ``?key=`` in a URL is.
    r"(?<![A-Za-z0-9_\-])(?P<name>[A-Za-z0-9_\-]*?"
    r"(?i:pass(?:word|wd|phrase)?|pwd|secret|token|api[_\-]?key|authorization|credentials?))"
    r"(?P<eq>\s*=\s*|:\s+)"
    # libpq quotes a value in '' with \' and \\ escaped (SQL doubles the quote instead).
    r"(?P<value>(?i:bearer|basic|token)\s+[^\s,;&'\"]+|'(?:[^'\\]|\\.|'')*'"
    r"|\"(?:[^\"\\]|\\.)*\"|[^\s,;&'\"]+)"
)
_SCHEME_CREDENTIAL = re.compile(r"\b(?P<scheme>(?i:bearer|basic))\s+[A-Za-z0-9._~+/=\-]{4,}")


def _mask_url_match(match: re.Match[str]) -> str:
    text = match.group(0)
    trail = len(text) - len(text.rstrip(_TRAILING))
    core, tail = (text[:-trail], text[-trail:]) if trail else (text, "")
    return mask_url(core) + tail


def _mask_pair_match(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "'\"" else ""
    # A sentence's full stop after an unquoted value stays (``…?token=x.``).
    tail = "" if quote else value[len(value.rstrip(_TRAILING)) :]
    if value.removesuffix(tail) == MASK:
        return match.group(0)
    return f"{match.group('name')}{match.group('eq')}{quote}{MASK}{quote}{tail}"


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` for display: URLs masked as ``mask_url``, secret-named ``name=value``
    (and ``name: value``) pairs and ``Bearer``/``Basic`` credentials masked, and every
    occurrence of one of ``secrets`` (at least ``MIN_SECRET_CHARS`` long) replaced by
    ``****``."""
    if not text:
        return text
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_IN_TEXT.sub(_mask_url_match, text)
    text = _PAIR_IN_TEXT.sub(_mask_pair_match, text)
    return _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group('scheme')} {MASK}", text)


__all__ = [
    "MASK",
    "header_secrets",
    "is_secret_name",
    "mask_headers",
    "mask_text",
    "mask_url",
    "url_secrets",
]

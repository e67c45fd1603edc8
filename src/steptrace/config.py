"""Process configuration: one explicit object, a process default, and a reset for tests.

Nothing here runs at import time. ``configure()`` validates eagerly, so a mistake
fails at start-up with a message that says what to change; environment
variables (``STEPTRACE_STORE``) are read when the configuration is first needed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from steptrace.errors import ConfigError as ConfigError  # re-exported: older imports
from steptrace.redaction import rule_problem

DEFAULT_STORE_PATH = os.path.join(".steptrace", "steptrace.db")

DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "*password*",
    "*passwd*",
    "*passphrase*",
    "*secret*",
    "*credential*",
    "*apikey*",
    "api_key",
    "api_token",
    "access_token",
    "refresh_token",
    "id_token",
    "*token",
    "sessionid",
    "auth",
    "authorization",
    "pwd",
    "cookie",
    "session",
    "session_id",
    "private_key",
    "signing_key",
    "encryption_key",
    "access_key",
    "account_key",
    "subscription_key",
    "master_key",
    "signature",
    "sig",
    "database_url",
    "dsn",
    "connection_string",
    "conn_str",
)
"""Keys whose values are redacted. Keys are compared in a normal form: lower-case words
joined by ``_``, split at ``-``, ``.``, spaces and camelCase humps (``DBPassword``,
``db-password`` and ``DB_PASSWORD`` are all ``db_password``). A plain entry matches a
key equal to it or ending in ``_`` + it (``openai_api_key``, ``x_api_key``); an entry
with ``*`` is a glob over the whole key (``*password*`` also matches ``dbpassword``).
``max_tokens`` does not match ``token``."""

PROVIDER_KEY_PATTERNS: tuple[str, ...] = (
    r"sk-[A-Za-z0-9_\-]{16,}",  # OpenAI (sk-proj-…), Anthropic (sk-ant-…), OpenRouter, Langfuse
    r"sk_live_[0-9A-Za-z]{16,}",  # Stripe
    r"sk_test_[0-9A-Za-z]{16,}",
    r"rk_live_[0-9A-Za-z]{16,}",
    r"rk_test_[0-9A-Za-z]{16,}",
    r"whsec_[0-9A-Za-z+/=]{16,}",  # Stripe webhook signing secrets
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"ASIA[0-9A-Z]{16}",
    *(rf"gh{kind}_[A-Za-z0-9]{{30,}}" for kind in "pousr"),  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"glpat-[A-Za-z0-9_\-]{20,}",  # GitLab
    r"xox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack tokens
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API keys
    r"ya29\.[0-9A-Za-z_\-]{20,}",  # Google OAuth access tokens
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}",  # SendGrid
    r"npm_[A-Za-z0-9]{36}",  # npm
    r"pypi-AgE[A-Za-z0-9_\-]{50,}",  # PyPI
    r"gsk_[A-Za-z0-9]{20,}",  # Groq
    r"xai-[A-Za-z0-9]{20,}",  # xAI
    r"r8_[A-Za-z0-9]{20,}",  # Replicate
    r"pplx-[A-Za-z0-9]{20,}",  # Perplexity
    r"lsv2_(?:pt|sk)_[A-Za-z0-9_]{20,}",  # LangSmith
    r"dapi[0-9a-f]{32}",  # Databricks
    r"shp(?:at|ss|ca|pa)_[0-9a-fA-F]{32}",  # Shopify
    r"dop_v1_[0-9a-f]{64}",  # DigitalOcean
    r"GOCSPX-[A-Za-z0-9_\-]{24,}",  # Google OAuth client secrets
    r"SK[0-9a-fA-F]{32}",  # Twilio API keys
    r"hooks\.slack\.com/services/[A-Za-z0-9_/]+",  # Slack webhooks
)
"""Secret shapes of the major providers (their documented prefixes). Keys without a
distinctive prefix (AWS secret access keys, Azure) are caught by their names."""

PEM_PATTERN = (
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|(?![\s\S]))"  # or cut short
)
JWT_PATTERN = r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"

DEFAULT_SECRET_PATTERNS: tuple[str, ...] = (*PROVIDER_KEY_PATTERNS, PEM_PATTERN, JWT_PATTERN)
"""Regular expressions for secret-shaped substrings of any string value."""


@dataclass(frozen=True)
class Config:
    """Everything steptrace can be told. Build one with ``configure(...)``."""

    store: str | None = None
    """Store URL or path; ``None`` reads ``STEPTRACE_STORE``, else ``./.steptrace/steptrace.db``."""
    max_value_bytes: int = 1024 * 1024
    """Cap on one serialised value (an input, an output); larger values are truncated."""
    export_value_bytes: int = 8 * 1024
    """Cap on one JSON attribute sent to OpenTelemetry (the store keeps everything)."""
    redact: bool = True
    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS
    secret_patterns: tuple[str, ...] = DEFAULT_SECRET_PATTERNS
    redaction_text: str = "[REDACTED]"
    capture_logs: bool = True
    log_level: int = logging.INFO
    """Lowest level captured. When logging is unconfigured (root at WARNING, no handlers)
    the root logger is lowered to this level so that records are created at all; what
    is printed does not change, since Python's last-resort handler prints WARNING+."""
    openinference: bool = True
    """Also give exported spans OpenInference attributes (``openinference.span.kind``,
    ``input.value``, ``output.value``, ``llm.*``) so Arize Phoenix shows them natively."""
    capture_foreign_spans: bool = True
    """Store spans other OpenTelemetry instrumentation makes inside a run (kind ``other``,
    or ``llm`` with GenAI attributes). Adds a span processor to the application's SDK
    provider at the first run."""
    record_steps_outside_workflow: bool = False
    """A step called outside any workflow runs untraced unless this is on, in which
    case it is recorded as a one-step run named after the step."""

    durable: str | None = None
    """When a run's records are committed: ``"run"`` (the default: before the workflow
    call returns), ``"step"`` (before each step attempt returns: what resuming a crashed
    run needs) or ``"off"`` (in the background, within ~100 ms: fire-and-forget).
    ``None`` reads ``STEPTRACE_DURABLE``."""

    auto_migrate: bool | None = None
    """Apply pending schema migrations when a store is first opened; ``None`` reads
    ``STEPTRACE_AUTO_MIGRATE`` (``0``/``false``/``no``/``off`` turn it off), default on.
    Off: a store whose schema is behind is refused until ``steptrace migrate`` runs."""

    def store_url(self) -> str:
        url = self.store or os.environ.get("STEPTRACE_STORE") or DEFAULT_STORE_PATH
        refuse_memory_store(url)
        return url

    def durability(self) -> str:
        """The durability level in force: ``"run"``, ``"step"`` or ``"off"``."""
        if self.durable is not None:
            return self.durable
        return durability_level(os.environ.get("STEPTRACE_DURABLE") or "run", "STEPTRACE_DURABLE")

    def auto_migrate_enabled(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        value = os.environ.get("STEPTRACE_AUTO_MIGRATE", "").strip().lower()
        return value not in ("0", "false", "no", "off")

    def validate(self) -> Config:
        if self.store:
            refuse_memory_store(self.store)
        if self.store and "://" in self.store:
            scheme = self.store.split("://", 1)[0].lower()
            if scheme not in ("sqlite", "postgresql", "postgres", "memory"):
                raise ConfigError(
                    f"unknown store URL scheme {scheme!r}: use a file path, sqlite:///path, "
                    "postgresql://user@host/database or memory://NAME (tests)"
                )
        if self.durable is not None:
            durability_level(self.durable, "durable")
        if self.max_value_bytes < 256:
            raise ConfigError(f"max_value_bytes={self.max_value_bytes} is too small: use >= 256")
        if self.export_value_bytes < 64:
            raise ConfigError(
                f"export_value_bytes={self.export_value_bytes} is too small: use >= 64"
            )
        problems = [rule_problem("key", k) for k in self.secret_keys] + [
            rule_problem("pattern", p) for p in self.secret_patterns
        ]
        if any(problems):
            raise ConfigError("; ".join(p for p in problems if p))
        if not isinstance(self.redaction_text, str) or not self.redaction_text:
            raise ConfigError("redaction_text must be a non-empty string")
        return self


def refuse_memory_store(url: str) -> None:
    """An in-memory SQLite store is refused: the writer and each reader open their own
    connection, and each connection to ``:memory:`` is a database of its own, so every
    record would be written where nothing reads it."""
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url
    if path in ("", ":memory:") or path.startswith("file::memory:"):
        raise ConfigError(
            f"store {url!r} is an in-memory SQLite database, which the writer and the "
            "readers cannot share (each connection gets its own): give a file path, or "
            "memory://NAME for a store in this process's memory (for tests; see "
            "steptrace.testing)"
        )


DURABILITY_LEVELS = ("run", "step", "off")


def durability_level(value: object, name: str = "durable") -> str:
    """``value`` as a durability level: ``True`` is ``"step"``, ``False`` is ``"off"``;
    ``ConfigError`` for anything else than the levels."""
    if value is True:
        return "step"
    if value is False:
        return "off"
    if isinstance(value, str) and value.strip().lower() in DURABILITY_LEVELS:
        return value.strip().lower()
    raise ConfigError(
        f"{name}={value!r} is not a durability level: use 'run' (the default: committed "
        "when the workflow call returns), 'step' (each step committed before it returns; "
        "also durable=True) or 'off' (fire-and-forget; also durable=False)"
    )


_lock = threading.Lock()
_config: Config | None = None


def get_config() -> Config:
    """The process configuration (defaults until ``configure`` is called)."""
    global _config
    config = _config
    if config is None:
        with _lock:
            if _config is None:
                _config = Config().validate()
            config = _config
    return config


def apply(new: Config) -> Config:
    """Put ``new`` (validated) in force and tell the listeners (``on_change``): what
    ``configure`` does once it has built and checked the new configuration."""
    global _config
    with _lock:
        _config = new
    _changed(reset=False)  # e.g. the writer closes: the next run opens the (maybe new) store
    return new


def reset() -> None:
    """Back to defaults, closing the store writer. For tests."""
    global _config
    _changed(reset=True)  # the writer commits what was recorded, under that configuration
    with _lock:
        _config = None
    _changed(reset=True)  # and nothing keeps what it made from it (the value pipeline)


_listeners: list[Callable[[bool], None]] = []


def on_change(listener: Callable[[bool], None]) -> None:
    """Call ``listener(reset)`` after each ``configure`` (``reset`` False) and before a
    ``reset`` (True). Modules that keep something made from the configuration (the
    value pipeline, the store writer) register here when they are imported, so the
    configuration need not know them."""
    _listeners.append(listener)


def _changed(*, reset: bool) -> None:
    for listener in list(_listeners):
        listener(reset)


__all__ = ["Config", "ConfigError", "apply", "get_config", "on_change", "reset"]

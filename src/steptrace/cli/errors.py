"""How the command line reports what went wrong: ``CLIError`` for a mistake the user
can fix, ``report`` turning any exception into one ``error: …`` line on stderr and an
exit code, and ``masked``, which keeps credentials out of every message.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import click

import steptrace as st
from steptrace.cli.output import one_line
from steptrace.config import get_config
from steptrace.masking import mask_text, url_secrets


class CLIError(Exception):
    """A mistake on the command line: reported as one line, without a traceback, and
    the command exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextmanager
def refused(*kinds: type[Exception]) -> Iterator[None]:
    """An exception of ``kinds`` raised in the block is a request that cannot be carried
    out: a ``CLIError`` (one line, exit code 2)."""
    try:
        yield
    except kinds as exc:
        raise CLIError(str(exc), exit_code=2) from None


def masked(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` for the terminal: the store's and the OTLP export's credentials masked,
    and ``secrets`` (an error's text may echo them: libpq quotes the URL it could not
    parse)."""
    # Imported here: the OTLP module pulls in the SDK, which `steptrace --help` never needs.
    from steptrace.otel.otlp import export_secrets

    try:
        known = (*url_secrets(get_config().store_url()), *export_secrets(), *secrets)
    except Exception:  # a message must get out whatever the configuration
        known = ()
    return mask_text(text, known)


def report(exc: Exception, *, debug: bool, secrets: Sequence[str] = ()) -> int:
    """Write ``exc`` to stderr as one ``error: …`` line (``debug``: its traceback first),
    credentials and ``secrets`` masked; return the exit code (2 for a usage error, a
    ``CLIError``'s own, else 1)."""
    if isinstance(exc, click.UsageError):  # raised by a command's body: still exit code 2
        sys.stdout.flush()
        sys.stderr.write(f"error: {masked(one_line(exc.format_message()), secrets)}\n")
        return 2
    expected = isinstance(exc, CLIError | st.ConfigError | st.RunNotFound)
    if debug:
        sys.stderr.write(masked("".join(traceback.format_exception(exc)), secrets))
    message = one_line(str(exc)) if expected else f"{type(exc).__name__}: {one_line(str(exc))}"
    message = masked(message, secrets)
    hint = "" if expected or debug else " (run with --debug for the traceback)"
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}{hint}\n")
    return exc.exit_code if isinstance(exc, CLIError) else 1

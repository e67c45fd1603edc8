"""A store whose runs belong to known sessions, for what shows them (the UI's
``test_ui_sessions.py``).

``record(url)`` makes these runs through the public API, in this order:

- ``turns``: the three runs of session ``SESSION`` (a slash and markup in its id), made
  by ``chat`` (``@st.workflow(session="user")``): the first answers text, the second
  fails, the third answers an object (``{"reply": …, "mood": …}``); their messages
  are ``MESSAGES``;
- ``other``: the one run of session ``OTHER``;
- ``loose``: a run in no session (its user is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import steptrace as st
from tests.support.helpers import recording_into

SESSION = "ada/help <b>desk</b>"
OTHER = "bob"
MESSAGES = ("hello <img src=x onerror=alert(1)>", "please fail", "thanks")


@st.step
def answer(message: str) -> str:
    if "fail" in message:
        raise RuntimeError("the answering service is down")
    return f"echo: {message}"


@st.workflow(session="user")
def chat(user: str | None, message: str) -> Any:
    reply = answer(message)
    return reply if message == MESSAGES[0] else {"reply": reply, "mood": "glad"}


@dataclass(frozen=True)
class Sessions:
    url: str
    turns: tuple[str, ...]
    """The runs of ``SESSION`` in start order."""
    other: str
    loose: str


def record(url: str | Path) -> Sessions:
    """Make the runs in a fresh store at ``url`` and close the writer."""
    url = str(url)
    with recording_into(url):
        turns = tuple(st.run(chat, SESSION, message).run_id for message in MESSAGES)
        other = st.run(chat, OTHER, "hi").run_id
        loose = st.run(chat, None, "hi").run_id  # anonymous: no session
    return Sessions(url, turns, other, loose)

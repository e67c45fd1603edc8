"""A workflow of one checked step, for the tests of checks and judges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import steptrace as st


def reply_workflow(checks: Sequence[Any]) -> Callable[[str], str]:
    """``reply(customer)``: a workflow whose one step, ``draft``, answers
    ``"Dear {customer}, thank you."`` and is checked by ``checks``."""

    @st.step(name="draft", checks=checks)
    def draft(customer: str) -> str:
        return f"Dear {customer}, thank you."

    @st.workflow(name="reply")
    def reply(customer: str) -> str:
        return draft(customer)

    return reply

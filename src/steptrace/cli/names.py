"""Runs, workflows and steps as the user names them on the command line: the shortest
run-id prefix worth showing, and a ``CLIError`` listing the known names when a
workflow or step name matches nothing in the store.
"""

from __future__ import annotations

import steptrace as st
from steptrace.cli.errors import CLIError
from steptrace.record import stored_name


def short_prefix(store: st.Store, run_id: str) -> str:
    """The shortest prefix of at least 8 characters that names this run alone."""
    for length in range(8, len(run_id)):
        try:
            if store.resolve(run_id[:length]) == run_id:
                return run_id[:length]
        except st.RunNotFound:
            continue
    return run_id


def check_workflow(store: st.Store, workflow: str) -> None:
    """Raise a CLIError listing the workflows when the store has no runs of
    ``workflow``."""
    known = store.workflows()
    if stored_name(workflow) not in known:
        raise CLIError(
            f"no workflow named {workflow!r} in {store.url}; "
            + (f"workflows: {', '.join(known)}" if known else "the store has no runs")
        )


def check_step(store: st.Store, step: str, workflow: str | None = None) -> None:
    """Raise a CLIError listing the steps when none named ``step`` was recorded (in runs
    of ``workflow``)."""
    if workflow is not None:
        check_workflow(store, workflow)
    known = store.step_names(workflow)
    if stored_name(step) not in known:
        scope = f" in workflow {workflow!r}" if workflow else ""
        raise CLIError(
            f"no step named {step!r}{scope}; "
            + (f"steps: {', '.join(known)}" if known else "no steps are recorded")
        )

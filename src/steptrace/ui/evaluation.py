"""The UI's evaluation routes: scores (the names in the store, and the score columns of
a page of runs) and experiments (the list, one experiment, two side by side).
``add_routes`` adds them to the app ``steptrace.ui.app`` makes, with the same
``api_get`` (JSON ``GET`` routes under ``/api/v1``, described for ``/openapi.json``):
like every route of the UI they only read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query

from steptrace.errors import EvaluationError
from steptrace.evals.experiments import compare, load
from steptrace.evals.overview import experiment_summaries
from steptrace.query.score_columns import COLUMNS_MAX
from steptrace.store import Store
from steptrace.ui import schema
from steptrace.ui.security import error

RUNS_MAX = 200
"""The most runs one ``/scores/columns`` request names (a page of the runs table is 50;
the ids travel in the address, which servers cap at a few kilobytes)."""

ApiGet = Callable[[str, str, Any], Callable[[Any], Any]]
PAGES = ("/experiments", "/experiments/compare", "/experiments/{name:path}")
"""The pages of these routes (served the UI's one HTML shell)."""


def add_routes(store: Store, api_get: ApiGet) -> None:
    """Add the evaluation routes over ``store``."""

    @api_get("/scores/names", "scores", list[str])
    def score_names() -> Any:
        """The score names in the store, sorted: the columns the runs table can add."""
        return store.score_names()

    @api_get("/scores/columns", "scores", schema.score_columns_model())
    def score_columns(
        run: Annotated[
            list[str],
            Query(description=f"run ids, at most {RUNS_MAX}", min_length=1, max_length=RUNS_MAX),
        ],
        name: Annotated[
            list[str],
            Query(
                description=f"score names, at most {COLUMNS_MAX}",
                min_length=1,
                max_length=COLUMNS_MAX,
            ),
        ],
    ) -> Any:
        """Per run and score name: the run's own score of that name, else the mean of its
        spans' values (their most common category), or null. One query for the page."""
        return store.score_columns(run, name)

    @api_get("/experiments", "experiments", list[schema.ExperimentSummary])
    def experiments() -> Any:
        """Every experiment, newest first: its header, items, succeeded and failed, and
        per score name the mean over the items it scored."""
        return experiment_summaries(store)

    # Before /experiments/{name}: "compare" is not a name an experiment may take.
    @api_get("/experiments/compare", "experiments", schema.ExperimentComparison)
    def experiments_compare(a: str, b: str) -> Any:
        """Experiment ``b`` against experiment ``a``: the aggregates side by side, then
        each dataset item as each ran it, with the changed ones named."""
        try:
            return compare(store, a, b).to_dict()
        except EvaluationError as exc:
            return error(404, str(exc))

    @api_get("/experiments/{name:path}", "experiments", schema.Experiment)
    def experiment(name: str) -> Any:
        """One experiment with its aggregates and its items (in dataset order)."""
        try:
            return load(store, name).to_dict()
        except EvaluationError as exc:
            return error(404, str(exc))

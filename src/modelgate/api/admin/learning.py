"""``/admin/models/{model}/learn``: the learning loop's runs (docs/learning.md). A run is
started here and goes on in the background; its state is read by id."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from modelgate.learning.runs import LearningService

__all__ = ["add_learning_routes"]


def add_learning_routes(
    app: FastAPI,
    learning: LearningService,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
    ip: Callable[[Request], str | None],
) -> None:
    @app.post("/admin/models/{model}/learn", tags=["learning"], status_code=202)
    async def start_learning(model: str, caller: Caller, request: Request) -> dict[str, Any]:
        """Start a run of the model's learning loop (its manifest's ``learning`` section):
        data set, training, evaluation against the serving version, registration and a
        canary. Answers the run at once (status ``running``); 409 while one runs; 400 for
        a model without a ``learning`` section. Needs ``tenants:admin``; audited."""
        return await learning.start(caller, model, source_ip=ip(request))

    @app.get("/admin/models/{model}/learn", tags=["learning"])
    async def list_learning_runs(
        model: str,
        caller: Caller,
        limit: Annotated[int, Query(ge=1, le=100, description="Runs, newest first.")] = 20,
    ) -> list[dict[str, Any]]:
        """The model's learning runs, newest first, without their reports."""
        return await learning.runs(caller, model, limit)

    @app.get("/admin/models/{model}/learn/{run_id}", tags=["learning"])
    async def get_learning_run(model: str, run_id: str, caller: Caller) -> dict[str, Any]:
        """One run: status (``running``, ``succeeded``, ``rejected``, ``failed``,
        ``interrupted``), stage and progress, and its report (data set and what
        sanitization removed, training, evaluation with the gates, the new version and its
        canary)."""
        return await learning.get(caller, model, run_id)

"""``modelgate worker`` (run jobs) and ``modelgate jobs list|show|retry|purge`` (operator
commands on the database directly, like ``modelgate tenants``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelgate.cli.operator import print_whole
from modelgate.core.jobs.jobs import Job, JobQuery, JobState
from modelgate.errors import ModelgateError

__all__ = ["jobs_app", "worker"]

jobs_app = typer.Typer(no_args_is_help=True, help="Asynchronous jobs: list, show, retry, purge.")
console = Console()

#: the states `jobs retry` puts back in the queue
_RETRIABLE = frozenset({JobState.DEAD, JobState.FAILED, JobState.CANCELLED})

ConfigOption = Annotated[str | None, typer.Option("--config", help="YAML settings file.")]


def worker(
    model_repository: Annotated[Path | None, typer.Option(help="Folder of models.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
    worker_id: Annotated[
        str | None, typer.Option(help="This worker's name in leases (default: host-pid).")
    ] = None,
    slots: Annotated[int | None, typer.Option(help="Jobs run at once.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    config: ConfigOption = None,
) -> None:
    """Run asynchronous jobs from the database (MODELGATE_DATABASE_URL) until stopped."""
    from modelgate.settings import load_settings
    from modelgate.worker import run_worker

    flags: dict[str, Any] = {
        "model_repository": model_repository,
        "data_dir": data_dir,
        "jobs_worker_slots": slots,
        "log_level": log_level,
    }
    try:
        settings = load_settings(flags, config)
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from None
    if settings.role != "gateway" and not settings.model_repository.is_dir():
        console.print(f"[red]model repository not found:[/] {settings.model_repository}")
        raise typer.Exit(2)
    run_worker(settings, worker_id)


def _queue_run(config: str | None, work: Any, settings: Any = None) -> Any:
    """Run ``work(queue)`` on the database of ``settings`` (read from ``config`` when not
    given)."""
    from modelgate.settings import load_settings
    from modelgate.storage.sql.engine import create_engine, database_url_for, migrate
    from modelgate.storage.sql.jobs import SqlJobQueue

    settings = settings or load_settings(config_file=config)
    url = database_url_for(
        settings.data_dir,
        settings.database_url.get_secret_value() if settings.database_url else None,
    )

    async def main() -> Any:
        await migrate(url)
        engine = create_engine(url)
        try:
            return await work(SqlJobQueue(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except ModelgateError as exc:
        console.print(f"[red]{exc.kind.value}:[/] {exc.message}")
        raise typer.Exit(1) from None


_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "dead": "bold red",
    "cancelled": "dim",
}


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _row(job: Job) -> list[str]:
    style = _STYLE.get(job.state.value, "")
    return [
        job.id,
        job.model + (f"@{job.version}" if job.version else ""),
        f"[{style}]{job.state.value}[/]",
        str(job.priority),
        f"{job.completed + job.failed}/{job.total}"
        + (f" ({job.failed} err)" if job.failed else ""),
        f"{job.attempts}/{job.max_attempts}",
        _time(job.created_at),
        (job.error or "")[:60],
    ]


@jobs_app.command("list")
def list_jobs(
    tenant: Annotated[str, typer.Option(help="The tenant id (ten_...; 'anonymous' without auth).")],
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    config: ConfigOption = None,
) -> None:
    """A tenant's jobs, newest first."""
    state = JobState(status) if status else None
    jobs = _queue_run(config, lambda q: q.list_jobs(JobQuery(tenant, state, limit=limit)))
    table = Table()
    # the id whole, however narrow the terminal: it is what `jobs show` and `retry` take
    table.add_column("id", no_wrap=True, min_width=28)
    for name in ("model", "status", "prio", "items", "attempts", "created", "error"):
        table.add_column(name)
    for job in jobs:
        table.add_row(*_row(job))
    print_whole(table)  # piped: whole rows, not Rich's 80 columns with states cut to "ca…"


@jobs_app.command("show")
def show_job(job_id: str, config: ConfigOption = None) -> None:
    """One job: state, progress, times, attempts, error."""
    job = _queue_run(config, lambda q: q.get(job_id))
    if job is None:
        console.print(f"[red]no job {job_id}[/]")
        raise typer.Exit(1)
    table = Table(show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for name, value in zip(
        ("id", "model", "status", "priority", "items", "attempts", "created", "error"),
        _row(job),
        strict=True,
    ):
        table.add_row(name, value)
    table.add_row("tenant", job.tenant_id)
    table.add_row("started", _time(job.started_at))
    table.add_row("finished", _time(job.finished_at))
    table.add_row("worker", job.worker or "-")
    console.print(table)


@jobs_app.command("retry")
def retry_job(job_id: str, config: ConfigOption = None) -> None:
    """Put a dead, failed or cancelled job back in the queue (its attempts start again)."""

    async def work(queue: Any) -> tuple[Job | None, Job | None]:
        before = await queue.get(job_id)
        if before is None or before.state not in _RETRIABLE:
            return before, None
        return before, await queue.requeue(job_id, None, datetime.now(UTC))

    before, job = _queue_run(config, work)
    if before is None:
        console.print(f"[red]no job {job_id}[/]")
        raise typer.Exit(1)
    if job is None or job.state is not JobState.QUEUED:
        state = (job or before).state.value
        console.print(f"[red]not retried:[/] the job is {state}")
        raise typer.Exit(1)
    console.print(f"[green]queued again[/] {job.id}")


@jobs_app.command("purge")
def purge_jobs(config: ConfigOption = None) -> None:
    """Delete the finished jobs past MODELGATE_JOBS_RETENTION_DAYS now, with their requests
    and results (workers also do it every hour)."""
    from modelgate.core.jobs.worker import purge_finished
    from modelgate.settings import load_settings

    settings = load_settings(config_file=config)
    before = datetime.now(UTC) - timedelta(days=settings.jobs_retention_days)
    count = _queue_run(config, lambda q: purge_finished(q, before), settings)
    console.print(f"[green]{count} finished jobs deleted[/] (ended before {_time(before)})")

"""What every benchmark shares: the run's context (models, durations, rounds, where servers and
load generators run) and what a benchmark returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")


SERVER_CPU = "0"  # servers pinned here ...


LOAD_CPU = "1"  # ... load generators here, where pinning makes the comparison fairer


@dataclass
class Ctx:
    models: Path
    duration: float
    rounds: int
    work: Path
    console: Console
    #: seconds this invocation may still spend waiting for a quiet machine (shared, mutable)
    quiet_budget: list[float] = field(default_factory=lambda: [60.0])
    #: the key modelgate's requests carry: "admin" (bootstrap) or "tenant" (bench.tenant)
    auth: str = "admin"
    #: with a URL, every modelgate server keeps its limits, quotas and strikes in this Redis
    #: under ``redis_prefix`` (removed by ``python -m bench`` at the end)
    redis_url: str | None = None
    redis_prefix: str | None = None

    @property
    def short(self) -> float:
        """Seconds of a concurrency-1 round."""
        return max(3.0, self.duration * 0.4)

    def once(self) -> Ctx:
        """The same context with a single round."""
        return dataclasses.replace(self, rounds=1)

    def log(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/]")


@dataclass
class Check:
    what: str
    measured: str
    target: str
    passed: bool | None  # None: informational


@dataclass
class Result:
    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

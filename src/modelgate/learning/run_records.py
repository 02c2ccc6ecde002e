"""A learning run's record in the model repository (learning/runs.py runs it):
``<model>/.learning/<run id>/run.json``, rewritten atomically at each stage, so that any
replica reading the same repository answers for the run, and the lock beside it that keeps
two replicas from running one model's loop at once (``run_lock.py``). What a record says
(stage, progress, status, message, times) is written here; what the run does, there."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from modelgate.learning import run_lock
from modelgate.learning.registration import RUNS_FOLDER, write_json_atomically

__all__ = ["MODEL_NAME", "RUN_FILE", "STAGES", "RunRecords", "ended_at", "read_record"]

STAGES: tuple[str, ...] = ("dataset", "train", "evaluate", "register", "rollout")
RUN_FILE = "run.json"
#: what a model name may be (a model's folder name, as the repository reads it)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunRecords:
    """The run records and locks of the models of the repository at ``repository``."""

    def __init__(self, repository: Path, now: Callable[[], datetime]) -> None:
        self.repository = repository
        self._now = now

    def runs_dir(self, model: str) -> Path:
        return self.repository / model / RUNS_FOLDER

    def folders(self, model: str) -> list[Path]:
        """The model's run folders, newest first."""
        try:
            entries = [e for e in self.runs_dir(model).iterdir() if e.name.startswith("run_")]
        except FileNotFoundError:
            return []
        return sorted(entries, key=lambda e: e.name, reverse=True)

    def read(self, folder: Path) -> dict[str, Any] | None:
        """The record in ``folder``; None where there is none that reads."""
        return read_record(folder / RUN_FILE)

    def last(self, model: str) -> dict[str, Any] | None:
        """The model's newest record that reads."""
        for folder in self.folders(model):
            run = self.read(folder)
            if run is not None:
                return run
        return None

    def lock(self, model: str, run_id: str) -> bool:
        return run_lock.take(self.runs_dir(model), run_id)

    def refresh_lock(self, model: str, run_id: str) -> None:
        run_lock.refresh(self.runs_dir(model), run_id)

    def unlock(self, model: str, run_id: str) -> None:
        run_lock.release(self.runs_dir(model), run_id)

    def live(self, model: str) -> str | None:
        """The run id the model's fresh lock names (a run going on, here or elsewhere)."""
        return run_lock.live(self.runs_dir(model))

    def advance(self, folder: Path, run: dict[str, Any], stage: str, message: str) -> None:
        """The run enters ``stage``: its lock refreshed, its record rewritten."""
        self.refresh_lock(run["model"], run["id"])
        run["stage"] = stage
        run["progress"] = {"completed": STAGES.index(stage), "total": len(STAGES)}
        run["message"] = message
        self.save(folder, run)

    def finish(self, folder: Path, run: dict[str, Any], status: str, message: str) -> None:
        run["status"] = status
        run["message"] = message
        run["finished_at"] = self._now().isoformat()
        if status == "succeeded":
            run["progress"] = {"completed": len(STAGES), "total": len(STAGES)}
        self.save(folder, run)

    def save(self, folder: Path, run: dict[str, Any]) -> None:
        write_json_atomically(folder / RUN_FILE, run)


def ended_at(run: dict[str, Any]) -> datetime | None:
    """When the run ended (or, still marked running, began)."""
    try:
        return datetime.fromisoformat(str(run.get("finished_at") or run["created_at"]))
    except (KeyError, ValueError):
        return None


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None

"""A plain-text progress reporter for ``jobs.wait`` (no Rich, no terminal tricks beyond a
carriage return, so it reads the same in a log file)."""

from __future__ import annotations

import sys
from typing import TextIO

from modelgate_client._models import Job

__all__ = ["TextProgress"]


class TextProgress:
    """``on_progress`` for ``jobs.wait``: writes ``job_x: running 40/100 done, 1 failed`` to
    ``stream`` (stderr by default), on one line that each report overwrites when the stream
    is a terminal, on a line of its own otherwise; a newline once the job is finished."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def __call__(self, job: Job) -> None:
        stream = self._stream or sys.stderr
        progress = job.progress
        line = (
            f"{job.id}: {job.status} {progress.done}/{progress.total} done, "
            f"{progress.failed} failed"
        )
        if stream.isatty():
            stream.write("\r" + line + ("\n" if job.finished else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

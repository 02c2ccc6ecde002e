"""The server's accept queue during a run, seen from outside: ``ss -ltnH`` every
``PERIOD_S`` (iproute2's socket statistics; for a listening socket its Recv-Q is the
connections waiting to be accepted, its Send-Q the queue's bound). Under a flood this is
where most unanswered requests wait (docs/operations.md, "Seeing the accept queue"); the
server's own ``modelgate_http_accept_queue_connections`` says the same, but a saturated
server answers its scrape late."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["AcceptQueue", "listen_queue", "sampled"]

PERIOD_S = 0.25


@dataclass
class AcceptQueue:
    """What the samples saw: each (seconds since the start, waiting), and the bound."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    limit: int = 0

    def summary(self) -> str:
        if not self.samples:
            return "not seen (no ss)"
        peak = max(waiting for _, waiting in self.samples)
        quarter = sum(PERIOD_S for _, waiting in self.samples if 4 * waiting > self.limit)
        return (
            f"peak {peak:,} of {self.limit:,} connections waiting; over a quarter of it for "
            f"{quarter:g} s of {len(self.samples) * PERIOD_S:g} s"
        )


def listen_queue(ss_output: str) -> tuple[int, int] | None:
    """(waiting, bound) from ``ss -ltnH`` output for one listening port (its first line:
    ``LISTEN Recv-Q Send-Q local peer``), None if it lists none."""
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "LISTEN":
            return int(fields[1]), int(fields[2])
    return None


@contextmanager
def sampled(port: int) -> Iterator[AcceptQueue]:
    """Sample ``port``'s accept queue while the block runs (nothing where ``ss`` is not
    installed)."""
    seen = AcceptQueue()
    ss = shutil.which("ss")
    if ss is None:
        yield seen
        return
    stop = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not stop.wait(PERIOD_S):
            done = subprocess.run(
                [ss, "-ltnH", f"sport = :{port}"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            queue = listen_queue(done.stdout)
            if queue is not None:
                seen.samples.append((time.monotonic() - start, queue[0]))
                seen.limit = queue[1]

    thread = threading.Thread(target=sample, name="accept-queue", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()

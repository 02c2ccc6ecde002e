"""Run ``modelgate`` with its garbage-collector pauses recorded, optionally after ``gc.freeze()``.

    python -m bench.gc_probe [--freeze] serve --http-port 8000 ...

The same ``modelgate`` command line, plus: every collection's duration per generation is
appended to ``$BENCH_GC_FILE`` (JSON lines ``[generation, seconds]``, flushed every 0.5 s).
``--freeze`` waits until the server answers ready, then runs ``gc.collect(); gc.freeze()``
so the objects alive after start-up (modules, models, settings) are no longer scanned by
full collections: the change the benchmark proposes for ``modelgate.server``.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import urllib.request
from typing import Any

_started: dict[int, float] = {}
_pending: list[tuple[int, float]] = []


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    generation = int(info["generation"])
    if phase == "start":
        _started[generation] = time.perf_counter()
    elif generation in _started:
        _pending.append((generation, time.perf_counter() - _started.pop(generation)))


def _writer(path: str) -> None:
    while True:
        time.sleep(0.5)
        if _pending:
            batch = _pending[:]
            del _pending[: len(batch)]
            with open(path, "a") as file:
                file.writelines(f"[{g}, {s:.6f}]\n" for g, s in batch)


def _freeze_when_ready(argv: list[str]) -> None:
    port = argv[argv.index("--http-port") + 1]
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    gc.collect()
    gc.freeze()
    print(f"gc_probe: froze {gc.get_freeze_count()} objects", file=sys.stderr, flush=True)


def main() -> None:
    argv = sys.argv[1:]
    freeze = "--freeze" in argv
    argv = [a for a in argv if a != "--freeze"]
    path = os.environ.get("BENCH_GC_FILE")
    if path:
        gc.callbacks.append(_on_gc)
        threading.Thread(target=_writer, args=(path,), daemon=True).start()
    if freeze:
        threading.Thread(target=_freeze_when_ready, args=(argv,), daemon=True).start()
    from modelgate.cli import main as modelgate_main

    sys.argv = ["modelgate", *argv]
    modelgate_main()


if __name__ == "__main__":
    main()

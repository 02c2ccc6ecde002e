"""Running a trainer: its job written to a folder, the trainer called in a process of its
own (``trainer_process.py``) with a time limit, and what it answered read back.

The process gets an allow-listed environment: the basic variables a Python process needs
(``BASIC_ENVIRONMENT``) and the names the manifest lists in ``learning.environment``, never
a ``MODELGATE_*`` setting; nothing else of the server's environment (database and Redis
URLs, exporter headers, keys) reaches it. The trainer is still operator code run as the
server's user (docs/security.md, "The learning loop's trainer"). It runs
in its own process group, killed whole when the time is up. Its output goes to
``trainer.log`` in the folder (the last lines are in the run's report when it fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelgate.core.serving.manifest import ModelManifest
from modelgate.learning.trainer_api import DATA_FILE, JOB_FILE, TEXT_FILE

__all__ = ["TrainerError", "run_trainer", "trainer_environment", "write_job"]

LOG_FILE = "trainer.log"
RESULT_FILE = "result.json"
#: what a trainer's process gets of the server's environment, besides the manifest's names
BASIC_ENVIRONMENT: frozenset[str] = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH",
     "PYTHONHOME", "VIRTUAL_ENV", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
     "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"}
)  # fmt: skip
_LOG_TAIL = 4000


class TrainerError(Exception):
    """The trainer did not produce a candidate: the reason and the end of its log."""

    def __init__(self, reason: str, log_tail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_tail = log_tail


def write_job(
    folder: Path,
    manifest: ModelManifest,
    inputs: dict[str, np.ndarray[Any, Any]],
    labels: np.ndarray[Any, Any],
    kept: dict[str, list[int]],
    options: dict[str, Any],
    seed: int,
) -> Path:
    """The job's files in ``folder``; answers where the artifact must be written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        f"input:{name}": array for name, array in inputs.items() if array.dtype != object
    }
    np.savez(folder / DATA_FILE, labels=labels, **arrays)
    texts = sorted(name for name, array in inputs.items() if array.dtype == object)
    if texts:  # JSON lines: each value as long as it is (fixed-width unicode pads every row
        # to the longest one), and nothing pickled
        with open(folder / TEXT_FILE, "w", encoding="utf-8") as file:
            for row in range(len(labels)):
                values = {name: _plain(inputs[name][row]) for name in texts}
                file.write(json.dumps(values) + "\n")
    feature_names: dict[str, list[str]] = {}
    removed: dict[str, list[str]] = {}
    full_width: dict[str, int] = {}
    for tensor in manifest.inputs:
        names = list(tensor.feature_names or ())
        width = int(np.prod(tensor.shape[1:])) if len(tensor.shape) > 1 else 1
        full_width[tensor.name] = width
        if tensor.name not in kept:
            removed[tensor.name] = names or ["*"]
            continue
        columns = kept[tensor.name]
        if names:
            feature_names[tensor.name] = [names[i] for i in columns]
            removed[tensor.name] = [n for i, n in enumerate(names) if i not in columns]
        else:
            removed[tensor.name] = []
    output = Path("candidate") / manifest.artifact
    (folder / output).parent.mkdir(parents=True, exist_ok=True)
    job = {
        "model": manifest.name,
        "inputs": sorted(inputs),
        "text_inputs": texts,
        "feature_names": feature_names,
        "removed": removed,
        "full_width": full_width,
        "signature": {
            "inputs": [t.model_dump(mode="json") for t in manifest.inputs],
            "outputs": [t.model_dump(mode="json") for t in manifest.outputs],
        },
        "options": options,
        "output": str(output),
        "seed": seed,
    }
    (folder / JOB_FILE).write_text(json.dumps(job, indent=1), encoding="utf-8")
    return folder / output


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def trainer_environment(
    base: Mapping[str, str] | None = None, extra: Iterable[str] = ()
) -> dict[str, str]:
    """What of ``base`` (the process's environment) a trainer gets: the basic variables,
    the locale's (``LC_*``) and ``extra`` (the manifest's ``learning.environment``), never a
    modelgate setting."""
    source = os.environ if base is None else base
    wanted = BASIC_ENVIRONMENT | set(extra)
    return {
        name: value
        for name, value in source.items()
        if (name in wanted or name.startswith("LC_")) and not name.startswith("MODELGATE_")
    }


async def run_trainer(
    folder: Path,
    entry: str,
    *,
    python: str,
    timeout_s: float,
    environment: Iterable[str] = (),
) -> dict[str, Any]:
    """Run ``entry`` on the job in ``folder``; its answer (``trainer_process`` wrote it), or
    :class:`TrainerError`."""
    log_path = folder / LOG_FILE
    with open(log_path, "wb") as log:  # noqa: ASYNC230 - creating an empty file, not I/O-bound
        process = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "modelgate.learning.trainer_process",
            str(folder),
            entry,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=trainer_environment(extra=environment),
            cwd=str(folder),
            start_new_session=True,  # its own process group, killed whole
        )
        try:
            code = await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            raise TrainerError(
                f"the trainer ran past learning.timeout_seconds ({timeout_s:g} s)",
                _tail(log_path),
            ) from None
        except BaseException:  # cancelled (the server stops): the trainer stops with it
            _kill_group(process.pid)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(process.wait())
            raise
    if code != 0:
        raise TrainerError(f"the trainer exited with status {code}", _tail(log_path))
    try:
        answer: dict[str, Any] = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainerError(f"the trainer's result is unreadable: {exc}", _tail(log_path)) from None
    return answer


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, path.stat().st_size - _LOG_TAIL))
            return file.read().decode("utf-8", errors="replace")
    except OSError:
        return ""

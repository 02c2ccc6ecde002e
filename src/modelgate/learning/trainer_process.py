"""``python -m modelgate.learning.trainer_process FOLDER ENTRY``: one trainer run, in the
process the learning loop started for it (``training.py``). Reads the job from FOLDER,
calls ENTRY (``package.module:function``) and writes what it answered to
``FOLDER/result.json``. Exit status 0 only when the artifact was written."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

from modelgate.learning.trainer_api import load_job

RESULT_FILE = "result.json"


def main(argv: list[str]) -> int:
    folder, entry = Path(argv[0]), argv[1]
    module_name, _, function_name = entry.partition(":")
    try:
        trainer = getattr(importlib.import_module(module_name), function_name)
        job = load_job(folder)
        answer = trainer(job) or {}
        if not isinstance(answer, dict):
            raise TypeError(f"the trainer answered {type(answer).__name__}, not a dict or None")
        if not job.output.is_file():
            raise RuntimeError(f"the trainer wrote no artifact ({job.output.name})")
        version = getattr(sys.modules.get(module_name.split(".")[0]), "__version__", None)
        result = {"trainer": entry, "trainer_version": version, "answer": answer}
        (folder / RESULT_FILE).write_text(json.dumps(result, default=str), encoding="utf-8")
    except Exception:  # the outermost layer of the trainer's process: its log says why
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

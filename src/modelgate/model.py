"""The base class for custom Python models (``runtime: python`` in ``model.yaml``).

A custom model is a class in a ``.py`` file inside the version folder::

    # models/my-model/1/model.py
    import numpy as np
    from modelgate.model import PythonModel

    class Doubler(PythonModel):
        def load(self) -> None:
            self.factor = float(self.options.get("factor", 2))

        def predict(self, inputs):
            return {"y": inputs["x"] * self.factor}

and its manifest names it::

    runtime: python
    artifact: model.py
    runtime_options: {class: Doubler, factor: 3}

``predict`` receives every input of the signature, batch dimension first, as numpy arrays
(BYTES tensors are object arrays of ``bytes``) and returns every output the same way. It may
be called from several threads at once when the model runs in worker threads, and with
merged batches when the manifest turns batching on. Raise :class:`ModelgateError` with
``ErrorKind.INVALID_ARGUMENT`` to reject an input with a 400.

Importing this module imports numpy and nothing else from the server.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["ErrorKind", "ModelgateError", "PythonModel"]


class PythonModel:
    """Subclass and override :meth:`predict` (and :meth:`load` / :meth:`close` if needed)."""

    def __init__(self, path: str, options: dict[str, Any]):
        #: the version folder, to find files the model ships with
        self.path = path
        #: ``runtime_options`` from the manifest
        self.options = options

    def load(self) -> None:
        """Read weights or other files; called once, in a worker thread, before warm-up."""

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what :meth:`load` took; called once after the last ``predict``."""

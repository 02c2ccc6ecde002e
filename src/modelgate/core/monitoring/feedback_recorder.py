"""The feedback recorder: predictions recorded for the ground truth sent back later.

:class:`FeedbackRecorder` is an :class:`~modelgate.core.serving.requests.InferenceListener`. For a
model whose manifest enables ``feedback``, ``completed`` (the request path) appends one
tuple of references to a list: no copy, no I/O, no task. A background task turns what
waits into :class:`~modelgate.core.monitoring.predictions.PredictionRecord` rows (one per request
row: the predicted class and the score, read from the outputs) a hundred predictions at a
time, with the event loop free in between: at thousands of predictions a second, one big
batch (or a worker thread holding the GIL) would stall every request for tens of
milliseconds. It writes them every ``flush_interval_s``, ``write_step`` rows per
transaction (the SQL store converts and sends them a few hundred at a time, the loop free
while the driver writes): a transaction's fixed cost (connection, ``BEGIN``, commit) is
then a small part of a row's, so one writer keeps up with over ten thousand rows a second
(bench/writer_throughput.py). A failed write keeps what it held
for the next flush; :meth:`FeedbackRecorder.close` writes what is left. The same task
deletes expired rows every ``purge_interval_s``.

What is recorded is bounded in rows, not requests: a request of more than
``max_request_rows`` rows records its first ``max_request_rows`` only (counted in
``truncated_rows``), and past ``max_pending`` rows waiting a request is not recorded
(counted in ``dropped``). A request that withholds consent (``consent``/``log_payload``
not true, docs/privacy.md) is not recorded at all (counted in ``withheld``).

A prediction is found later by the tenant that made it and its request id: the transport
id (REST ``X-Request-Id``, gRPC ``x-request-id`` metadata, the client's when it sent a sane
one) or the request's OIP ``id`` (:class:`~modelgate.core.monitoring.feedback.FeedbackService`
attaches labels to it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from modelgate.core.governance.consent import request_allows, subject_of
from modelgate.core.monitoring.ports import FeedbackStore
from modelgate.core.monitoring.prediction_rows import prediction_rows
from modelgate.core.monitoring.predictions import PredictionRecord
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.recording import BackgroundRecorder, Chore
from modelgate.core.serving.request_context import current_request_id
from modelgate.core.serving.requests import ANONYMOUS, CompletedInference
from modelgate.core.serving.row_writer import RowWriter
from modelgate.core.serving.tensors import Tensor

__all__ = ["MAX_REQUEST_ID", "WRITE_STEP", "FeedbackRecorder"]

log = logging.getLogger("modelgate.feedback")

#: the longest request id (transport or OIP) recorded and looked up
MAX_REQUEST_ID = 128

#: predictions turned into rows per step of a flush (each step holds the event loop for
#: about 2 ms at most)
_CHUNK = 100
#: rows written per store call (one transaction) by default
WRITE_STEP = 2000

Array = np.ndarray[Any, Any]
#: the input holding the protected attributes (or a tuple of them: several inputs); None:
#: the model names none
_Groups = Array | tuple[Array | None, ...] | None

# what the request path keeps: at, tenant, request id, OIP id, model, version, the subject
# named (or None), each output's (name, datatype, array), the rows it will make, and each
# input holding protected attributes, or None (docs/fairness.md):
# strings, numbers and arrays only, so the collector stops tracking the tuple at its first
# pass (a tuple holding the request's dicts and lists would be scanned on every collection
# until the flush)
_Pending = tuple[
    float,
    str,
    str | None,
    str | None,
    str,
    str,
    str | None,
    tuple[tuple[str, str, np.ndarray[Any, Any]], ...],
    int,
    _Groups,
]
#: the longest group value recorded (longer ones are cut)
MAX_GROUP_VALUE = 64


def _new_id() -> str:
    return "pr_" + secrets.token_hex(12)


def _rows_of(outputs: Sequence[Tensor]) -> int:
    """How many rows an answer holds: its first output's first dimension (a scalar: 1)."""
    if not outputs:
        return 0
    shape = outputs[0].data.shape
    return shape[0] if shape else 1


def _first(data: np.ndarray[Any, Any], rows: int) -> np.ndarray[Any, Any]:
    return data[:rows] if data.ndim else data


class FeedbackRecorder(BackgroundRecorder):
    """The :class:`~modelgate.core.serving.requests.InferenceListener` that records predictions of
    models with ``feedback`` enabled (see the module docstring; the task, flush lock, drop
    log, purge and drain: :class:`BackgroundRecorder`). Subjects are recorded, as
    pseudonyms, only with ``pseudonymize`` (the payload pseudonym key).

    ``max_pending`` bounds the rows waiting (built or not); ``max_request_rows`` the rows
    one request records (its first ones); ``write_step`` the rows per call of the store's
    ``append`` (a refused call is retried one row at a time)."""

    def __init__(
        self,
        store: FeedbackStore,
        *,
        pseudonymize: Callable[[str], str] | None = None,
        flush_interval_s: float = 1.0,
        max_pending: int = 50_000,
        max_request_rows: int = 1000,
        purge_interval_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = _new_id,
        write_step: int = WRITE_STEP,
    ) -> None:
        super().__init__(
            what="feedback",
            log=log,
            task_name="feedback-recorder",
            flush_interval_s=flush_interval_s,
            dropped_text="predictions dropped (not recorded)",
            lost_text="predictions could not be written at shutdown",
            clock=clock,
        )
        self._store = store
        self._pseudonymize = pseudonymize
        self._max_pending = max_pending
        self._max_request_rows = min(max_request_rows, max_pending)
        self._purge_s = purge_interval_s
        self._new_id = new_id
        self._pending: list[_Pending] = []
        self._pending_rows = 0  # the rows what waits in _pending will make (at most)
        #: each (model, version)'s manifest, as the request path last saw it
        self._manifests: dict[tuple[str, str], ModelManifest] = {}
        #: each manifest's protected attributes as (name, input, column index), resolved once
        self._protected: dict[int, _Protected] = {}
        #: rows built, not written yet (a failed write keeps them here)
        self._writer: RowWriter[PredictionRecord] = RowWriter(
            store.append,
            what="feedback",
            max_waiting=max_pending,
            name_of=lambda r: f"prediction {r.id}",
            log=log,
            step=write_step,
        )
        #: rows beyond max_request_rows, not recorded (their requests' first rows were)
        self.truncated_rows = 0
        #: requests not recorded because they withheld consent
        self.withheld = 0
        self._not_kept: Counter[str] = Counter()  # rows, by reason

    @property
    def pending(self) -> int:
        """Rows waiting to be written (built or not)."""
        return self._pending_rows + len(self._writer)

    @property
    def dropped(self) -> int:
        """Requests not recorded (``max_pending`` rows were waiting, or their answer could
        not be read) and rows the store refused."""
        return self._dropped + self._writer.dropped

    def not_kept(self) -> dict[str, int]:
        """Prediction rows not recorded, by reason: ``withheld_consent``,
        ``request_rows_cap`` (past ``max_request_rows``), ``backlog_full`` (``max_pending``
        rows waiting), ``unreadable`` (an answer that could not be read), ``refused`` (by
        the store)."""
        return {**self._not_kept, "refused": self._writer.dropped}

    # -- the request path --------------------------------------------------------------
    def completed(self, inference: CompletedInference) -> None:
        manifest = inference.manifest
        spec = manifest.feedback
        if spec is None or not spec.enabled:
            return
        request = inference.request
        response = inference.response
        outputs = response.outputs
        rows = _rows_of(outputs)
        parameters = request.parameters
        if parameters and not request_allows(parameters):
            self.withheld += 1  # nothing of it is kept (docs/privacy.md)
            self._not_kept["withheld_consent"] += rows
            return
        cap = self._max_request_rows
        if rows > cap:  # its first rows only: slices are views, nothing is copied
            self.truncated_rows += rows - cap
            self._not_kept["request_rows_cap"] += rows - cap
            rows = cap
            out = tuple([(t.name, t.datatype, _first(t.data, cap)) for t in outputs])
        else:
            out = tuple([(t.name, t.datatype, t.data) for t in outputs])
        if self._pending_rows + len(self._writer) + rows > self._max_pending:
            self._dropped += 1
            self._not_kept["backlog_full"] += rows
            return
        principal = inference.principal
        version = response.model_version
        self._manifests[(request.model, version)] = manifest  # the latest load's
        protected = self._protected.get(id(manifest))
        if protected is None or protected.manifest is not manifest:
            protected = self._protected_of(manifest)
        groups = protected.kept(inference.inputs) if protected.inputs else None
        self._pending_rows += rows
        self._pending.append(
            (
                self._clock(),
                ANONYMOUS if principal is None else principal.tenant_id,
                current_request_id.get(),
                request.id,
                request.model,
                version,
                subject_of(parameters) if parameters else None,
                out,
                rows,
                groups,
            )
        )

    def _protected_of(self, manifest: ModelManifest) -> _Protected:
        found = self._protected.get(id(manifest))
        if found is None or found.manifest is not manifest:
            found = _Protected.of(manifest)
            self._protected[id(manifest)] = found
        return found

    # -- the background task -----------------------------------------------------------
    def _chores(self) -> Sequence[Chore]:
        return [Chore(self._purge_s, self.purge, "expired predictions not purged")]

    async def purge(self) -> int:
        """Delete the predictions (and their feedback) whose retention has passed."""
        return await self._purge_expired(self._store.purge, "expired predictions")

    async def _write(self) -> int:
        batch, self._pending = self._pending, []
        self._pending_rows = 0
        for start in range(0, len(batch), _CHUNK):
            self._writer.add(self._build_all(batch[start : start + _CHUNK]))
            try:
                await asyncio.sleep(0)  # requests run between steps
            except asyncio.CancelledError:
                kept = batch[start + _CHUNK :]
                self._pending[:0] = kept
                self._pending_rows += sum(item[8] for item in kept)
                raise
        return await self._writer.write()

    # -- building rows ------------------------------------------------------------------
    def _build_all(self, batch: Sequence[_Pending]) -> list[PredictionRecord]:
        records: list[PredictionRecord] = []
        for item in batch:
            try:
                records.extend(self._build(item))
            except Exception:  # one odd answer must not lose the batch; it is counted
                log.exception("feedback: a prediction of model %s could not be read", item[4])
                self._dropped += 1
                self._not_kept["unreadable"] += item[8]
        return records

    def _build(self, item: _Pending) -> list[PredictionRecord]:
        at, tenant, request_id, inference_id, model, version, subject, out, _, grouped = item
        manifest = self._manifests[(model, version)]
        tensors = [Tensor(name, datatype, data) for name, datatype, data in out]
        found = prediction_rows(manifest, tensors)
        if found is None or (request_id is None and inference_id is None):
            return []
        predicted, scores = found
        if inference_id is not None and not 0 < len(inference_id) <= MAX_REQUEST_ID:
            inference_id = None  # not an id one could look up
        if request_id is None and inference_id is None:
            return []
        if subject is not None:
            subject = None if self._pseudonymize is None else self._pseudonymize(subject)
        created = datetime.fromtimestamp(at, UTC)
        assert manifest.feedback is not None
        expires = created + timedelta(days=manifest.feedback.retention_days)
        prediction_id = self._new_id()
        values = self._protected_of(manifest).values(grouped, len(predicted))
        return [
            PredictionRecord(
                id=prediction_id,
                row=row,
                tenant_id=tenant,
                request_id=request_id or inference_id or "",
                inference_id=inference_id,
                model=model,
                version=version,
                subject=subject,
                created_at=created,
                expires_at=expires,
                predicted=label,
                score=score,
                groups=tuple((name, column[row]) for name, column in values if row < len(column)),
            )
            for row, (label, score) in enumerate(zip(predicted, scores, strict=True))
        ]


class _Protected:
    """A manifest's protected attributes as (name, input, column index), and the inputs
    that hold them, resolved once per manifest."""

    __slots__ = ("columns", "inputs", "manifest")

    def __init__(self, manifest: ModelManifest, columns: tuple[tuple[str, str, int], ...]) -> None:
        self.manifest = manifest
        self.columns = columns
        self.inputs = tuple(dict.fromkeys(input_name for _, input_name, _ in columns))

    @classmethod
    def of(cls, manifest: ModelManifest) -> _Protected:
        columns: list[tuple[str, str, int]] = []
        for attribute in manifest.protected_attributes:
            spec = manifest.input(attribute.input)
            names = () if spec is None else (spec.feature_names or ())
            if attribute.feature in names:
                columns.append((attribute.name, attribute.input, names.index(attribute.feature)))
        return cls(manifest, tuple(columns))

    def kept(self, inputs: dict[str, Array]) -> _Groups:
        """What the request path keeps: the input array(s) holding the attributes, as they
        are (no copy, and no new container for the collector to track: the columns are
        read in the background)."""
        names = self.inputs
        if len(names) == 1:
            return inputs.get(names[0])
        return tuple([inputs.get(name) for name in names])

    def values(self, grouped: _Groups, rows: int) -> list[tuple[str, list[str]]]:
        """Each attribute's group per row, from what :meth:`kept` kept."""
        if grouped is None or not self.inputs:
            return []
        arrays = dict(
            zip(self.inputs, grouped if isinstance(grouped, tuple) else (grouped,), strict=True)
        )
        found: list[tuple[str, list[str]]] = []
        for name, input_name, index in self.columns:
            data = arrays.get(input_name)
            if data is not None and data.ndim == 2 and data.shape[1] > index:
                found.append((name, [_group_value(v) for v in data[:rows, index].tolist()]))
        return found


def _group_value(value: object) -> str:
    """A group's name: integral numbers without their ``.0`` (age band 3.0 is ``3``)."""
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, bytes):
        text = value.decode("utf-8", "replace")
    else:
        text = str(value)
    return text[:MAX_GROUP_VALUE]

"""Logs: one JSON object a line (or text), written off the event loop, and the request log.

:func:`configure_logging` (called once by the server process) puts a
:class:`~logging.handlers.QueueHandler` on the root logger: a record logged on the event
loop is queued, and a :class:`~logging.handlers.QueueListener` thread formats and writes
it, so a slow log pipe never stalls a request.

:class:`RequestLog` writes one line per request, on the ``modelgate.access`` logger. A
request only appends a tuple to a deque (a LogRecord would cost about 3 µs on the loop);
every 50 ms a thread turns the tuples into records, or, in the server process, lays them
out and writes them at once (a record, its formatting and a flush per line would cost the
thread, and through the GIL the loop, about 10 µs a request). Its fields are identifiers,
codes and times: never a credential, a token or a payload.
"""

from __future__ import annotations

import copy
import itertools
import logging
import logging.handlers
import os
import queue
import re
import sys
import threading
import time
from collections import deque
from typing import Any, Literal

import orjson

__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "RequestLog",
    "TextFormatter",
    "configure_logging",
    "logged_path",
    "request_id_from",
]

#: the logger of the request lines
ACCESS_LOGGER = "modelgate.access"

# A client's X-Request-Id is kept when it looks like an id (UUID, hex, base64, ULID, ...),
# so that nothing else (a header full of payload, control characters) reaches the logs.
_SANE_ID = re.compile(r"[A-Za-z0-9._:@+/=-]{1,128}")
# New ids: a random prefix per process and a counter (0.2 µs, where uuid4 costs 3 µs);
# unique across replicas and restarts without any coordination.
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def request_id_from(sent: str | bytes | None) -> str:
    """The client's request id when it is sane (1 to 128 of ``A-Z a-z 0-9 . _ : @ + / = -``),
    otherwise a new one."""
    if sent is not None:
        text = sent.decode("latin-1") if isinstance(sent, bytes) else sent
        if _SANE_ID.fullmatch(text):
            return text
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


# -- formatting ------------------------------------------------------------------------------

#: what every LogRecord carries; anything else was added (``extra=``) and is a field, but
#: for uvicorn's copy of its message with terminal colours
_RECORD_ATTRIBUTES = frozenset(
    [
        *vars(logging.LogRecord("", 0, "", 0, "", None, None)),
        *("message", "asctime", "taskName", "color_message"),
    ]
)


def _timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, then the
    record's own fields (``extra=``), then ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """For people: ``time level logger [pid] message key=value ...``; a value with spaces,
    quotes or control characters is quoted as in JSON, so one record stays one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        fields = _fields(record)
        if not fields:
            return text
        return text + "".join(f" {key}={_text_value(value)}" for key, value in fields.items())


def _text_value(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return orjson.dumps(text).decode()


_BARE = re.compile(r"[!#-<>-~]+")  # printable ASCII but space, '"' and '='


# -- the process's logging ---------------------------------------------------------------------


class _LoopSafeQueueHandler(logging.handlers.QueueHandler):
    """Queues a copy of each record with its message merged (the arguments may change once
    the call returns) and its traceback as text, the rest for the formatter to lay out."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        prepared = copy.copy(record)
        prepared.msg = prepared.message = record.getMessage()
        prepared.args = None
        if record.exc_info:
            prepared.exc_text = logging.Formatter().formatException(record.exc_info)
            prepared.exc_info = None
        return prepared


class _Writer(logging.StreamHandler):  # type: ignore[type-arg]
    """The process's one writer: records one at a time (from the queue), and the request
    log's batches at once, laid out straight from their tuples as the formatter would.

    Through LogRecords, a request line costs about 10 µs of the writer thread's time, with
    the GIL held (so the event loop waits): making the record, formatting it, a flush per
    line. Straight from the tuple, one write per batch, it is about 1.5 µs."""

    def __init__(self, stream: Any, output: Literal["json", "text"]):
        super().__init__(stream)
        self.setFormatter(JsonFormatter() if output == "json" else TextFormatter())
        self._layout = self._json if output == "json" else self._text
        self._second = -1
        self._stamp = ""

    def write_lines(self, logger: logging.Logger, lines: list[_Line]) -> None:
        try:
            text = "".join([self._layout(logger.name, line) for line in lines])
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(text)
                self.flush()
        except Exception:
            self.handleError(_record(logger, lines[0]))

    def _json(self, name: str, line: _Line) -> str:
        """What :class:`JsonFormatter` writes for the line's record, without the record."""
        at = line[0]
        second = int(at)
        if second != self._second:  # a batch spans 50 ms: one strftime per second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        fields = {
            "time": f"{self._stamp}.{int((at - second) * 1000):03d}Z",
            "level": "info",
            "logger": name,
            "message": "request",
            **_line_fields(line),
        }
        return orjson.dumps(fields).decode() + "\n"

    def _text(self, name: str, line: _Line) -> str:
        """What :class:`TextFormatter` writes for the line's record, without the record."""
        at = line[0]
        second = int(at)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        fields = "".join(f" {k}={_text_value(v)}" for k, v in _line_fields(line).items())
        ms = int((at - second) * 1000)
        return f"{self._stamp},{ms:03d} INFO {name} [{os.getpid()}] request{fields}\n"


def configure_logging(
    level: str, output: Literal["json", "text"] = "json", stream: Any = None
) -> logging.handlers.QueueListener:
    """Route every record of the process through a queue to one thread that writes it to
    ``stream`` (stderr) as JSON or text; call ``stop()`` on the result at exit to write what
    is left. The request lines (``modelgate.access``) are written at any ``level``: they
    are already off the loop, so they go to the writer directly."""
    writer = _Writer(stream if stream is not None else sys.stderr, output)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(_LoopSafeQueueHandler(records))
    root.setLevel(level.upper())
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO)
    access.propagate = False
    for handler in access.handlers[:]:
        access.removeHandler(handler)
    access.addHandler(writer)
    listener = logging.handlers.QueueListener(records, writer, respect_handler_level=True)
    listener.start()
    return listener


# -- the request log ---------------------------------------------------------------------------

# (time, protocol, method, path, request id, trace id, tenant, model, version, status, ns),
# and for a 429 of a key the refusal memo throttles, the refusals not logged since its last
_Text = str | None
_Line = (
    tuple[float, str, str, str, str, _Text, _Text, _Text, _Text, int, int]
    | tuple[float, str, str, str, str, _Text, _Text, _Text, _Text, int, int, int]
)


class RequestLog:
    """One log line per request on the ``modelgate.access`` logger, at INFO.

    :meth:`write` runs on the request path: it appends a tuple and returns (no lock, no
    I/O). A daemon thread, started by the first line, makes the records every
    ``interval_s`` (or, when the logger's one handler is the process's writer, writes the
    lines itself); past ``max_pending`` lines waiting, lines are dropped and counted (a
    warning says how many). :meth:`close` writes what is left.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        interval_s: float = 0.05,
        max_pending: int = 100_000,
    ):
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)
        self.interval_s = interval_s
        self.max_pending = max_pending
        #: lines dropped since the last warning about it
        self.dropped = 0
        self._lines: deque[_Line] = deque()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._flushing = threading.Lock()  # one flush at a time, so lines keep their order

    def write(
        self,
        protocol: str,
        method: str,
        path: str,
        request_id: str,
        trace_id: str | None,
        tenant: str | None,
        model: str | None,
        version: str | None,
        status: int,
        latency_ns: int,
        suppressed: int | None = None,
    ) -> None:
        """Log one request: ``status`` is the HTTP status or the gRPC code's number.
        ``suppressed``: for a refusal answered from the refusal memo, how many refusals
        of its caller were not logged since its previous line (at most one a second)."""
        lines = self._lines
        if len(lines) >= self.max_pending:
            self.dropped += 1
            return
        line: _Line = (
            time.time(),
            protocol,
            method,
            path,
            request_id,
            trace_id,
            tenant,
            model,
            version,
            status,
            latency_ns,
        )
        if suppressed is not None:
            line = (*line, suppressed)
        lines.append(line)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelgate-access", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write the waiting lines now (the thread does this every interval)."""
        logger, lines = self.logger, self._lines
        with self._flushing:
            batch = []
            while lines:
                batch.append(lines.popleft())
            if batch and logger.isEnabledFor(logging.INFO):
                writer = _writer_of(logger)
                if writer is not None:
                    writer.write_lines(logger, batch)
                else:
                    for line in batch:
                        logger.handle(_record(logger, line))
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            logger.warning("%d request log lines were dropped: the log output is too slow", dropped)

    def close(self) -> None:
        """Stop the thread after it has written every line."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
            self._stop.clear()
        self.flush()


def _writer_of(logger: logging.Logger) -> _Writer | None:
    """The process's writer, when it is all that the logger's records would reach."""
    handlers = logger.handlers
    if logger.propagate or logger.filters or len(handlers) != 1:
        return None
    writer = handlers[0]
    if not isinstance(writer, _Writer) or writer.filters or writer.level > logging.INFO:
        return None
    return writer


#: paths whose next segment is a data subject's id: logged as ``{subject}`` (privacy.md)
_SUBJECT_PATHS = ("/admin/subjects/",)


def logged_path(path: str) -> str:
    """The path as the request log writes it: a data subject's id replaced by
    ``{subject}`` (a log line outlives the subject's erasure), at most 512 characters."""
    for prefix in _SUBJECT_PATHS:
        if path.startswith(prefix):
            _, slash, rest = path[len(prefix) :].partition("/")
            path = prefix + "{subject}" + slash + rest
    return path[:512]


def _line_fields(line: _Line) -> dict[str, Any]:
    _, protocol, method, path, request_id, trace_id, tenant, model, version, status, ns = line[:11]
    fields = {
        "request_id": request_id,
        "trace_id": trace_id,
        "protocol": protocol,
        "method": method,
        "path": logged_path(path),
        "status": status,
        "tenant": tenant,
        "model": model[:256] if model is not None else None,
        "version": version[:64] if version is not None else None,
        "latency_ms": round(ns / 1e6, 3),
    }
    if len(line) > 11:  # a throttled 429's line
        fields["suppressed"] = line[-1]
    return fields


def _record(logger: logging.Logger, line: _Line) -> logging.LogRecord:
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 0, "request", (), None, extra=_line_fields(line)
    )
    at = line[0]
    record.created = at  # when the request ended, not when the thread came by
    record.msecs = (at - int(at)) * 1000
    return record

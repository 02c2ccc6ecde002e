"""Request ids, JSON and text log lines, the request log's thread, and the process's logging."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from modelgate.observability.logs import (
    ACCESS_LOGGER,
    JsonFormatter,
    RequestLog,
    TextFormatter,
    configure_logging,
    request_id_from,
)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[tuple[logging.Logger, _Collect]]:
    """A logger of its own at INFO, its records kept."""
    logger = logging.getLogger(f"test.access.{uuid.uuid4().hex}")
    handler = _Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)


def _write(log: RequestLog, request_id: str = "r-1", **changes: Any) -> None:
    fields: dict[str, Any] = {
        "protocol": "rest",
        "method": "POST",
        "path": "/v2/models/m/infer",
        "request_id": request_id,
        "trace_id": None,
        "tenant": "acme",
        "model": "m",
        "version": "1",
        "status": 200,
        "latency_ns": 1_234_567,
        **changes,
    }
    log.write(**fields)


def _wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# -- request ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        "abc",
        "6881966f-e8f2-4f77-9664-94f2b91d00a9",  # a UUID, as most clients send
        "0af7651916cd43dd8448eb211c80319c",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "dGVzdA+/=",
        "svc-a:req.42_x@edge",
        "a" * 128,
    ],
)
def test_a_sane_client_request_id_is_kept(sent: str) -> None:
    assert request_id_from(sent) == sent
    assert request_id_from(sent.encode()) == sent


@pytest.mark.parametrize(
    "sent",
    ["", "a" * 129, "has space", "line\nbreak", "naïve", '"quoted"', "<script>", "a,b", b"\xff"],
)
def test_any_other_request_id_is_replaced_by_a_new_one(sent: str | bytes) -> None:
    replaced = request_id_from(sent)
    assert replaced != sent and request_id_from(replaced) == replaced


def test_new_request_ids_are_unique() -> None:
    ids = [request_id_from(None) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


# -- formatters -----------------------------------------------------------------------------


def _record(message: str = "hello %s", args: Any = ("world",), **extra: Any) -> logging.LogRecord:
    record = logging.getLogger("modelgate.test").makeRecord(
        "modelgate.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )
    record.created, record.msecs = 1_700_000_000.25, 250.0
    return record


def test_a_json_line_is_one_object_with_the_records_fields() -> None:
    line = JsonFormatter().format(_record(tenant="acme", status=404, latency_ms=0.5))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "warning",
        "logger": "modelgate.test",
        "message": "hello world",
        "tenant": "acme",
        "status": 404,
        "latency_ms": 0.5,
    }


def test_a_json_line_carries_the_exception_as_text() -> None:
    record = _record()
    try:
        raise ValueError("broken")
    except ValueError:
        record.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(record))
    assert "ValueError: broken" in doc["exception"] and "Traceback" in doc["exception"]


def test_a_text_line_stays_one_line_whatever_its_fields_hold() -> None:
    line = TextFormatter().format(_record(path="/v2/models/a\nINFO forged line", tenant="acme"))
    assert "\n" not in line
    assert line.endswith(' path="/v2/models/a\\nINFO forged line" tenant=acme')
    assert " WARNING modelgate.test [" in line and "] hello world" in line


# -- the request log ------------------------------------------------------------------------


def test_request_lines_become_records_in_the_logs_own_thread(
    collected: tuple[logging.Logger, _Collect],
) -> None:
    logger, handler = collected
    log = RequestLog(logger, interval_s=0.01)
    before = time.time()
    _write(log, trace_id="0af7651916cd43dd8448eb211c80319c")
    _wait_for(lambda: handler.records)
    log.close()
    (record,) = handler.records
    assert record.threadName == "modelgate-access"  # built off the caller's thread
    assert record.levelno == logging.INFO and record.getMessage() == "request"
    assert before <= record.created <= time.time()
    fields = json.loads(JsonFormatter().format(record))
    del fields["time"]
    assert fields == {
        "level": "info",
        "logger": logger.name,
        "message": "request",
        "request_id": "r-1",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "protocol": "rest",
        "method": "POST",
        "path": "/v2/models/m/infer",
        "status": 200,
        "tenant": "acme",
        "model": "m",
        "version": "1",
        "latency_ms": 1.235,
    }


def test_close_writes_every_waiting_line_in_order(
    collected: tuple[logging.Logger, _Collect],
) -> None:
    logger, handler = collected
    log = RequestLog(logger, interval_s=60)
    for i in range(100):
        _write(log, f"r-{i}")
    log.close()
    assert [r.request_id for r in handler.records] == [f"r-{i}" for i in range(100)]  # type: ignore[attr-defined]


def test_lines_past_the_limit_are_dropped_and_counted(
    collected: tuple[logging.Logger, _Collect],
) -> None:
    logger, handler = collected
    log = RequestLog(logger, interval_s=60, max_pending=2)
    for i in range(5):
        _write(log, f"r-{i}")
    assert log.dropped == 3
    log.close()
    messages = [r.getMessage() for r in handler.records]
    dropped = "3 request log lines were dropped: the log output is too slow"
    assert messages == ["request", "request", dropped]


def test_nothing_is_made_while_the_logger_is_off(
    collected: tuple[logging.Logger, _Collect],
) -> None:
    logger, handler = collected
    logger.setLevel(logging.WARNING)
    log = RequestLog(logger, interval_s=60)
    _write(log)
    log.close()
    assert handler.records == []


def test_a_long_model_name_is_cut_in_the_line(collected: tuple[logging.Logger, _Collect]) -> None:
    logger, handler = collected
    log = RequestLog(logger, interval_s=60)
    _write(log, model="m" * 10_000, path="/" + "p" * 10_000)
    log.close()
    (record,) = handler.records
    assert len(record.model) == 256 and len(record.path) == 512  # type: ignore[attr-defined]


@pytest.mark.parametrize("output", ["json", "text"])
def test_batched_request_lines_read_as_their_records_would(
    output: Literal["json", "text"], collected: tuple[logging.Logger, _Collect]
) -> None:
    """The writer lays request lines out from their tuples, as the formatter would."""
    from modelgate.observability.logs import _record, _Writer

    logger, _ = collected
    stream = io.StringIO()
    writer = _Writer(stream, output)
    line = (
        *(1_700_000_000.25, "grpc", "ModelInfer", "/inference.GRPCInferenceService/ModelInfer"),
        *("id-1", None, "acme", "a model\nwith a newline", "1", 5, 2_000_000),
    )
    writer.write_lines(logger, [line, line])  # type: ignore[list-item]
    expected = writer.format(_record(logger, line)) + "\n"  # type: ignore[arg-type]
    assert stream.getvalue() == expected * 2
    assert len(stream.getvalue().splitlines()) == 2


# -- the process's logging ------------------------------------------------------------------


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes the process's loggers: put them back afterwards."""
    root, access = logging.getLogger(), logging.getLogger(ACCESS_LOGGER)
    saved = (root.handlers[:], root.level, access.handlers[:], access.level, access.propagate)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    access.handlers[:], access.level, access.propagate = saved[2], saved[3], saved[4]


@pytest.mark.usefixtures("restored_logging")
def test_the_process_writes_json_lines_from_a_thread_of_its_own() -> None:
    stream = io.StringIO()
    writers: list[str] = []
    original = stream.write

    def write(text: str) -> int:
        writers.append(threading.current_thread().name)
        return original(text)

    stream.write = write  # type: ignore[method-assign]
    listener = configure_logging("warning", "json", stream)
    requests = RequestLog(interval_s=60)
    try:
        logging.getLogger("modelgate.test").warning("quota at %d%%", 80, extra={"tenant": "t"})
        logging.getLogger("modelgate.test").info("not at this level")
        try:
            raise RuntimeError("bug")
        except RuntimeError:
            logging.getLogger("modelgate.test").exception("failed")
        _write(requests)  # at INFO, written although the level is "warning"
    finally:
        requests.close()
        listener.stop()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_message = {line["message"]: line for line in lines}
    assert set(by_message) == {"quota at 80%", "failed", "request"}
    assert by_message["quota at 80%"]["tenant"] == "t"
    assert "RuntimeError: bug" in by_message["failed"]["exception"]
    assert by_message["request"]["request_id"] == "r-1"
    assert threading.current_thread().name not in writers


@pytest.mark.usefixtures("restored_logging")
def test_the_text_format_is_for_people() -> None:
    stream = io.StringIO()
    listener = configure_logging("info", "text", stream)
    try:
        logging.getLogger("modelgate.test").info("modelgate ready")
    finally:
        listener.stop()
    (line,) = stream.getvalue().splitlines()
    assert " INFO modelgate.test [" in line and line.endswith("] modelgate ready")

"""The inference listeners that write what requests carried to the database, from
settings: the payload logger (consented payloads, sealed) and the feedback recorder, with
the concept-drift monitor that reads its labelled predictions."""

from __future__ import annotations

from modelgate.boot.state import State
from modelgate.core.governance.payload_logger import PayloadLogger
from modelgate.core.monitoring.concept import ConceptMonitor
from modelgate.core.monitoring.feedback_recorder import FeedbackRecorder
from modelgate.core.serving.registry import ModelRegistry
from modelgate.settings import Settings

__all__ = ["build_feedback", "build_payload_logger"]


def build_payload_logger(settings: Settings, state: State) -> PayloadLogger | None:
    """The listener that logs consented payloads, when encryption keys are configured."""
    service = state.payload_service
    cipher, pseudonymize = service.cipher, service.pseudonymize
    if cipher is None or pseudonymize is None:
        return None
    logger = PayloadLogger(
        state.payloads,
        cipher,
        pseudonymize,
        flush_interval_s=settings.payload_flush_seconds,
        max_pending=settings.payload_max_pending,
        max_bytes=settings.payload_max_bytes,
        max_pending_bytes=settings.payload_max_pending_bytes,
        consent_refresh_s=settings.payload_consent_refresh_seconds,
        purge_interval_s=settings.payload_purge_seconds,
    )
    service.attach(logger.apply, logger.flush)
    return logger


def build_feedback(
    settings: Settings, state: State, registry: ModelRegistry
) -> tuple[FeedbackRecorder, ConceptMonitor]:
    """The listener that records predictions for feedback (subjects as pseudonyms when
    the payload pseudonym key is set), wired to the feedback service and the subject
    holder, and the concept-drift monitor reading the labelled ones."""
    recorder = FeedbackRecorder(
        state.feedback,
        pseudonymize=state.payload_service.pseudonymize,
        flush_interval_s=settings.feedback_flush_seconds,
        max_pending=settings.feedback_max_pending,
        max_request_rows=settings.feedback_max_request_rows,
        purge_interval_s=settings.feedback_purge_seconds,
    )
    state.feedback_service.recorder = recorder
    state.feedback_service.wait_s = settings.feedback_wait_seconds
    state.feedback_subjects.recorder = recorder
    concept = ConceptMonitor(
        state.feedback,
        registry,
        window_labels=settings.feedback_window_labels,
        window_s=settings.feedback_window_seconds,
        min_labels=settings.feedback_min_labels,
        flush=recorder.flush,
    )
    return recorder, concept

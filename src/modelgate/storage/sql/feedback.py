"""``SqlFeedbackStore``: recorded predictions and their feedback in SQLite or PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelgate.core.monitoring.predictions import (
    FeedbackRecord,
    LabelledPrediction,
    LabelQuery,
    PredictionRecord,
)
from modelgate.storage.sql.bulk_insert import BulkInsert
from modelgate.storage.sql.engine import reading, writing
from modelgate.storage.sql.schema import (
    ID_LENGTH,
    NAME_LENGTH,
    prediction_feedback,
    predictions,
)
from modelgate.storage.sql.values import checked_text, checked_time, storable

__all__ = ["SqlFeedbackStore"]

_P = predictions.c
_F = prediction_feedback.c
_SHORT = 64  # prediction id and subject pseudonym columns


class SqlFeedbackStore:
    """:class:`~modelgate.core.monitoring.ports.FeedbackStore` on ``predictions`` and
    ``prediction_feedback``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = BulkInsert(predictions, _COLUMNS, engine.dialect)

    async def append(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        async with writing(self._engine) as connection:
            await self._insert.execute(connection, records, _row)

    async def find(self, tenant_id: str, request_id: str) -> list[PredictionRecord]:
        if not storable(tenant_id, ID_LENGTH) or not storable(request_id, ID_LENGTH):
            return []
        newest = (
            select(_P.id)
            .where(
                _P.tenant_id == tenant_id,
                or_(_P.request_id == request_id, _P.inference_id == request_id),
            )
            .order_by(_P.created_at.desc(), _P.id.desc())
            .limit(1)
        )
        async with reading(self._engine) as connection:
            prediction_id = (await connection.execute(newest)).scalar()
            if prediction_id is None:
                return []
            result = await connection.execute(
                select(predictions).where(_P.id == prediction_id).order_by(_P.row)
            )
            return [_prediction(row._mapping) for row in result]

    async def label(self, feedback: Sequence[FeedbackRecord]) -> None:
        if not feedback:
            return
        latest = {(f.prediction_id, f.row): f for f in feedback}  # the last label of a row wins
        wanted = [key for key in latest if storable(key[0], _SHORT)]
        async with writing(self._engine) as connection:
            existing: set[tuple[str, int]] = set()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                result = await connection.execute(
                    select(_P.id, _P.row).where(tuple_(_P.id, _P.row).in_(chunk))
                )
                existing.update((r[0], r[1]) for r in result)
            rows = [
                {
                    "prediction_id": f.prediction_id,
                    "row": f.row,
                    "label": f.label,
                    "created_at": checked_time(f.created_at, "created_at"),
                }
                for key, f in latest.items()
                if key in existing
            ]
            if not rows:
                return
            insert = (postgresql.insert if self._postgres else sqlite.insert)(prediction_feedback)
            upsert = insert.on_conflict_do_update(
                index_elements=[_F.prediction_id, _F.row],
                set_={"label": insert.excluded.label, "created_at": insert.excluded.created_at},
            )
            await connection.execute(upsert, rows)

    async def labelled(self, query: LabelQuery) -> list[LabelledPrediction]:
        filters = _filters(query)
        if filters is None:
            return []
        statement = _joined(inner=True).where(*filters)
        if query.newest_first:
            statement = statement.order_by(_P.created_at.desc(), _P.id.desc(), _P.row.desc())
        else:
            statement = statement.order_by(_P.created_at.asc(), _P.id.asc(), _P.row.asc())
        return await self._read(statement.limit(query.limit))

    async def subject_rows(
        self, subjects: Sequence[str], tenant_id: str | None
    ) -> list[LabelledPrediction]:
        where = _subject_filter(subjects, tenant_id)
        if where is None:
            return []
        statement = (
            _joined(inner=False)
            .where(*where)
            .order_by(_P.created_at.asc(), _P.id.asc(), _P.row.asc())
        )
        return await self._read(statement)

    async def delete_subject(self, subjects: Sequence[str], tenant_id: str | None) -> int:
        where = _subject_filter(subjects, tenant_id)
        if where is None:
            return 0
        async with writing(self._engine) as connection:
            return await _delete(connection, where)

    async def purge(self, now: datetime) -> int:
        where = [_P.expires_at <= checked_time(now, "now")]
        async with writing(self._engine) as connection:
            return await _delete(connection, where)

    async def _read(self, statement: Select[Any]) -> list[LabelledPrediction]:
        async with reading(self._engine) as connection:
            result = await connection.execute(statement)
            return [
                LabelledPrediction(_prediction(m), m["label"], m["labelled_at"])
                for m in (row._mapping for row in result)
            ]


def _joined(*, inner: bool) -> Select[Any]:
    on = and_(_F.prediction_id == _P.id, _F.row == _P.row)
    joined = (
        predictions.join(prediction_feedback, on)
        if inner
        else predictions.outerjoin(prediction_feedback, on)
    )
    return select(predictions, _F.label, _F.created_at.label("labelled_at")).select_from(joined)


async def _delete(connection: AsyncConnection, where: list[ColumnElement[bool]]) -> int:
    doomed = select(_P.id).where(*where)
    await connection.execute(
        prediction_feedback.delete().where(_F.prediction_id.in_(doomed.scalar_subquery()))
    )
    result = await connection.execute(predictions.delete().where(*where))
    return int(result.rowcount)


def _subject_filter(
    subjects: Sequence[str], tenant_id: str | None
) -> list[ColumnElement[bool]] | None:
    wanted = [s for s in subjects if storable(s, _SHORT)]
    if not wanted or (tenant_id is not None and not storable(tenant_id, ID_LENGTH)):
        return None
    where: list[ColumnElement[bool]] = [_P.subject.in_(wanted)]
    if tenant_id is not None:
        where.append(_P.tenant_id == tenant_id)
    return where


def _filters(query: LabelQuery) -> list[ColumnElement[bool]] | None:
    filters: list[ColumnElement[bool]] = []
    for value, column, length in (
        (query.model, _P.model, NAME_LENGTH),
        (query.version, _P.version, ID_LENGTH),
        (query.tenant_id, _P.tenant_id, ID_LENGTH),
    ):
        if value is not None:
            if not storable(value, length):
                return None  # no stored row can match it
            filters.append(column == value)
    if query.since is not None:
        filters.append(_P.created_at >= checked_time(query.since, "since"))
    if query.until is not None:
        filters.append(_P.created_at < checked_time(query.until, "until"))
    if query.live_at is not None:
        filters.append(_P.expires_at > checked_time(query.live_at, "live_at"))
    if query.after is not None:
        at, last_id, last_row = query.after
        at = checked_time(at, "after")
        filters.append(
            or_(
                _P.created_at > at,
                and_(_P.created_at == at, _P.id > last_id),
                and_(_P.created_at == at, _P.id == last_id, _P.row > last_row),
            )
        )
    return filters


#: what :func:`_row` answers, in this order
_COLUMNS = (
    "id",
    "row",
    "tenant_id",
    "request_id",
    "inference_id",
    "model",
    "version",
    "subject",
    "created_at",
    "expires_at",
    "predicted",
    "score",
    "protected_groups",
)


def _row(record: PredictionRecord) -> tuple[Any, ...]:
    return (
        checked_text(record.id, "prediction id", _SHORT),
        record.row,
        checked_text(record.tenant_id, "prediction tenant_id", ID_LENGTH),
        checked_text(record.request_id, "request id", ID_LENGTH),
        None
        if record.inference_id is None
        else checked_text(record.inference_id, "inference id", ID_LENGTH),
        checked_text(record.model, "prediction model", NAME_LENGTH),
        checked_text(record.version, "prediction version", ID_LENGTH),
        None
        if record.subject is None
        else checked_text(record.subject, "prediction subject", _SHORT),
        checked_time(record.created_at, "created_at"),
        checked_time(record.expires_at, "expires_at"),
        record.predicted,
        record.score,
        json.dumps(dict(record.groups), separators=(",", ":")) if record.groups else None,
    )


def _prediction(row: Any) -> PredictionRecord:
    return PredictionRecord(
        id=row["id"],
        row=row["row"],
        tenant_id=row["tenant_id"],
        request_id=row["request_id"],
        inference_id=row["inference_id"],
        model=row["model"],
        version=row["version"],
        subject=row["subject"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        predicted=row["predicted"],
        score=row["score"],
        groups=_groups(row["protected_groups"]),
    )


def _groups(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    found = json.loads(text)
    return tuple((str(k), str(v)) for k, v in found.items()) if isinstance(found, dict) else ()

"""``/admin/usage`` and ``/admin/prices``: usage reports, and the price table usage is
charged at (present when the admin app is given a usage service)."""

# No `from __future__ import annotations`: FastAPI reads the route signatures at run time.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from modelgate.api.admin.schemas import PriceBody, PriceOut, UsageOut, UsageRowOut
from modelgate.core.admission.usage import UsageQuery, UsageService

__all__ = ["add_usage_routes"]


def add_usage_routes(
    app: FastAPI,
    usage: UsageService,
    currency: str,
    Caller: Any,  # noqa: N803 - the app's principal dependency, a type alias
    ip: Callable[[Request], str | None],
) -> None:
    @app.get("/admin/usage", response_model=UsageOut, tags=["usage"])
    async def usage_report(
        caller: Caller,
        tenant: Annotated[
            str | None, Query(description="A tenant id (a tenant's own credential: its own).")
        ] = None,
        key: Annotated[str | None, Query(description="A key id.")] = None,
        model: Annotated[str | None, Query(description="A model name.")] = None,
        since: Annotated[
            str | None,
            Query(description="ISO 8601 date or datetime, inclusive; no zone means UTC."),
        ] = None,
        until: Annotated[
            str | None,
            Query(description="ISO 8601 date or datetime, exclusive; no zone means UTC."),
        ] = None,
        group_by: Annotated[
            str, Query(description="Comma-separated: day, tenant, key, model, version.")
        ] = "day",
    ) -> UsageOut:
        query = UsageQuery.parse(
            tenant=tenant, key=key, model=model, since=since, until=until, group_by=group_by
        )
        rows = await usage.report(caller, query)
        return UsageOut(currency=currency, rows=[UsageRowOut.of(r) for r in rows])

    @app.get("/admin/prices", response_model=list[PriceOut], tags=["usage"])
    async def list_prices(caller: Caller) -> list[PriceOut]:
        return [PriceOut.of(p) for p in await usage.list_prices(caller)]

    @app.put("/admin/prices/{target}", response_model=PriceOut, tags=["usage"])
    async def set_price(target: str, body: PriceBody, caller: Caller, request: Request) -> PriceOut:
        price = await usage.set_price(
            caller, target, body.per_1k_units, body.per_compute_second, ip(request)
        )
        return PriceOut.of(price)

    @app.delete("/admin/prices/{target}", status_code=204, response_class=Response, tags=["usage"])
    async def delete_price(target: str, caller: Caller, request: Request) -> Response:
        await usage.delete_price(caller, target, ip(request))
        return Response(status_code=204)

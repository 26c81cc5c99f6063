"""`GET /api/v1/regions`: public list of markets."""

from __future__ import annotations

from litestar import get

from app.api.dependencies import UnitOfWorkDep
from app.api.schemas_rides import RegionList, RegionOut
from app.services.regions import list_regions


@get("/regions", tags=["regions"])
async def regions(uow: UnitOfWorkDep) -> RegionList:
    """Every region with its currency and commission rate."""
    return RegionList(items=[RegionOut.of(r) for r in await list_regions(uow.session)])

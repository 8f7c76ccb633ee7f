"""`/v1/stalls`: providers keep their own stalls; anyone may browse them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import Caller, Provider
from api.deps import StallsDep
from api.models import StallOut, StallRequest
from api.problems import Problem, problems
from api.stalls import StallId, check_specification, stall_out

router = APIRouter(prefix="/v1/stalls", tags=["stalls"])


@router.get(
    "",
    summary="Providers' stalls, optionally of one class, region or provider",
    responses=problems(401, 429),
)
async def browse(
    _: Caller,
    store: StallsDep,
    resource_class: Annotated[str | None, Query(max_length=32)] = None,
    region: Annotated[str | None, Query(max_length=16)] = None,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
) -> list[StallOut]:
    return [stall_out(s) for s in await store.list_stalls(resource_class, region, account_id)]


@router.put(
    "/{stall_id}",
    summary="Set up or change one of your stalls (provider keys)",
    responses={
        200: {"description": "The stall was changed"},
        201: {"description": "The stall was set up"},
        **problems(401, 403, 422, 429),
    },
)
async def put(
    stall_id: StallId,
    request: StallRequest,
    principal: Provider,
    response: Response,
    store: StallsDep,
) -> StallOut:
    check_specification(request)
    stall, created = await store.put_stall(
        stall_id,
        principal.account_id,
        request.resource_class,
        request.region,
        request.hours,
        request.sla_tier,
        request.max_interruptions,
        request.network,
        request.description,
    )
    response.status_code = 201 if created else 200
    return stall_out(stall)


@router.delete(
    "/{stall_id}",
    summary="Take down one of your stalls (provider keys)",
    status_code=204,
    responses=problems(401, 403, 404, 429),
)
async def take_down(stall_id: StallId, principal: Provider, store: StallsDep) -> Response:
    if not await store.delete_stall(stall_id, principal.account_id):
        raise Problem(
            404, "unknown-stall", f"account {principal.account_id} has no stall {stall_id!r}"
        )
    return Response(status_code=204)

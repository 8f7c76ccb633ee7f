"""`/v1/needs`: state a need, read it, withdraw it (`api.needs.NeedService` does the work)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from api.auth import allow
from api.deps import NeedsDep
from api.keys import Principal, Role
from api.models import NeedOut, NeedRequest, PlanOut
from api.problems import problems
from exchange.domain.messages import Identifier

Buyer = Annotated[Principal, Depends(allow(Role.BUYER))]
NeedReader = Annotated[Principal, Depends(allow(Role.BUYER, Role.OPERATOR))]

router = APIRouter(prefix="/v1", tags=["needs"], responses=problems(401, 403, 429))


@router.post(
    "/needs",
    status_code=201,
    response_model=NeedOut,
    summary="State a need; the exchange places the cheapest block that meets it",
    description="Plans from the live books across accepted regions, classes and start "
    "hours, places the cheapest feasible alternative as a block order and answers with "
    "every alternative priced and the block's outcome. Nothing feasible: 422 "
    "`no_feasible_plan` (with the plan saying why), or with `stand` a 201 `standing` need "
    "that is placed when the books allow, until its deadline. `client_need_id` or an "
    "`Idempotency-Key` header makes a retry return the same need (200, "
    "`Idempotent-Replayed: true`).",
    responses={
        200: {"model": NeedOut, "description": "A retry: the need as it is now"},
        **problems(422),
    },
)
async def post_need(
    request: NeedRequest,
    principal: Buyer,
    service: NeedsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = (
        None
    ),
) -> JSONResponse:
    return await service.place(principal, request, idempotency_key)


@router.post(
    "/needs/plan",
    response_model=PlanOut,
    summary="The plan a need would get now, without placing or keeping anything",
    description="Prices every alternative of the need from the live books as `POST /v1/needs` "
    "would, and answers the plan (`chosen`, `alternatives`, `excluded`, `explanation`); "
    "nothing is placed or stored, so a buyer can look before it buys.",
    responses=problems(422),
)
async def plan_need(request: NeedRequest, principal: Buyer, service: NeedsDep) -> dict[str, Any]:
    return service.preview(principal, request)


@router.get(
    "/needs/{need_id}",
    response_model=NeedOut,
    summary="A need of the account: its plan, status and block order's outcome",
    responses=problems(404),
)
async def get_need(need_id: Identifier, principal: NeedReader, service: NeedsDep) -> dict[str, Any]:
    return await service.get(principal, need_id)


@router.delete(
    "/needs/{need_id}",
    response_model=NeedOut,
    summary="Withdraw a standing need",
    responses=problems(404, 409),
)
async def withdraw_need(need_id: Identifier, principal: Buyer, service: NeedsDep) -> dict[str, Any]:
    return await service.withdraw(principal, need_id)

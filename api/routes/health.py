"""`/v1/health`: whether the API is up and caught up, and every stage's progress."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.auth import Caller
from api.deps import HealthDep, MarketDep
from api.models import Health, HealthProblem
from api.problems import PROBLEM, problem_title, problems

# A key is optional here, but one that is sent must be live (401), and anonymous callers
# have a budget per address (429).
router = APIRouter(prefix="/v1", tags=["market data"], responses=problems(401, 429))


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema to write into a response, its parts referring to the document's
    components (which the models of other responses put there)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


@router.get(
    "/health",
    response_model=Health,
    summary="Whether the API is up and caught up, and every stage's progress",
    description="Per stage (risk, matching, settlement, this API process's market-data "
    "fold) and partition: the end offset, the stage's offset, the lag and whether it "
    "moves. 503 (a problem detail listing the same) when a stage is stalled: settlement "
    "stopped at an event it cannot apply, or a lag has not moved for CX_STALL_SECONDS.",
    responses={
        503: {
            "description": "A stage is stalled (`stalled`)",
            "content": {PROBLEM: {"schema": _inline_schema(HealthProblem)}},
        }
    },
)
async def health(_: Caller, market: MarketDep, pipeline_health: HealthDep) -> JSONResponse:
    pipeline, stages, stalls = await pipeline_health.reading()
    ready = market.ready.is_set()
    body = {
        "market_data_ready": ready,
        "log_time": market.now_ms,
        "stall_seconds": pipeline.stall_seconds,
        "stages": stages,
        "stalls": stalls,
    }
    if not pipeline.stalled:
        return JSONResponse({"status": "ok" if ready else "starting", **body})
    problem = {"type": "/problems/stalled", "title": problem_title("stalled"), "status": 503}
    body = {**problem, "detail": pipeline.describe(), **body}
    return JSONResponse(body, 503, media_type=PROBLEM)

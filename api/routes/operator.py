"""Operator keys' endpoints: API keys, the event history and its replay and audit, the
pipeline's status and stalls, market controls and account limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.auth import Operator
from api.deps import (
    CommandsDep,
    HealthDep,
    KeyRingDep,
    KeysDep,
    LedgerDep,
    MarketDep,
    RuntimeDep,
    listed_or_404,
    listed_or_422,
)
from api.keys import (
    KeyInfo,
    Principal,
    ReservedAccount,
    RoleConflict,
    refuse_unknown_accounts,
)
from api.marketdata import control_key, request_key
from api.models import (
    ControlAnswer,
    ControlRequest,
    DeadLetterOut,
    KeyOut,
    KeyRequest,
    LimitsAnswer,
    LimitsRequest,
    MarketControlRequest,
    NewKeyOut,
    PipelineStatusOut,
    SetAsideAnswer,
    SetAsideRequest,
    StoredEventOut,
)
from api.parameters import MAX_SQL_INT
from api.problems import Problem, chinese_first, problems
from api.services import Commands, cst, iso, stage_out, stall_out
from api.streams import KEY_REVOKED
from exchange.deadletters import DeadLetter, read_dead_letters
from exchange.domain.catalogue import SymbolError, is_family, parse_symbol
from exchange.domain.messages import (
    ALL_CONTRACTS,
    MARKET_WIDE_ACTIONS,
    AccountLimitsSet,
    ContractStateChanged,
    ControlMarket,
    Identifier,
    MarketAction,
    MarketControlRejected,
    RejectReason,
    RequestRejected,
    SetAccountLimits,
)
from matching.outputs import HALTED
from settlement.audit import Discrepancy, audit, audit_shards
from settlement.history import replay_document, stream_condition
from settlement.replay import parse_until
from settlement.restart import replay_merged_stored, replay_stored
from settlement.shards import (
    format_cursor,
    parse_cursor,
    read_merged,
    viewing,
)
from settlement.stalled import Stall
from settlement.store import StoredEvent

router = APIRouter(prefix="/v1/admin", tags=["operator"], responses=problems(401, 403, 429))

EventCursor = Annotated[
    str | None,
    Query(max_length=400, description="an event's `cursor`: the page starts after that event"),
]
"""Where a page of stored events goes on: the last event's `cursor`, naming each shard's last
position read."""


@router.post(
    "/keys",
    status_code=201,
    summary="Create an API key; the key is shown only in this answer",
    responses=problems(409, 422),
)
async def new_key(request: KeyRequest, _: Operator, store: KeysDep) -> NewKeyOut:
    try:
        created = await store.create_key(request.account_id, request.role, request.label)
    except RoleConflict as conflict:
        raise Problem(409, "role-conflict", str(conflict)) from None
    except ReservedAccount as reserved:
        raise Problem(422, "reserved-account", str(reserved), field="account_id") from None
    return NewKeyOut(key=created.key, **_key_out(created.info).model_dump())


@router.get("/keys", summary="API keys (never their secrets), oldest first")
async def keys(
    _: Operator,
    store: KeysDep,
    account_id: Annotated[Identifier | None, Query()] = None,
    include_revoked: bool = False,
) -> list[KeyOut]:
    return [_key_out(k) for k in await store.list_keys(account_id, include_revoked)]


@router.delete("/keys/{key_id}", summary="Revoke an API key", responses=problems(404))
async def revoke(
    key_id: str, _: Operator, store: KeysDep, keyring: KeyRingDep, market: MarketDep
) -> KeyOut:
    revoked = await store.revoke_key(key_id)
    if revoked is None:
        raise Problem(404, "unknown-key", f"there is no API key {key_id!r}")
    keyring.forget(key_id)
    market.revoke({key_id}, KEY_REVOKED)
    return _key_out(revoked)


@router.get(
    "/events",
    summary="Replay: stored events after a global position, in order",
    description="Page through the whole history with `cursor` = the last event's `cursor` (or, "
    "with one settlement shard, `after` = the last position seen). With settlement in shards "
    "the history is every shard's, merged by log time as a replay merges them (ties by shard "
    "number), each event labelled with its `shard` and its position that shard's own; a "
    "cursor names each shard's last position read, so no page skips or repeats an event "
    "while the shards go on settling.",
    responses=problems(422),
)
async def events(
    _: Operator,
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0, le=MAX_SQL_INT)] = 0,
    cursor: EventCursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[StoredEventOut]:
    shards = runtime.shards
    if cursor is not None and after:
        raise _bad_cursor("give `cursor` or `after`, not both")
    if cursor is not None:
        try:
            start = parse_cursor(cursor, len(shards), MAX_SQL_INT)
        except ValueError as error:
            raise _bad_cursor(str(error)) from None
    elif len(shards) == 1:
        start = (after,)
    elif after:
        raise _bad_cursor(
            f"`after` is a position of one shard's history, and there are {len(shards)} "
            "settlement shards: continue with the last event's `cursor`"
        )
    else:
        start = (0,) * len(shards)
    if len(shards) == 1:
        return [
            _event_out(e, 0, format_cursor((e.position,)))
            for e in await runtime.store.read_all(start[0], limit)
        ]
    engines = [shard.engine for shard in shards]
    return [
        _event_out(found.event, found.shard, format_cursor(found.cursor))
        async for found in read_merged(engines, start, limit=limit, batch=limit)
    ]


def _bad_cursor(message: str) -> Problem:
    return Problem(
        422,
        "invalid-cursor",
        f"游标无效 invalid cursor: {message}",
        errors=[{"field": "cursor", "message": message}],
    )


@router.get(
    "/streams/{stream_id}",
    summary="Replay: the events of one stream (contract-SYMBOL, account-ID, exchange)",
    description="From `from_version` on, in stored order. With settlement in shards a stream "
    "can span shards (an account's, a day-ahead auction's, the exchange's): every shard's "
    "events of it, merged by log time as a replay merges them (ties by shard number), each "
    "labelled with its `shard`, its `stream_version` that shard's own (`from_version` applies "
    "to each shard's); page on with `cursor` = the last event's `cursor`.",
    responses=problems(422),
)
async def stream_events(
    stream_id: str,
    _: Operator,
    runtime: RuntimeDep,
    from_version: Annotated[int, Query(ge=1, le=MAX_SQL_INT)] = 1,
    cursor: EventCursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[StoredEventOut]:
    shards = runtime.shards
    if cursor is None and len(shards) == 1:
        stored = await runtime.store.read_stream(stream_id, from_version)
        return [_event_out(e, 0, format_cursor((e.position,))) for e in stored[:limit]]
    try:
        start = (
            (0,) * len(shards) if cursor is None else parse_cursor(cursor, len(shards), MAX_SQL_INT)
        )
    except ValueError as error:
        raise _bad_cursor(str(error)) from None
    engines = [shard.engine for shard in shards]
    condition = stream_condition(stream_id, from_version)
    return [
        _event_out(found.event, found.shard, format_cursor(found.cursor))
        async for found in read_merged(engines, start, condition, limit=limit)
    ]


@router.get(
    "/status",
    summary="Every stage's progress per partition, and every stall",
    description="The figures `/v1/health` reports, always with 200, and what could not be "
    "read. Set an event a stalled partition stopped at aside with `POST /v1/admin/set-aside`.",
)
async def pipeline_status(_: Operator, pipeline_health: HealthDep) -> PipelineStatusOut:
    pipeline = await pipeline_health.status()
    return PipelineStatusOut(
        checked_at=iso(pipeline.checked_ms),
        stalled=pipeline.stalled,
        stall_seconds=pipeline.stall_seconds,
        stages=[stage_out(p) for p in pipeline.partitions],
        stalls=[stall_out(s) for s in pipeline.stalls],
        unreadable=list(pipeline.unreadable),
    )


@router.post(
    "/set-aside",
    summary="Set aside the event a stalled partition stopped at",
    description="Settlement sends the event to the dead-letter topic (`cx deadletters "
    "list`) and settles its partition on from the next one, within a second or so. Only "
    "an open `cannot_apply` stall can be set aside; `cx deadletters replay` appends the "
    "event again once its cause is fixed.",
    responses=problems(404, 422),
)
async def set_aside(
    request: SetAsideRequest, principal: Operator, ledger: LedgerDep
) -> SetAsideAnswer:
    try:
        stall = await ledger.set_aside(request.source, principal.account_id, request.reason)
    except ValueError as error:
        raise Problem(422, "invalid-request", str(error)) from None
    if stall is None:
        raise Problem(404, "no-stall", f"no stage is stalled at {request.source!r}")
    return SetAsideAnswer(
        source=stall.source,
        stage=stall.stage,
        event_id=stall.event_id,
        event_type=stall.event_type,
        set_aside_by=principal.account_id,
        reason=request.reason,
        status="requested",
    )


@router.get(
    "/dead-letters",
    summary="Records the stages set aside to the dead-letter topic, in the order set aside",
    description="What `cx deadletters list` shows: each record once, with its source, stage, "
    "reason and log time, and for one an operator set aside with `POST /v1/admin/set-aside` "
    "who did, why and when. `cx deadletters replay SOURCE` appends one again.",
)
async def dead_letters(_: Operator, runtime: RuntimeDep, ledger: LedgerDep) -> list[DeadLetterOut]:
    letters = await read_dead_letters(runtime.log, runtime.topics.deadletters)
    stalls = await ledger.set_aside_stalls()
    return [_dead_letter_out(letter, stalls.get(letter.source)) for letter in letters]


def _control_refused(
    commands: Commands, action: MarketAction, refused: MarketControlRejected
) -> str:
    """What a refused control says, Chinese first: a halt of a contract already halted (or a
    resume of one not halted) says so in words, not only by matching's reason."""
    view = commands.market.view(refused.symbol)
    state = None if view is None else view.state
    if action == "halt" and state == HALTED:
        return (
            f"合约 {refused.symbol} 已处于暂停状态, 无需再次暂停 / {refused.symbol} is already "
            f"halted: nothing to halt ({refused.message})"
        )
    if action == "resume" and refused.reason is RejectReason.NOT_HALTED:
        return (
            f"合约 {refused.symbol} 未暂停, 无需恢复 / {refused.symbol} is not halted ({state}): "
            f"nothing to resume ({refused.message})"
        )
    return chinese_first(refused.reason.value, refused.message)


async def control(
    commands: Commands, principal: Principal, action: MarketAction, symbol: str, **fields: Any
) -> ControlAnswer:
    """Sign an operator's market command, send it and wait for the answer: for a control of
    one contract (or family), matching's decision (the refusal, or `applied` with the state it
    left the contract in); for one of the whole market, the command reaching matching."""
    command = commands.sign(
        ControlMarket(operator_id=principal.account_id, action=action, symbol=symbol, **fields)
    )
    key = control_key(principal.account_id, symbol, action)
    outcome = await commands.submit_and_wait(command, key)
    if isinstance(outcome, MarketControlRejected):
        raise Problem(422, outcome.reason.value, _control_refused(commands, action, outcome))
    status: Literal["applied", "requested", "pending"]
    if outcome is None:
        status = "pending"
    elif action in MARKET_WIDE_ACTIONS:
        # Answered by the first matching partition to record it: the others act on their own.
        status = "requested"
    else:
        status = "applied"
    state = outcome.state if isinstance(outcome, ContractStateChanged) else None
    return ControlAnswer(
        symbol=symbol, action=action, status=status, operator_id=principal.account_id, state=state
    )


@router.post(
    "/contracts/{symbol}/{action}",
    summary="Halt, resume, delist, list or band a contract, or schedule its family's auction",
    description="A command in the log like any other, so it replays; it records the "
    "operator's account and the reason given. Every one answers with matching's decision: "
    "`applied` (with the contract's `state` after a halt, resume, list or delist), or 422 "
    "with matching's reason (`not_continuous`, `not_halted`, `in_auction`, `already_listed`, "
    "`contract_closed`, `not_pre_open`, `unknown_contract`). `delist` closes the contract "
    "early and cancels its resting orders; `list` re-opens a delisted contract or lists one "
    "of the symbol grammar the catalogue does not list; `set_band` takes `band` (fen, 0: "
    "none) and a contract or a family `CLASS.REGION` as the symbol; `schedule_auction` takes "
    "`at` (log time, ms, not past: else 422 naming `at`) and `symbols` of the family in "
    "pre-open.",
    responses=problems(404, 422),
)
async def control_contract(
    symbol: str,
    action: Literal["halt", "resume", "schedule_auction", "delist", "list", "set_band"],
    request: ControlRequest,
    principal: Operator,
    market: MarketDep,
    commands: CommandsDep,
) -> ControlAnswer:
    if action == "list":
        try:
            parse_symbol(symbol)
        except SymbolError as error:
            raise Problem(404, "unknown_contract", str(error)) from None
    elif not (action == "set_band" and is_family(symbol)):
        listed_or_404(market, symbol)
    for other in request.symbols:
        listed_or_422(market, other)
    if action == "set_band" and request.band is None:
        raise _bad_field("band", "设置价格带需要 band", "set_band needs a band (fen; 0: none)")
    if action == "schedule_auction":
        _auction_time_or_422(request.at, market.listing_ms)
    return await control(
        commands,
        principal,
        action,
        symbol,
        at=request.at,
        symbols=request.symbols,
        reason=request.reason,
        band=request.band,
    )


def _auction_time_or_422(at: int | None, now_ms: int) -> None:
    """Refuse, before anything is logged, an auction with no time or one already past (the
    exchange's latest log time): matching would run it at once, over nothing collected."""
    if at is None:
        raise _bad_field(
            "at", "安排集合竞价需要竞价时间 at", "schedule_auction needs `at`, the log time (ms)"
        )
    if at < now_ms:
        raise _bad_field(
            "at",
            f"竞价时间已过 ({iso(at)} 早于交易所当前时间 {iso(now_ms)})",
            f"the auction's time {at} is before the exchange's log time {now_ms}",
        )


def _bad_field(field: str, chinese: str, english: str) -> Problem:
    return Problem(
        422,
        "invalid-request",
        f"参数 {field}: {chinese} / {english}",
        errors=[{"field": field, "message": english}],
    )


@router.post(
    "/market/{action}",
    summary="Halt or resume every contract of the market",
    description="Sent to every matching partition; each halts its contracts trading "
    "continuously and those collecting orders in pre-open for an auction that has not taken "
    "them yet (or resumes its halted ones). Recorded with who and why.",
    responses=problems(422),
)
async def control_market(
    action: Literal["halt", "resume"],
    request: MarketControlRequest,
    principal: Operator,
    commands: CommandsDep,
) -> ControlAnswer:
    market_action: MarketAction = "halt_market" if action == "halt" else "resume_market"
    return await control(commands, principal, market_action, ALL_CONTRACTS, reason=request.reason)


@router.put(
    "/accounts/{account_id}/limits",
    summary="Set a participant's limits on its open orders (null: no limit)",
    description="Enforced by the risk stage of the account's partition: an order, block or "
    "amend that would take the account's open orders past a limit is rejected as "
    "`account_limit_exceeded`. Orders already open stay. Answers `set` once risk has set "
    "them, or 422 with risk's reason (`not_operator`: the API's operator key does not verify "
    "there). An account no key was ever made for is refused (404 `unknown-account`) and "
    "nothing is set.",
    responses=problems(404, 422),
)
async def set_limits(
    account_id: Identifier,
    request: LimitsRequest,
    principal: Operator,
    commands: CommandsDep,
    keys: KeysDep,
) -> LimitsAnswer:
    await refuse_unknown_accounts(keys, [account_id])
    command = commands.sign(
        SetAccountLimits(
            operator_id=principal.account_id,
            account_id=account_id,
            max_open_quantity=request.max_open_quantity,
            max_open_notional=request.max_open_notional,
            reason=request.reason,
        )
    )
    waiting = request_key(command.type, principal.account_id, account_id)
    outcome = await commands.submit_and_wait(command, waiting)
    if isinstance(outcome, RequestRejected):
        raise Problem(422, outcome.reason.value, outcome.message)
    return LimitsAnswer(
        account_id=account_id,
        max_open_quantity=request.max_open_quantity,
        max_open_notional=request.max_open_notional,
        status="set" if isinstance(outcome, AccountLimitsSet) else "pending",
        operator_id=principal.account_id,
    )


@router.get(
    "/history",
    summary="Export events by contract, account, order and log time (JSON lines or CSV)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "One event a line, in stored order (with settlement in shards: "
            "every shard's, merged by log time as a replay merges them, each with its `shard`)",
        }
    },
)
async def export_history(
    _: Operator,
    ledger: LedgerDep,
    contract: Annotated[str | None, Query(max_length=64)] = None,
    account_id: Annotated[Identifier | None, Query()] = None,
    order_id: Annotated[Identifier | None, Query()] = None,
    since_ts: Annotated[
        int | None, Query(ge=0, le=MAX_SQL_INT, description="log time, ms, inclusive")
    ] = None,
    until_ts: Annotated[
        int | None, Query(ge=0, le=MAX_SQL_INT, description="log time, ms, inclusive")
    ] = None,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
) -> StreamingResponse:
    exported = ledger.history(format, contract, account_id, order_id, since_ts, until_ts)

    async def lines() -> AsyncIterator[bytes]:
        async for line in exported:
            yield line.encode()

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(lines(), media_type=media)


@router.get(
    "/replay",
    summary="Rebuild books, balances, positions and holds at a position or log time",
    responses=problems(404, 422),
)
async def replay_state(
    _: Operator,
    runtime: RuntimeDep,
    until: Annotated[str | None, Query(description="a position, or an ISO time with offset")] = (
        None
    ),
    contract: Annotated[str | None, Query(max_length=64)] = None,
    account_id: Annotated[Identifier | None, Query()] = None,
) -> dict[str, Any]:
    if contract is not None and contract not in runtime.catalogue:
        raise Problem(404, "unknown_contract", f"contract {contract!r} is not listed")
    try:
        position, ts = parse_until(until) if until else (None, None)
    except ValueError as error:
        message = f"{error}; 或一个位置(数字) or a position (digits)"
        raise Problem(
            422,
            "invalid-time",
            f"参数 until: {message}",
            errors=[{"field": "until", "message": message}],
        ) from None
    if position is not None and position > MAX_SQL_INT:
        raise Problem(
            422,
            "invalid-request",
            f"until: position {position} is past the largest there can be ({MAX_SQL_INT})",
            errors=[{"field": "until", "message": f"at most {MAX_SQL_INT}"}],
        )
    partitions = runtime.topics.market_partitions
    if len(runtime.shards) == 1:
        async with runtime.store.view() as view:
            result = await replay_stored(
                view, view.connection, runtime.catalogue, position, ts, partitions=partitions
            )
    else:
        # Every settlement shard's history merged, from the shards' snapshots put together
        # (from position 0 with a position cut: `until` positions are the merged order's).
        shards = runtime.shards
        async with viewing(shards) as views:
            merged = await replay_merged_stored(
                views,
                runtime.catalogue,
                partitions,
                position,
                ts,
            )
        result = merged.result
    return replay_document(result, contract, account_id)


@router.get("/audit", summary="Check the whole history from the event store")
async def audit_history(_: Operator, runtime: RuntimeDep) -> dict[str, Any]:
    found: list[tuple[str, Discrepancy]] = []
    partitions = runtime.topics.market_partitions
    if len(runtime.shards) == 1:
        report = await audit(runtime.store, runtime.catalogue, partitions)
    else:
        # Each settlement shard on its own, then their histories merged as one.
        each, report = await audit_shards(runtime.shards, runtime.catalogue, partitions)
        for shard, part in enumerate(each):
            found += [(f"shard {shard}: ", d) for d in part.discrepancies]
    found += [("", d) for d in report.discrepancies]
    return {
        "events": report.events,
        "orders": report.orders,
        "trades": report.trades,
        "checkpoints": report.checkpoints,
        "state_hash": report.state_hash,
        "history_hash": report.history_hash,
        "discrepancies": [
            {"kind": d.kind, "message": where + d.message, "positions": list(d.positions)}
            for where, d in found
        ],
    }


def _dead_letter_out(letter: DeadLetter, stall: Stall | None) -> DeadLetterOut:
    topic, partition, offset = letter.source.rsplit(":", 2)
    return DeadLetterOut(
        source=letter.source,
        topic=topic,
        partition=int(partition),
        offset=int(offset),
        stage=letter.stage,
        reason=letter.reason,
        logged_at=iso(letter.ts),
        value=letter.value.decode(errors="replace"),
        event_id=None if stall is None else stall.event_id,
        event_type=None if stall is None else stall.event_type,
        set_aside_by=None if stall is None else stall.set_aside_by,
        set_aside_reason=None if stall is None else stall.set_aside_reason,
        set_aside_at=None if stall is None or stall.resolved_ms is None else iso(stall.resolved_ms),
    )


def _key_out(info: KeyInfo) -> KeyOut:
    return KeyOut(
        key_id=info.key_id,
        account_id=info.account_id,
        role=info.role,
        label=info.label,
        created_at=cst(info.created_at),
        revoked_at=None if info.revoked_at is None else cst(info.revoked_at),
    )


def _event_out(event: StoredEvent, shard: int = 0, cursor: str | None = None) -> StoredEventOut:
    return StoredEventOut(
        shard=shard,
        cursor=cursor,
        position=event.position,
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        event_id=event.event_id,
        type=event.type,
        schema_version=event.schema_version,
        data=event.data,
        metadata=event.metadata,
        recorded_at=cst(event.recorded_at),
    )

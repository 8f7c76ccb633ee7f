"""Need-based orders at the API edge: plan from the live books, place a block, or stand.

`POST /v1/needs` plans a buyer's need (`exchange/domain/planner.py`) from the asks the market
data fold shows, and places the chosen alternative as a block order through the same path as
`POST /v1/block-orders`. A need that nothing can fill now is refused (`no_feasible_plan`), or,
with `stand`, kept until its deadline and planned again whenever a book of one of its candidate
families changes.

Needs are rows in `api_needs`, on the API's metadata like `api_keys`, so
standing needs outlive the process and every API process sees them. The rows are the truth; the
in-memory index of standing needs (which families each one watches) is a cache, rebuilt from
the table every RELOAD_S, which also picks up needs placed through another API process and
expires needs whose deadline passed. Every change of a need's status is a conditional update
(`... WHERE status = 'standing'`), so two processes, or a re-plan racing a withdrawal, can never
both act on one need: exactly one claims it.

What a need's block order became is read from the settled order (the ledger projection), so it
is as durable as the ledger. Deadlines are wall-clock ms: this is the edge, outside the
deterministic path; the log's time is the brokers' append time, the same clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from fastapi.responses import JSONResponse
from sqlalchemy import BigInteger, Boolean, Column, Index, Table, Text

from api.idempotency import derived_id, fingerprint
from api.keys import Principal, Role
from api.marketdata import MarketData, Outcome, order_key
from api.models import NeedOut, NeedRequest
from api.ports import Ledger
from api.problems import Problem, database_unavailable
from api.schema import metadata
from api.services import Commands
from exchange.domain.catalogue import (
    CHINA_STANDARD_TIME,
    INTRADAY_GUARD_MS,
    Catalogue,
    ContractSpec,
    cst_date,
    cst_day_start_ms,
    family_of,
    parse_symbol,
    to_utc_ms,
)
from exchange.domain.messages import (
    MAX_ALTERNATIVES,
    OrderRejected,
    PlaceBlockOrder,
    PlaceExclusiveGroup,
    PlaceOrder,
    RejectReason,
    exchange_order_id,
)
from exchange.domain.performance import decimal_text
from exchange.domain.planner import (
    STRIP,
    Alternative,
    AuctionBid,
    Need,
    NeedError,
    Plan,
    RegionChoice,
    VoucherOf,
    auction_bid,
    plan,
)

log = logging.getLogger(__name__)

RELOAD_S = 1.0
"""How often the standing needs are read again from the table (and due ones expired)."""
REPLANS_PER_ROUND = 32
"""At most this many standing needs are planned again before the worker yields: a burst of
book changes costs bounded work per round, and the rest wait for the next round."""
SETTLE_WAIT_S = 5.0

LOST_AFTER_MS = 30_000
"""A claimed need whose block is not in the ledger after this long is sent again."""
MAX_ATTEMPTS = 10
"""Blocks placed for one need at most: a need whose blocks keep missing stops standing."""
STANDING = "standing"
SUBMITTED = "submitted"
EXPIRED = "expired"
WITHDRAWN = "withdrawn"
REJECTED = "rejected"

api_needs = Table(
    "api_needs",
    metadata,
    Column("need_id", Text, primary_key=True),
    Column("account_id", Text, nullable=False),
    Column("client_need_id", Text),
    Column("fingerprint", Text, nullable=False),
    # The need as asked (JSON of NeedRequest).
    Column("request", Text, nullable=False),
    Column("stand", Boolean, nullable=False),
    Column("status", Text, nullable=False),
    Column("deadline_ms", BigInteger, nullable=False),
    # The plan that was submitted (JSON of PlanOut); a standing need's is computed when read.
    Column("plan", Text),
    # The block order placed: order_id, symbols, price, quantity (JSON).
    Column("block", Text),
    Column("reason", Text),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("api_needs_status_idx", "status"),
    Index("api_needs_account_idx", "account_id", "created_ms"),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _current(request: NeedRequest) -> Need:
    """The need a request states, refused if its deadline has passed."""
    need = need_of(request)
    now = _now_ms()
    if need.deadline_ms <= now:
        raise Problem(
            422,
            "invalid_need",
            f"deadline: {need.deadline_ms} has passed (now {now})",
            field="deadline",
        )
    return need


def need_of(request: NeedRequest) -> Need:
    """The domain's need, or a 422 `invalid_need` naming the field at fault."""
    try:
        return Need(
            unit=request.unit,
            quantity=request.quantity,
            hours=request.hours,
            earliest_start_ms=request.earliest_start,
            deadline_ms=request.deadline,
            regions=tuple(RegionChoice(r.region, r.adder) for r in request.regions),
            max_total=request.max_total,
            min_grade=request.min_grade,
            classes=tuple(request.classes),
            nights=request.nights,
        )
    except NeedError as error:
        field = _REQUEST_FIELDS.get(error.field, error.field)
        raise Problem(422, "invalid_need", f"{field}: {error.message}", field=field) from None


_REQUEST_FIELDS = {"earliest_start_ms": "earliest_start", "deadline_ms": "deadline"}
"""The request's names of the domain's fields, where they differ."""


def plan_document(result: Plan, catalogue: Catalogue) -> dict[str, Any]:
    """A plan as the API shows it (PlanOut)."""

    def alternative(a: Any) -> dict[str, Any]:
        spec = catalogue.get(a.symbols[0])
        return {
            "kind": a.kind,
            "hours": a.hours,
            "family": a.family,
            "resource_class": a.resource_class,
            "region": a.region,
            "delivery_start": "" if spec is None else spec.delivery_start.isoformat(),
            "symbols": list(a.symbols),
            "cards_per_hour": a.cards_per_hour,
            "standard_card_hours": decimal_text(a.standard_card_hours),
            "cost": a.cost,
            "adder_cost": a.adder_cost,
            "ranked_total": a.ranked_total,
            "limit_price": a.limit_price,
            "feasible": a.feasible,
            "reason": a.reason,
            "detail": a.detail,
            "voucher": a.voucher,
            "net_cost": a.net_cost,
        }

    return {
        "chosen": None if result.chosen is None else alternative(result.chosen),
        "alternatives": [alternative(a) for a in result.alternatives],
        "excluded": [
            {"family": e.family, "reason": e.reason, "detail": e.detail} for e in result.excluded
        ],
        "reason": result.reason,
        "explanation": result.explanation,
    }


class NeedStore(Protocol):
    """Buyers' needs (`api.needs`), the truth behind the standing needs each process keeps."""

    async def need(self, need_id: str) -> dict[str, Any] | None:
        """One need's row."""

    async def add_need(self, row: Mapping[str, Any]) -> bool:
        """Store a new need; False if one of its id is already stored."""

    async def update_need(self, need_id: str, only_if: str | None, **values: Any) -> bool:
        """Change a need's columns, only while its status is `only_if` (when given); False if
        nothing changed."""

    async def expire_needs(self, now_ms: int) -> list[dict[str, Any]]:
        """Expire standing needs whose deadline passed; the standing ones left (need_id,
        account_id, request)."""

    async def lost_needs(self, claimed_before_ms: int) -> list[dict[str, Any]]:
        """Needs submitted at or before `claimed_before_ms` (need_id, account_id, block)."""


@dataclass(slots=True)
class _Standing:
    need_id: str
    account_id: str
    need: Need
    families: frozenset[str]
    voucher: str | None = None


class NeedService:
    """Plans, places, keeps and re-plans needs; one per API process."""

    def __init__(
        self,
        ledger: Ledger,
        needs: NeedStore,
        catalogue: Catalogue,
        market: MarketData,
        commands: Commands,
    ) -> None:
        self.ledger = ledger
        self.needs = needs
        self.catalogue = catalogue
        self.market = market
        self.commands = commands
        self._standing: dict[str, _Standing] = {}
        self._watchers: dict[str, set[str]] = {}
        """family -> ids of the standing needs whose plan reads its books."""
        self._changed: set[str] = set()
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._wake = asyncio.Event()
        self._submissions: set[asyncio.Task[None]] = set()
        market.book_listeners.append(self._book_changed)

    def plan(
        self,
        need: Need,
        account_id: str,
        voucher: str | None = None,
        listed: Sequence[ContractSpec] | None = None,
    ) -> Plan:
        """Plan from the live books (of the `listed` contracts, by default all), without the
        account's own asks (self-trade prevention would cancel them rather than let the block
        buy from them), after the account's grant of programme `voucher` if it names one."""
        listed = self.market.listed() if listed is None else listed
        asks = self._asks(need, account_id, listed)
        voucher_of = None if voucher is None else self._voucher_of(account_id, voucher)
        return plan(need, listed, asks, self.market.performance, voucher_of)

    def _voucher_of(self, account_id: str, voucher: str) -> VoucherOf:
        """What the account's grant of `voucher` would reserve for a block, as the risk stage
        reserves it (the risk stage decides: this is the grant, and the log time, as the market
        data shows them)."""
        grant = self.market.accounts.grants.get((voucher, account_id))

        def voucher_of(first: ContractSpec, cost: int, hours: int) -> int | None:
            if grant is None or grant.eligible(first.symbol, self.market.now_ms):
                return None
            return grant.voucher_for(cost, hours)

        return voucher_of

    def _check_voucher(self, account_id: str, voucher: str | None) -> None:
        """Refuse a need naming a programme the account holds no grant of."""
        if voucher is not None and (voucher, account_id) not in self.market.accounts.grants:
            raise Problem(
                422,
                "not_eligible",
                f"account {account_id} holds no grant of programme {voucher!r}",
                field="voucher",
            )

    def _asks(
        self, need: Need, account_id: str, listed: Sequence[ContractSpec]
    ) -> Mapping[str, Sequence[tuple[int, int]]]:
        regions = {r.region for r in need.regions}
        own: dict[tuple[str, int], int] = {}
        for order in self.market.orders.values():
            if order.account_id == account_id and order.side == "sell":
                key = (order.symbol, order.price)
                own[key] = own.get(key, 0) + order.quantity - order.filled
        asks: dict[str, list[tuple[int, int]]] = {}
        for spec in listed:
            view = self.market.views.get(spec.symbol)
            if spec.region not in regions or view is None:
                continue
            levels = []
            for price, quantity in sorted(view.asks.items()):
                left = quantity - own.get((spec.symbol, price), 0)
                if left > 0:
                    levels.append((price, left))
            asks[spec.symbol] = levels
        return asks

    # Placing, reading and withdrawing.

    def preview(self, principal: Principal, request: NeedRequest) -> dict[str, Any]:
        """The plan a need would get now (after its voucher, if it names one), placing and
        storing nothing."""
        need = _current(request)
        self._check_voucher(principal.account_id, request.voucher)
        plan = self.plan(need, principal.account_id, request.voucher)
        return plan_document(plan, self.catalogue)

    async def place(
        self, principal: Principal, request: NeedRequest, idempotency_key: str | None
    ) -> JSONResponse:
        """Plan a need and place its block, keep it standing, or refuse it."""
        account = principal.account_id
        need = _current(request)
        now = _now_ms()
        # Without a voucher (or the day-ahead or nights flag), the body a need had before
        # vouchers (the day-ahead auction, strips) existed: a retry of a need sent before them
        # still matches it.
        unset = {name for name in ("voucher", "day_ahead", "nights") if not getattr(request, name)}
        body = request.model_dump(exclude=unset)
        print_ = fingerprint("POST", "/v1/needs", body)
        name = request.client_need_id or (
            None if idempotency_key is None else f"key:{idempotency_key}"
        )
        need_id = f"n-{uuid.uuid4().hex}" if name is None else derived_id("need", account, name)
        if name is not None:
            existing = await self._row(need_id)
            if existing is not None:
                return await self._retried(existing, name, print_)
        self._check_voucher(account, request.voucher)
        if request.day_ahead:
            return await self._place_in_auction(account, request, need, need_id, print_, body)
        result = self.plan(need, account, request.voucher)
        if result.chosen is None and not request.stand:
            raise Problem(
                422,
                "no_feasible_plan",
                f"{result.reason}: {result.explanation}",
                reason=result.reason,
                plan=plan_document(result, self.catalogue),
            )
        row = {
            "need_id": need_id,
            "account_id": account,
            "client_need_id": request.client_need_id,
            "fingerprint": print_,
            "request": orjson.dumps(body).decode(),
            "stand": request.stand,
            "status": STANDING,
            "deadline_ms": need.deadline_ms,
            "plan": None,
            "block": None,
            "reason": None,
            "created_ms": now,
            "updated_ms": now,
        }
        if not await self.needs.add_need(row):
            # The same name, stored meanwhile by another request (here or in another process).
            return await self._retried(await self._row(need_id) or row, name or need_id, print_)
        if result.chosen is None:
            self._watch(_Standing(need_id, account, need, result.families, request.voucher))
            return self._json(await self.document(row), 201)
        outcome = await self._claim_and_submit(need_id, account, result, request.voucher)
        document = await self.document(await self._stored(need_id))
        if isinstance(outcome, OrderRejected):
            raise Problem(
                422, outcome.reason.value, outcome.message, need_id=need_id, need=document
            )
        return self._json(document, 201)

    def auction_bid(self, need: Need, account_id: str, voucher: str | None) -> AuctionBid:
        """The exclusive group a need bids in an auction: the planner's best alternatives
        among the contracts an auction still takes (their day-ahead auction's, or past its
        gate the next intraday auction's, as the risk stage routes an exclusive group), those
        the need's voucher covers when it names one; else 422 with why none."""
        listed = self.market.listed()
        now = self.market.now_ms
        open_ = [spec for spec in listed if self._auctioned_after(spec, now)]
        result = self.plan(need, account_id, voucher, open_)
        if not result.alternatives:
            if self.plan(need, account_id, voucher).alternatives:
                raise Problem(
                    422,
                    RejectReason.ALREADY_AUCTIONED.value,
                    self._auctions_closed(need, now),
                )
            raise Problem(
                422,
                "no_feasible_plan",
                f"{result.reason}: {result.explanation}",
                reason=result.reason,
                plan=plan_document(result, self.catalogue),
            )
        grant = None if voucher is None else self.market.accounts.grants.get((voucher, account_id))

        def covered(alternative: Alternative) -> bool:
            return grant is None or not grant.eligible(alternative.symbols[0], now)

        ticks = {spec.symbol: spec.tick_size for spec in open_}
        bid = auction_bid(result, need, ticks, MAX_ALTERNATIVES, covered)
        if bid is None:
            raise Problem(
                422,
                "no_feasible_plan",
                "no alternative of the need fits one day-ahead bid: each must be an hourly "
                "block (strips are not auctioned) in one CST day, be covered by the need's "
                "voucher if it names one, and max_total must buy at least a tick per card-hour",
                plan=plan_document(result, self.catalogue),
            )
        return bid

    def _auctioned_after(self, spec: ContractSpec, now: int) -> bool:
        """Whether an auction after `now` still takes an exclusive group's alternative
        starting with `spec`: its day-ahead auction, before the gate; past it, the next
        intraday auction, if the exchange runs them and it comes at least INTRADAY_GUARD_MS
        before the hour's gate closure (`exchange.domain.risk.gates`)."""
        rules = self.catalogue.rules
        gate = rules.day_ahead_gate(to_utc_ms(spec.delivery_start))
        if gate is None or now < gate:
            return True
        intraday = rules.intraday_auction_after(now)
        return intraday is not None and intraday + INTRADAY_GUARD_MS <= self.catalogue.retires_at(
            spec
        )

    def _auction_of(self, bid: AuctionBid) -> str:
        """The auction a bid goes to, in words: its hours' day-ahead auction, or past its
        gate the next intraday auction."""
        now = self.market.now_ms
        gate = self.catalogue.rules.day_ahead_gate(min(a.start_ms for a in bid.alternatives))
        intraday = self.catalogue.rules.intraday_auction_after(now)
        if gate is None or now < gate or intraday is None:
            return "the day-ahead auction"
        at = datetime.fromtimestamp(intraday / 1000, CHINA_STANDARD_TIME)
        return f"the intraday auction at {at:%Y-%m-%d %H:%M} CST"

    def _auctions_closed(self, need: Need, now: int) -> str:
        """Why no auction takes the need's hours any more, and what the buyer can do."""
        day = cst_date(cst_day_start_ms(need.earliest_start_ms))
        instead = (
            "send the need without day_ahead to be planned against the books now (with stand, "
            "it waits for asks until its deadline)"
        )
        intraday = self.catalogue.rules.intraday_auction_after(now)
        if intraday is None:
            return (
                f"日前竞价已截止 the day-ahead auction of {day} has passed its gate for every "
                f"alternative of the need, and this exchange runs no intraday auctions: {instead}"
            )
        at = datetime.fromtimestamp(intraday / 1000, CHINA_STANDARD_TIME)
        return (
            f"日前竞价已截止 the day-ahead auction of {day} has passed its gate for every "
            f"alternative of the need, and the next intraday auction, at {at:%Y-%m-%d %H:%M} "
            f"CST, comes too late: their gates close within {INTRADAY_GUARD_MS // 60_000} "
            f"minutes of it; {instead}"
        )

    async def _place_in_auction(
        self,
        account: str,
        request: NeedRequest,
        need: Need,
        need_id: str,
        print_: str,
        body: dict[str, Any],
    ) -> JSONResponse:
        """Bid a need in the day-ahead auction as one exclusive group, or refuse it."""
        if request.stand:
            raise Problem(
                422,
                "invalid_need",
                "stand: a day-ahead need waits for its auction; it cannot also stand",
                field="stand",
            )
        bid = self.auction_bid(need, account, request.voucher)
        now = _now_ms()
        name = f"{need_id}-group"
        group_id = exchange_order_id(account, name)
        group = {
            "order_id": group_id,
            "sent_as": name,
            "day_ahead": True,
            "alternatives": [
                {
                    "order_id": exchange_order_id(account, f"{name}.{n}"),
                    "symbols": list(a.symbols),
                    "price": price,
                }
                for n, (a, price) in enumerate(zip(bid.alternatives, bid.prices, strict=True), 1)
            ],
            "price": bid.price,
            "quantity": bid.quantity,
        }
        if request.voucher is not None:
            group["voucher"] = request.voucher
        result = Plan(
            chosen=None,
            alternatives=bid.alternatives,
            excluded=(),
            reason=None,
            explanation=f"{len(bid.alternatives)} alternative(s) bid in {self._auction_of(bid)} "
            f"at up to {bid.price} fen a card-hour on average (each less its region adder), "
            f"{bid.quantity} cards an hour",
        )
        row = {
            "need_id": need_id,
            "account_id": account,
            "client_need_id": request.client_need_id,
            "fingerprint": print_,
            "request": orjson.dumps(body).decode(),
            "stand": False,
            "status": SUBMITTED,
            "deadline_ms": need.deadline_ms,
            "plan": orjson.dumps(plan_document(result, self.catalogue)).decode(),
            "block": orjson.dumps(group).decode(),
            "reason": None,
            "created_ms": now,
            "updated_ms": now,
        }
        if not await self.needs.add_need(row):
            stored = await self._row(need_id) or row
            return await self._retried(stored, request.client_need_id or need_id, print_)
        outcome = await self.commands.submit_and_wait(
            _group_command(account, group), order_key(account, group_id)
        )
        if isinstance(outcome, OrderRejected):
            await self.needs.update_need(
                need_id, None, status=REJECTED, reason=outcome.message, updated_ms=_now_ms()
            )
            document = await self.document(await self._stored(need_id))
            raise Problem(
                422, outcome.reason.value, outcome.message, need_id=need_id, need=document
            )
        return self._json(await self.document(await self._stored(need_id)), 201)

    async def _group_document(
        self, row: Mapping[str, Any], group: dict[str, Any]
    ) -> dict[str, Any]:
        """A day-ahead need's group and what became of each alternative."""
        alternatives = []
        for alternative in group["alternatives"]:
            settled = await self.ledger.order(alternative["order_id"])
            alternatives.append(
                {
                    **alternative,
                    "status": "pending" if settled is None else settled["status"],
                    "filled": 0 if settled is None else settled["filled"],
                    "paid": await self.ledger.order_paid(alternative["order_id"]),
                    "reason": None if settled is None else settled["reason"],
                }
            )
        return {
            "order_id": group["order_id"],
            "price": group["price"],
            "quantity": group["quantity"],
            "voucher": group.get("voucher"),
            "alternatives": alternatives,
        }

    async def _retried(self, existing: Mapping[str, Any], name: str, print_: str) -> JSONResponse:
        """The answer to a need named like one stored: the stored need if it is the same
        request, else a problem."""
        if existing["fingerprint"] != print_:
            raise Problem(
                422,
                "idempotency-key-reused",
                f"{name!r} already named a different need; use a new name",
            )
        return self._json(await self.document(existing), 200, replayed=True)

    async def get(self, principal: Principal, need_id: str) -> dict[str, Any]:
        """One of the caller's needs (operators may read any)."""
        return await self.document(await self._own(principal, need_id))

    async def withdraw(self, principal: Principal, need_id: str) -> dict[str, Any]:
        """Withdraw a standing need; 409 if it is no longer standing."""
        row = await self._own(principal, need_id)
        if not await self._transition(need_id, WITHDRAWN, reason="withdrawn by the buyer"):
            raise Problem(
                409,
                "need_not_standing",
                f"need {need_id!r} is {row['status']}, not standing; it cannot be withdrawn",
            )
        self._unwatch(need_id)
        return await self.document(await self._stored(need_id))

    async def _own(self, principal: Principal, need_id: str) -> dict[str, Any]:
        row = await self._row(need_id)
        if row is None or (
            principal.role is not Role.OPERATOR and row["account_id"] != principal.account_id
        ):
            raise Problem(
                404, "unknown_need", f"account {principal.account_id} has no need {need_id!r}"
            )
        return row

    async def _row(self, need_id: str) -> dict[str, Any] | None:
        return await self.needs.need(need_id)

    async def _stored(self, need_id: str) -> dict[str, Any]:
        """The row of a need this process has just stored or changed."""
        row = await self.needs.need(need_id)
        if row is None:
            raise LookupError(f"need {need_id!r} is no longer in the table")
        return row

    async def document(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A need as the API shows it (NeedOut)."""
        request = orjson.loads(row["request"])
        status = row["status"]
        plan_out = None if row["plan"] is None else orjson.loads(row["plan"])
        if status == STANDING:
            asked = NeedRequest(**request)
            live = self.plan(need_of(asked), row["account_id"], asked.voucher)
            plan_out = plan_document(live, self.catalogue)
        order = None
        group = None
        block = None if row["block"] is None else orjson.loads(row["block"])
        if block is not None and block.get("day_ahead"):
            group = await self._group_document(row, block)
            if status == SUBMITTED:
                status = _auctioned_status(group["alternatives"])
        elif block is not None:
            settled = await self.ledger.order(block["order_id"])
            order = {
                **block,
                "status": "pending" if settled is None else settled["status"],
                "filled": 0 if settled is None else settled["filled"],
                "paid": await self.ledger.order_paid(block["order_id"]),
                "reason": row["reason"] if settled is None else settled["reason"],
                "recalled": await self._recalled(row["account_id"], block, settled),
            }
            if status == SUBMITTED and settled is not None:
                status = _settled_status(settled)
        return NeedOut(
            need_id=row["need_id"],
            client_need_id=row["client_need_id"],
            status=status,
            need=request,
            plan=plan_out,
            order=order,
            group=group,
            reason=row["reason"],
            created_ms=row["created_ms"],
            updated_ms=row["updated_ms"],
        ).model_dump(mode="json")

    async def _recalled(
        self, account_id: str, block: Mapping[str, Any], settled: Mapping[str, Any] | None
    ) -> list[dict[str, Any]]:
        """The recalls that took back the buyer's units of the need's hours (or strip): only an
        interruptible class's units can be recalled, so only such a filled order reads them.
        Recalls are kept per contract, provider and holder, not per order: a unit of the same
        hour the buyer bought otherwise and that was recalled is listed too."""
        if settled is None or not settled["filled"]:
            return []
        specs = [parse_symbol(symbol) for symbol in block["symbols"]]
        if specs[0].resource_class.firm_class is None:
            return []
        contracts = {spec.symbol for spec in specs}
        contracts |= {hour.symbol for spec in specs for hour in spec.hours()}
        _, recalls = await self.ledger.deliveries(account_id)
        return [
            {
                "symbol": recall["symbol"],
                "recall_id": recall["recall_id"],
                "quantity": recall["quantity"],
                "refund": recall["refund"],
                "penalty": recall["penalty"],
                "reason": recall["reason"],
            }
            for recall in recalls
            if recall["buyer_id"] == account_id and recall["symbol"] in contracts
        ]

    @staticmethod
    def _json(document: dict[str, Any], status: int, replayed: bool = False) -> JSONResponse:
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(document, status, headers=headers)

    async def _transition(
        self, need_id: str, status: str, reason: str | None = None, **values: Any
    ) -> bool:
        """Move a standing need to `status`; False if it was no longer standing."""
        return await self.needs.update_need(
            need_id, STANDING, status=status, reason=reason, updated_ms=_now_ms(), **values
        )

    async def _claim_and_submit(
        self, need_id: str, account_id: str, result: Plan, voucher: str | None
    ) -> Outcome | None:
        """Claim a standing need for its plan's block and place the block (with `voucher` if
        it covers the chosen alternative). The claim comes first: if the process dies in
        between, the need shows `submitted` with a pending order rather than ever being placed
        twice."""
        chosen = result.chosen
        if chosen is None or chosen.limit_price is None:
            raise ValueError(f"need {need_id!r}: the plan chose no priced block to place")
        before = await self._row(need_id)
        earlier = (
            None if before is None or before["block"] is None else orjson.loads(before["block"])
        )
        attempt = 1 if earlier is None else earlier.get("attempt", 1) + 1
        sent_as = f"{need_id}-block" if attempt == 1 else f"{need_id}-block-{attempt}"
        order_id = exchange_order_id(account_id, sent_as)
        block: dict[str, Any] = {
            "order_id": order_id,
            "sent_as": sent_as,
            "symbols": list(chosen.symbols),
            "price": chosen.limit_price,
            "quantity": chosen.cards_per_hour,
            "attempt": attempt,
        }
        if chosen.kind == STRIP:
            block["kind"] = STRIP
        if chosen.voucher is not None and voucher is not None:
            block["voucher"] = voucher
        command = _need_order(account_id, block)
        claimed = await self._transition(
            need_id,
            SUBMITTED,
            plan=orjson.dumps(plan_document(result, self.catalogue)).decode(),
            block=orjson.dumps(block).decode(),
        )
        if not claimed:
            return None
        self._unwatch(need_id)
        outcome = await self.commands.submit_and_wait(command, order_key(account_id, order_id))
        if isinstance(outcome, OrderRejected):
            await self.needs.update_need(
                need_id, None, status=REJECTED, reason=outcome.message, updated_ms=_now_ms()
            )
        elif outcome is not None:
            await self._settled(order_id)
            await self._stand_again_if_missed(need_id, order_id, attempt)
        return outcome

    async def _stand_again_if_missed(self, need_id: str, order_id: str, attempt: int) -> None:
        """A standing need whose block missed altogether (the books moved between planning and
        matching) stands again until its deadline, to be planned at the next book change."""
        settled = await self.ledger.order(order_id)
        row = await self._row(need_id)
        if (
            settled is None
            or row is None
            or not row["stand"]
            or settled["status"] != "cancelled"
            or settled["filled"]
            or attempt >= MAX_ATTEMPTS
            or row["deadline_ms"] <= _now_ms()
        ):
            return
        stood = await self.needs.update_need(
            need_id,
            SUBMITTED,
            status=STANDING,
            reason=f"block {order_id} missed ({settled['reason']}): standing again",
            updated_ms=_now_ms(),
        )
        if stood:
            asked = NeedRequest(**orjson.loads(row["request"]))
            need = need_of(asked)
            families = self.plan(need, row["account_id"]).families
            self._watch(_Standing(need_id, row["account_id"], need, families, asked.voucher))

    async def _settled(self, order_id: str) -> None:
        """Wait (briefly) until the ledger shows the block done, so the answer tells how it
        ended: a block in continuous trading fills or is cancelled at once."""
        deadline = asyncio.get_running_loop().time() + SETTLE_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            settled = await self.ledger.order(order_id)
            if settled is not None and settled["status"] != "open":
                return
            await asyncio.sleep(0.05)

    # Standing needs.

    def _watch(self, standing: _Standing) -> None:
        self._standing[standing.need_id] = standing
        for family in standing.families:
            self._watchers.setdefault(family, set()).add(standing.need_id)

    def _unwatch(self, need_id: str) -> None:
        standing = self._standing.pop(need_id, None)
        if standing is None:
            return
        for family in standing.families:
            watchers = self._watchers.get(family)
            if watchers is not None:
                watchers.discard(need_id)
                if not watchers:
                    del self._watchers[family]

    def _book_changed(self, symbol: str) -> None:
        # Runs inside the market data fold: only note the family and wake the worker.
        family = family_of(symbol)
        if family in self._watchers:
            self._changed.add(family)
            self._wake.set()

    def _enqueue(self, need_id: str) -> None:
        if need_id not in self._queued:
            self._queued.add(need_id)
            self._queue.append(need_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep standing needs: reload, expire, re-plan on book changes, until `stop`."""
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait(
                [stopping, asyncio.create_task(self.market.ready.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            next_reload = 0.0
            while not stop.is_set():
                loop_time = asyncio.get_running_loop().time()
                try:
                    if loop_time >= next_reload:
                        await self._reload()
                        next_reload = loop_time + RELOAD_S
                    for family in sorted(self._changed):
                        for need_id in sorted(self._watchers.get(family, ())):
                            self._enqueue(need_id)
                    self._changed.clear()
                    await self._replan_some()
                except Exception as error:
                    if not database_unavailable(error):
                        raise
                    # Keep the needs through an outage: reload and re-plan once it is over.
                    log.warning("standing needs wait for the database: %s", error)
                    next_reload = 0.0
                    await asyncio.wait([stopping], timeout=RELOAD_S)
                    continue
                if self._queue:
                    await asyncio.sleep(0)
                    continue
                self._wake.clear()
                waking = asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    [stopping, waking], timeout=RELOAD_S, return_when=asyncio.FIRST_COMPLETED
                )
                waking.cancel()
        finally:
            stopping.cancel()
            for task in list(self._submissions):
                await asyncio.gather(task, return_exceptions=True)

    async def _reload(self) -> None:
        """Expire due needs, then rebuild the index of standing ones from the table."""
        now = _now_ms()
        rows = await self.needs.expire_needs(now)
        await self._resend_lost_blocks(now)
        standing = {row["need_id"] for row in rows}
        for need_id in [n for n in self._standing if n not in standing]:
            self._unwatch(need_id)
        for row in rows:
            need_id, account_id = row["need_id"], row["account_id"]
            if need_id in self._standing:
                continue
            # New to this process (placed elsewhere, or before a restart): plan it once now,
            # then whenever its families' books change.
            asked = NeedRequest(**orjson.loads(row["request"]))
            need = need_of(asked)
            families = self.plan(need, account_id).families
            self._watch(_Standing(need_id, account_id, need, families, asked.voucher))
            self._enqueue(need_id)

    async def _resend_lost_blocks(self, now: int) -> None:
        """Send again the block of a need claimed long enough ago that never reached the
        ledger (the process that claimed it died before sending). The block's order id is the
        same, so if the first send did arrive the risk stage refuses this one as a duplicate:
        a block is never placed twice."""
        for row in await self.needs.lost_needs(now - LOST_AFTER_MS):
            need_id, account_id = row["need_id"], row["account_id"]
            block = orjson.loads(row["block"])
            if await self.ledger.order(block["order_id"]) is not None:
                continue
            if block.get("day_ahead"):
                await self._resend_lost_group(need_id, account_id, block)
                continue
            if "sent_as" not in block:
                # Claimed before order ids were scoped by account: the block was to be sent
                # as its order id; sent now, the exchange knows it by the scoped one.
                block["sent_as"] = block["order_id"]
                block["order_id"] = exchange_order_id(account_id, block["sent_as"])
                claimed = await self._transition_submitted(need_id, block)
                if not claimed:
                    continue
            command = _need_order(account_id, block)
            log.warning("need %s: its block %s never arrived; sending it again", *(
                need_id, block["order_id"]))  # fmt: skip
            await self.commands.submit_and_wait(command, order_key(account_id, block["order_id"]))

    async def _resend_lost_group(
        self, need_id: str, account_id: str, group: dict[str, Any]
    ) -> None:
        """Send again a day-ahead need's group none of whose alternatives reached the ledger;
        the same group id makes the risk stage refuse it as a duplicate if it did arrive."""
        for alternative in group["alternatives"]:
            if await self.ledger.order(alternative["order_id"]) is not None:
                return
        log.warning("need %s: its group %s never arrived; sending it again", need_id,
                    group["order_id"])  # fmt: skip
        await self.commands.submit_and_wait(
            _group_command(account_id, group), order_key(account_id, group["order_id"])
        )

    async def _transition_submitted(self, need_id: str, block: dict[str, Any]) -> bool:
        """Record a submitted need's block anew; False if the need is no longer submitted."""
        return await self.needs.update_need(need_id, SUBMITTED, block=orjson.dumps(block).decode())

    async def _replan_some(self) -> None:
        for _ in range(min(REPLANS_PER_ROUND, len(self._queue))):
            need_id = self._queue.popleft()
            self._queued.discard(need_id)
            standing = self._standing.get(need_id)
            if standing is None:
                continue
            result = self.plan(standing.need, standing.account_id, standing.voucher)
            if result.chosen is None:
                continue
            task = asyncio.create_task(self._submit_standing(standing, result))
            self._submissions.add(task)
            task.add_done_callback(self._submissions.discard)

    async def _submit_standing(self, standing: _Standing, result: Plan) -> None:
        need_id = standing.need_id
        try:
            await self._claim_and_submit(need_id, standing.account_id, result, standing.voucher)
        except Exception:
            log.exception("placing the block of standing need %s failed", need_id)


def _need_order(account_id: str, block: Mapping[str, Any]) -> PlaceBlockOrder | PlaceOrder:
    """The order a need's stored block sends: a block order of its hours, or for a strip one
    fill-or-kill limit order on it (all the need's cards at once or nothing, as a block; IOC
    would leave a part the job cannot run on, and a resting order would hold the buyer's cash
    and fill unplanned)."""
    if block.get("kind") == STRIP:
        (symbol,) = block["symbols"]
        return PlaceOrder(
            order_id=block["sent_as"],
            account_id=account_id,
            symbol=symbol,
            side="buy",
            price=block["price"],
            quantity=block["quantity"],
            time_in_force="FOK",
            voucher=block.get("voucher"),
        )
    return PlaceBlockOrder(
        order_id=block["sent_as"],
        account_id=account_id,
        symbols=block["symbols"],
        side="buy",
        price=block["price"],
        quantity=block["quantity"],
        voucher=block.get("voucher"),
    )


def _group_command(account_id: str, group: Mapping[str, Any]) -> PlaceExclusiveGroup:
    """The exclusive group a day-ahead need's stored group sends."""
    return PlaceExclusiveGroup(
        order_id=group["sent_as"],
        account_id=account_id,
        alternatives=[a["symbols"] for a in group["alternatives"]],
        price=group["price"],
        quantity=group["quantity"],
        voucher=group.get("voucher"),
        prices=_own_prices(group["price"], group["alternatives"]),
    )


def _own_prices(price: int, alternatives: Sequence[Mapping[str, Any]]) -> list[int] | None:
    """The alternatives' own price limits where any differs from the group's (groups stored
    before alternatives had their own price have none)."""
    prices = [a.get("price", price) for a in alternatives]
    return None if all(p == price for p in prices) else prices


def _auctioned_status(alternatives: Sequence[Mapping[str, Any]]) -> str:
    """A day-ahead need's status from its alternatives: `submitted` until the auction has
    decided on every one, then how the one it took (if any) filled."""
    if any(a["status"] in ("pending", "open") for a in alternatives):
        return SUBMITTED
    if any(a["status"] == "filled" for a in alternatives):
        return "filled"
    if all(a["status"] == "rejected" for a in alternatives):
        return REJECTED
    return "partially_filled" if any(a["filled"] for a in alternatives) else "not_filled"


def _settled_status(settled: Mapping[str, Any]) -> str:
    if settled["status"] == "filled":
        return "filled"
    if settled["status"] == "open":
        return SUBMITTED
    if settled["status"] == "rejected":
        return REJECTED
    return "partially_filled" if settled["filled"] else "not_filled"

"""The async HTTP client of the exchange's API (/v1)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from cx_client.errors import ProblemError, RateLimited, problem_error
from cx_client.models import (
    Account,
    AmendAnswer,
    BlockAnswer,
    Book,
    CancelAllAnswer,
    CancelAnswer,
    Candle,
    Contract,
    DayAheadAuction,
    DayAheadResults,
    DeadLetter,
    Delivery,
    DepositAnswer,
    Enterprise,
    ExclusiveGroupAnswer,
    Fill,
    GrantApplication,
    Health,
    Invoices,
    KeyInfo,
    Me,
    Need,
    NewKey,
    Obligation,
    Order,
    OrderAnswer,
    OrderStatement,
    Performance,
    PipelineStatus,
    ProgrammeReport,
    ReportTrade,
    RequestAnswer,
    ScheduledDeposit,
    SetAside,
    Stall,
    Statement,
    Stats,
    StoredEvent,
    Trade,
    VatInvoice,
)
from cx_client.stream import MarketStream

M = TypeVar("M", bound=BaseModel)
Side = Literal["buy", "sell"]
Role = Literal["provider", "buyer", "operator", "programme_admin"]
SlaTier = Literal["standard", "premium"]
Network = Literal["ethernet", "roce", "infiniband"]


class ExchangeClient:
    """Every endpoint of the API as a typed coroutine.

    Prices and money are integer fen (0.01 CNY), quantities integer units. Refusals raise
    `ProblemError` (or a subclass). A 429 is retried after its Retry-After, up to
    `rate_limit_retries` times, then raised as `RateLimited`.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        rate_limit_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.rate_limit_retries = rate_limit_retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._me: Me | None = None

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request; raise the problem of a refusal; wait out 429s within the budget."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(self.rate_limit_retries + 1):
            response = await self._http.request(
                method, path, json=json, params=query, headers=headers
            )
            if response.status_code < 400:
                return response
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            retry_after = _seconds(response.headers.get("retry-after"))
            error = problem_error(response.status_code, body, retry_after)
            if isinstance(error, RateLimited) and attempt < self.rate_limit_retries:
                await asyncio.sleep(error.retry_after)
                continue
            raise error
        raise AssertionError("unreachable")

    async def _get(self, model: type[M], path: str, **params: Any) -> M:
        return model.model_validate((await self.request("GET", path, params=params)).json())

    async def _list(self, model: type[M], path: str, **params: Any) -> list[M]:
        data = (await self.request("GET", path, params=params)).json()
        # A list of a model class given at run time, which mypy takes for a variable as type.
        return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]

    async def health(self) -> Health:
        """Whether the API is up and caught up, and every stage's progress; `status` is
        `stalled` when a stage is (the API answers 503 then, with the same figures)."""
        try:
            return await self._get(Health, "/v1/health")
        except ProblemError as problem:
            if problem.status != 503 or problem.code != "stalled":
                raise
            return Health.model_validate({**problem.body, "status": "stalled"})

    async def contracts(self) -> list[Contract]:
        """The catalogue with best prices."""
        return await self._list(Contract, "/v1/contracts")

    async def contract(self, symbol: str) -> Contract:
        """One contract."""
        return await self._get(Contract, f"/v1/contracts/{symbol}")

    async def book(self, symbol: str, depth: int = 10) -> Book:
        """A contract's depth."""
        return await self._get(Book, f"/v1/contracts/{symbol}/book", depth=depth)

    async def trades(self, symbol: str, limit: int = 50) -> list[Trade]:
        """A contract's settled trades, newest first."""
        return await self._list(Trade, f"/v1/contracts/{symbol}/trades", limit=limit)

    async def candles(
        self, symbol: str, interval: Literal["1m", "1h"] = "1m", limit: int = 60
    ) -> list[Candle]:
        """A contract's candles, oldest first."""
        return await self._list(
            Candle, f"/v1/contracts/{symbol}/candles", interval=interval, limit=limit
        )

    async def stats(self, symbol: str) -> Stats:
        """A contract's 24-hour statistics."""
        return await self._get(Stats, f"/v1/contracts/{symbol}/stats")

    async def performance(self) -> Performance:
        """The standard card-hour table."""
        return await self._get(Performance, "/v1/performance")

    async def me(self) -> Me:
        """The key's account and role (remembered after the first call)."""
        if self._me is None:
            self._me = await self._get(Me, "/v1/me")
        return self._me

    async def place_order(
        self,
        symbol: str,
        side: Side,
        price: int,
        quantity: int,
        *,
        client_order_id: str | None = None,
        idempotency_key: str | None = None,
        result: bool = False,
        day_ahead: bool = False,
        **fields: Any,
    ) -> OrderAnswer:
        """Place an order; with a client order id or idempotency key a retry is safe.

        With `result` the answer also says what matching did (`OrderAnswer.result`); with
        `day_ahead` the order waits for the day-ahead auction of its hour. Extra keyword
        arguments are further order fields the exchange accepts.
        """
        body = {
            "symbol": symbol,
            "side": side,
            "price": price,
            "quantity": quantity,
            "client_order_id": client_order_id,
            **fields,
        }
        if day_ahead:
            body["day_ahead"] = True
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"answer": "result"} if result else None
        response = await self.request(
            "POST", "/v1/orders", json=body, headers=headers, params=params
        )
        return OrderAnswer.model_validate(response.json())

    async def amend_order(
        self, order_id: str, *, price: int | None = None, quantity: int | None = None
    ) -> AmendAnswer:
        """Change an open order's price or open quantity in place (only reducing keeps priority)."""
        body = {k: v for k, v in {"price": price, "quantity": quantity}.items() if v is not None}
        response = await self.request("PATCH", f"/v1/orders/{order_id}", json=body)
        return AmendAnswer.model_validate(response.json())

    async def cancel_all_orders(self) -> CancelAllAnswer:
        """Cancel every open order of the account (the kill switch)."""
        response = await self.request("DELETE", "/v1/orders")
        return CancelAllAnswer.model_validate(response.json())

    async def place_block_order(
        self,
        symbols: list[str],
        side: Literal["buy", "sell"],
        price: int,
        quantity: int,
        *,
        client_order_id: str | None = None,
        voucher: str | None = None,
        day_ahead: bool = False,
    ) -> BlockAnswer:
        """The same quantity in each consecutive hour listed, all or none, at an average price;
        with a client order id a retry is safe; a buy may name a voucher programme; with
        `day_ahead` the block waits for the day-ahead auction of its hours."""
        body = {
            "symbols": symbols,
            "side": side,
            "price": price,
            "quantity": quantity,
            "client_order_id": client_order_id,
            "voucher": voucher,
            "day_ahead": day_ahead or None,
        }
        response = await self.request("POST", "/v1/block-orders", json=_present(body))
        return BlockAnswer.model_validate(response.json())

    async def state_need(
        self,
        unit: Literal["standard_card_hours", "cards"],
        quantity: int,
        hours: int,
        earliest_start: int,
        deadline: int,
        regions: dict[str, int],
        max_total: int,
        *,
        classes: Sequence[str] = (),
        min_grade: int = 0,
        stand: bool = False,
        client_need_id: str | None = None,
        voucher: str | None = None,
        day_ahead: bool = False,
    ) -> Need:
        """State a need (buyer keys); the exchange places the cheapest block that meets it,
        after the `voucher` programme's grant where it covers the block.

        `regions` maps each acceptable region to its adder (fen per standard card-hour, 0 for
        none); times are ms since the epoch; `min_grade` is in ten-thousandths of the standard
        card. Nothing feasible raises `ProblemError` of type `/problems/no_feasible_plan`
        (its `body["plan"]` says why), unless `stand` keeps the need until its deadline.
        With `day_ahead` the need bids in the day-ahead auction as an exclusive group of its
        best alternatives instead (`Need.group`).
        """
        body: dict[str, Any] = {
            "unit": unit,
            "quantity": quantity,
            "hours": hours,
            "earliest_start": earliest_start,
            "deadline": deadline,
            "regions": [{"region": r, "adder": a} for r, a in regions.items()],
            "max_total": max_total,
            "classes": list(classes),
            "min_grade": min_grade,
            "stand": stand,
            "client_need_id": client_need_id,
        }
        if voucher is not None:
            body["voucher"] = voucher
        if day_ahead:
            body["day_ahead"] = True
        response = await self.request("POST", "/v1/needs", json=body)
        return Need.model_validate(response.json())

    async def place_exclusive_group(
        self,
        alternatives: list[list[str]],
        price: int,
        quantity: int,
        *,
        client_order_id: str | None = None,
        voucher: str | None = None,
        prices: list[int] | None = None,
    ) -> ExclusiveGroupAnswer:
        """Bid for at most one of several buy blocks in the day-ahead auction (each at most
        `price`, or its own of `prices`); with a client order id a retry is safe."""
        body = {
            "alternatives": alternatives,
            "price": price,
            "quantity": quantity,
            "prices": prices,
            "client_order_id": client_order_id,
            "voucher": voucher,
        }
        response = await self.request("POST", "/v1/exclusive-groups", json=_present(body))
        return ExclusiveGroupAnswer.model_validate(response.json())

    async def day_ahead_auction(self, date: str) -> DayAheadAuction:
        """The day-ahead auction of a CST date (YYYY-MM-DD): status, gate, clearing prices."""
        return await self._get(DayAheadAuction, f"/v1/day-ahead/{date}")

    async def day_ahead_results(self, date: str, account_id: str | None = None) -> DayAheadResults:
        """What the account's orders got in a day's auction (operators name the account)."""
        return await self._get(
            DayAheadResults, f"/v1/day-ahead/{date}/results", account_id=account_id
        )

    async def need(self, need_id: str) -> Need:
        """One of the account's needs, with its current plan and outcome."""
        return await self._get(Need, f"/v1/needs/{need_id}")

    async def withdraw_need(self, need_id: str) -> Need:
        """Withdraw a standing need."""
        response = await self.request("DELETE", f"/v1/needs/{need_id}")
        return Need.model_validate(response.json())

    async def cancel_order(self, order_id: str) -> CancelAnswer:
        """Cancel what remains of an open order."""
        response = await self.request("DELETE", f"/v1/orders/{order_id}")
        return CancelAnswer.model_validate(response.json())

    async def orders(
        self,
        status: Literal["open", "filled", "cancelled", "rejected"] | None = None,
        limit: int = 100,
        account_id: str | None = None,
    ) -> list[Order]:
        """The account's settled orders, newest first (operators name the account)."""
        return await self._list(
            Order, "/v1/orders", status=status, limit=limit, account_id=account_id
        )

    async def order(self, order_id: str) -> Order:
        """One order as settled; one the exchange accepted that settlement has not recorded yet
        comes with `status` accepted, `settled` false and `market_status` (extra fields)."""
        return await self._get(Order, f"/v1/orders/{order_id}")

    async def fills(self, limit: int = 100, account_id: str | None = None) -> list[Fill]:
        """The account's fills, newest first."""
        return await self._list(Fill, "/v1/fills", limit=limit, account_id=account_id)

    async def account(self, account_id: str | None = None) -> Account:
        """Settled balances of the key's account (operators name any account)."""
        account_id = account_id or (await self.me()).account_id
        return await self._get(Account, f"/v1/accounts/{account_id}")

    async def _deposit(
        self, body: dict[str, Any], account_id: str | None, idempotency_key: str | None
    ) -> DepositAnswer:
        account_id = account_id or (await self.me()).account_id
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = await self.request(
            "POST", f"/v1/accounts/{account_id}/deposits", json=body, headers=headers
        )
        return DepositAnswer.model_validate(response.json())

    async def deposit_cash(
        self, amount: int, *, account_id: str | None = None, idempotency_key: str | None = None
    ) -> DepositAnswer:
        """Credit cash (fen)."""
        return await self._deposit({"kind": "cash", "amount": amount}, account_id, idempotency_key)

    async def deposit_capacity(
        self,
        symbol: str,
        quantity: int,
        *,
        account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> DepositAnswer:
        """Make capacity of a contract sellable (providers)."""
        body = {"kind": "capacity", "symbol": symbol, "quantity": quantity}
        return await self._deposit(body, account_id, idempotency_key)

    async def obligations(self, account_id: str | None = None) -> list[Obligation]:
        """What the account sold: units to deliver and payouts, per contract."""
        return await self._list(Obligation, "/v1/obligations", account_id=account_id)

    async def withdraw_cash(
        self, amount: int, *, withdrawal_id: str | None = None, account_id: str | None = None
    ) -> RequestAnswer:
        """Pay available cash out (never what is held for open orders)."""
        body = {"kind": "cash", "amount": amount, "withdrawal_id": withdrawal_id}
        return await self._bank("POST", await self._account_path(account_id, "withdrawals"), body)

    async def withdraw_capacity(
        self,
        symbol: str,
        quantity: int,
        *,
        withdrawal_id: str | None = None,
        account_id: str | None = None,
    ) -> RequestAnswer:
        """Take unsold capacity back, until the contract's gate closes."""
        body = {
            "kind": "capacity",
            "symbol": symbol,
            "quantity": quantity,
            "withdrawal_id": withdrawal_id,
        }
        return await self._bank("POST", await self._account_path(account_id, "withdrawals"), body)

    async def deposit_schedule(
        self,
        resource_class: str,
        region: str,
        quantity: int,
        first_day: str,
        *,
        days: int = 1,
        from_hour: int = 0,
        to_hour: int = 8,
        recallable: bool = False,
        reserve_price: int | None = None,
        deposit_id: str | None = None,
        account_id: str | None = None,
    ) -> ScheduledDeposit:
        """Deposit idle capacity on a schedule (e.g. every night 00-08), optionally with a
        standing ask at `reserve_price` in each hour (providers)."""
        body = {
            "resource_class": resource_class,
            "region": region,
            "quantity": quantity,
            "first_day": first_day,
            "days": days,
            "from_hour": from_hour,
            "to_hour": to_hour,
            "recallable": recallable,
            "reserve_price": reserve_price,
            "deposit_id": deposit_id,
        }
        path = await self._account_path(account_id, "capacity-deposits")
        response = await self.request("POST", path, json=_present(body))
        return ScheduledDeposit.model_validate(response.json())

    async def report_metering(
        self, symbol: str, buyer_id: str, delivered: int, *, report_id: str | None = None
    ) -> RequestAnswer:
        """Report what was delivered to one buyer in one contract (providers)."""
        body = {
            "symbol": symbol,
            "buyer_id": buyer_id,
            "delivered": delivered,
            "report_id": report_id,
        }
        return await self._bank("POST", "/v1/deliveries/metering", body)

    async def report_bundle_use(
        self, symbol: str, buyer_id: str, tokens: int, *, report_id: str | None = None
    ) -> RequestAnswer:
        """Draw one buyer's token bundle down by the `tokens` (integer tokens, not millions)
        it used since the last report; the provider is paid for them at once. Give a
        `report_id` to make a retry safe: a report draws down once."""
        body = {"symbol": symbol, "buyer_id": buyer_id, "tokens": tokens, "report_id": report_id}
        return await self._bank("POST", "/v1/deliveries/metering", body)

    async def dispute_delivery(
        self, symbol: str, provider_id: str, reason: str, *, dispute_id: str | None = None
    ) -> RequestAnswer:
        """Dispute a provider's metering within the delivery window (buyers)."""
        body = {
            "symbol": symbol,
            "provider_id": provider_id,
            "reason": reason,
            "dispute_id": dispute_id,
        }
        return await self._bank("POST", "/v1/deliveries/disputes", body)

    async def recall_capacity(
        self, symbol: str, quantity: int, *, reason: str = "", recall_id: str | None = None
    ) -> RequestAnswer:
        """Recall sold units of a recallable (`-INT`) deposit, with notice (providers)."""
        body = {"symbol": symbol, "quantity": quantity, "reason": reason, "recall_id": recall_id}
        return await self._bank("POST", "/v1/deliveries/recalls", body)

    async def resolve_dispute(
        self, symbol: str, provider_id: str, buyer_id: str, delivered: int, reason: str
    ) -> RequestAnswer:
        """Settle a disputed delivery at the quantity found delivered (operators)."""
        body = {
            "symbol": symbol,
            "provider_id": provider_id,
            "buyer_id": buyer_id,
            "delivered": delivered,
            "reason": reason,
        }
        return await self._bank("POST", "/v1/admin/deliveries/resolve", body)

    async def deliveries(self, account_id: str | None = None) -> list[Delivery]:
        """The account's delivery obligations, as provider or as buyer."""
        return await self._list(Delivery, "/v1/deliveries", account_id=account_id)

    async def invoices(self, account_id: str | None = None) -> Invoices:
        """What each purchase cost: gross, voucher, fee, concession and what was paid."""
        return await self._get(Invoices, await self._account_path(account_id, "invoices"))

    async def create_programme(self, programme_id: str, **terms: Any) -> RequestAnswer:
        """Create a compute-voucher programme (programme administrators); `terms` are the
        fields of POST /v1/programmes."""
        body = {"programme_id": programme_id, **terms}
        return await self._bank("POST", "/v1/programmes", body)

    async def approve_grant(
        self,
        programme_id: str,
        application_id: str,
        limit: int,
        *,
        related_accounts: list[str] | None = None,
        request_id: str | None = None,
    ) -> RequestAnswer:
        """Approve a pending application (programme administrators): a grant of `limit` fen
        carved out of this calendar year's budget."""
        body = {
            "application_id": application_id,
            "limit": limit,
            "related_accounts": related_accounts or [],
            "request_id": request_id,
        }
        return await self._bank("POST", f"/v1/programmes/{programme_id}/grants", body)

    async def fund_discount_pool(
        self, programme_id: str, pool_id: str, discount_bps: int, budget: int
    ) -> RequestAnswer:
        """Set the platform's money aside for a programme's grant holders (operators): each
        grant approved afterwards carries its part, and purchases paid with the voucher are
        discounted `discount_bps` of their amount from it."""
        body = {"pool_id": pool_id, "discount_bps": discount_bps, "budget": budget}
        return await self._bank("POST", f"/v1/programmes/{programme_id}/discount-pools", body)

    async def register_enterprise(
        self, name: str, uscc: str, kind: str, city: str, account_id: str | None = None
    ) -> RequestAnswer:
        """Register (or register again) the enterprise behind the account."""
        body = {"name": name, "uscc": uscc, "kind": kind, "city": city}
        return await self._bank("POST", await self._account_path(account_id, "enterprise"), body)

    async def enterprise(self, account_id: str | None = None) -> Enterprise:
        """The enterprise the account registered."""
        return await self._get(Enterprise, await self._account_path(account_id, "enterprise"))

    async def apply_for_grant(
        self,
        programme_id: str,
        amount: int,
        intended_use: str,
        *,
        application_id: str | None = None,
    ) -> RequestAnswer:
        """Apply for a grant of `amount` fen as the registered enterprise (算力券申领)."""
        body = {"application_id": application_id, "amount": amount, "intended_use": intended_use}
        return await self._bank("POST", f"/v1/programmes/{programme_id}/applications", body)

    async def applications(self) -> list[GrantApplication]:
        """The account's applications, oldest first."""
        return await self._list(GrantApplication, "/v1/applications")

    async def programme_applications(self, programme_id: str) -> list[GrantApplication]:
        """A programme's applications, oldest first (its administrator)."""
        return await self._list(GrantApplication, f"/v1/programmes/{programme_id}/applications")

    async def request_application_info(
        self, programme_id: str, application_id: str, question: str, request_id: str | None = None
    ) -> RequestAnswer:
        """Ask the applicant of a pending application a question (its administrator)."""
        path = f"/v1/programmes/{programme_id}/applications/{application_id}/info-requests"
        return await self._bank("POST", path, {"question": question, "request_id": request_id})

    async def supplement_application(
        self, programme_id: str, application_id: str, answer: str, request_id: str | None = None
    ) -> RequestAnswer:
        """Answer the administrator's question: the application is pending again."""
        path = f"/v1/programmes/{programme_id}/applications/{application_id}/supplements"
        return await self._bank("POST", path, {"answer": answer, "request_id": request_id})

    async def reject_application(
        self, programme_id: str, application_id: str, reason: str, request_id: str | None = None
    ) -> RequestAnswer:
        """Reject a pending application, saying why (its administrator)."""
        path = f"/v1/programmes/{programme_id}/applications/{application_id}/rejection"
        return await self._bank("POST", path, {"reason": reason, "request_id": request_id})

    async def set_voucher_policy(
        self,
        max_rate_bps: int,
        max_cap_per_enterprise: int,
        kinds: list[str],
        cities: list[str] | None = None,
        reason: str = "",
    ) -> RequestAnswer:
        """Set the platform's voucher ceilings (operators)."""
        body = {
            "max_rate_bps": max_rate_bps,
            "max_cap_per_enterprise": max_cap_per_enterprise,
            "kinds": kinds,
            "cities": cities or [],
            "reason": reason,
        }
        return await self._bank("POST", "/v1/admin/voucher-policy", body)

    async def programme_report(self, programme_id: str) -> ProgrammeReport:
        """A programme's budget, usage, burn-down and subsidised purchases."""
        return await self._get(ProgrammeReport, f"/v1/programmes/{programme_id}/report")

    async def programme_report_pdf(self, programme_id: str) -> bytes:
        """A programme's report for the city as PDF (programme administrators, operators)."""
        path = f"/v1/programmes/{programme_id}/report"
        return (await self.request("GET", path, params={"format": "pdf"})).content

    async def statement(self, month: str, account_id: str | None = None) -> Statement:
        """The account's statement for a month `YYYY-MM` in China Standard Time."""
        params = {"month": month, **({"account_id": account_id} if account_id else {})}
        return await self._get(Statement, "/v1/statements", **params)

    async def statement_pdf(self, month: str, account_id: str | None = None) -> bytes:
        """The account's statement for a month as a PDF to file."""
        params = {"month": month, "format": "pdf"}
        if account_id:
            params["account_id"] = account_id
        return (await self.request("GET", "/v1/statements", params=params)).content

    async def order_statement(self, order_id: str) -> OrderStatement:
        """A buy order's statement."""
        return await self._get(OrderStatement, f"/v1/orders/{order_id}/statement")

    async def order_invoice(self, order_id: str) -> VatInvoice:
        """A buy order's VAT invoice data."""
        return await self._get(VatInvoice, f"/v1/orders/{order_id}/invoice.json")

    async def order_invoice_file(self, order_id: str, kind: Literal["csv", "pdf"]) -> bytes:
        """A buy order's VAT invoice data as CSV or PDF."""
        return (await self.request("GET", f"/v1/orders/{order_id}/invoice.{kind}")).content

    async def _account_path(self, account_id: str | None, tail: str) -> str:
        account_id = account_id or (await self.me()).account_id
        return f"/v1/accounts/{account_id}/{tail}"

    async def _bank(self, method: str, path: str, body: dict[str, Any]) -> RequestAnswer:
        response = await self.request(method, path, json=_present(body))
        return RequestAnswer.model_validate(response.json())

    async def stalls(
        self,
        resource_class: str | None = None,
        region: str | None = None,
        account_id: str | None = None,
    ) -> list[Stall]:
        """Providers' stalls, optionally of one class, region or provider."""
        return await self._list(
            Stall,
            "/v1/stalls",
            resource_class=resource_class,
            region=region,
            account_id=account_id,
        )

    async def put_stall(
        self,
        stall_id: str,
        resource_class: str,
        region: str,
        hours: Sequence[int],
        *,
        sla_tier: SlaTier = "standard",
        max_interruptions: int = 0,
        network: Network | None = None,
        description: str = "",
    ) -> Stall:
        """Set up or change one of your stalls (providers)."""
        body = {
            "resource_class": resource_class,
            "region": region,
            "hours": list(hours),
            "sla_tier": sla_tier,
            "max_interruptions": max_interruptions,
            "network": network,
            "description": description,
        }
        response = await self.request("PUT", f"/v1/stalls/{stall_id}", json=body)
        return Stall.model_validate(response.json())

    async def delete_stall(self, stall_id: str) -> None:
        """Take down one of your stalls (providers)."""
        await self.request("DELETE", f"/v1/stalls/{stall_id}")

    async def create_key(self, account_id: str, role: Role, label: str | None = None) -> NewKey:
        """Create an API key (operators)."""
        body = {"account_id": account_id, "role": role, "label": label}
        response = await self.request("POST", "/v1/admin/keys", json=body)
        return NewKey.model_validate(response.json())

    async def keys(
        self, account_id: str | None = None, include_revoked: bool = False
    ) -> list[KeyInfo]:
        """API keys, without secrets (operators)."""
        return await self._list(
            KeyInfo, "/v1/admin/keys", account_id=account_id, include_revoked=include_revoked
        )

    async def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke an API key (operators)."""
        response = await self.request("DELETE", f"/v1/admin/keys/{key_id}")
        return KeyInfo.model_validate(response.json())

    async def status(self) -> PipelineStatus:
        """Every stage's progress per partition and every stall (operators)."""
        return await self._get(PipelineStatus, "/v1/admin/status")

    async def set_aside(self, source: str, reason: str) -> SetAside:
        """Have settlement set aside the event a stalled partition stopped at, `source` being
        its `topic:partition:offset` (operators)."""
        body = {"source": source, "reason": reason}
        response = await self.request("POST", "/v1/admin/set-aside", json=body)
        return SetAside.model_validate(response.json())

    async def dead_letters(self) -> list[DeadLetter]:
        """Records the stages set aside to the dead-letter topic, in that order (operators)."""
        return await self._list(DeadLetter, "/v1/admin/dead-letters")

    async def events(
        self, after: int = 0, limit: int = 100, cursor: str | None = None
    ) -> list[StoredEvent]:
        """Stored events after a global position, or after the event whose `cursor` is given
        (operators; with settlement in shards only the cursor continues a page)."""
        if cursor is not None:
            return await self._list(StoredEvent, "/v1/admin/events", cursor=cursor, limit=limit)
        return await self._list(StoredEvent, "/v1/admin/events", after=after, limit=limit)

    async def stream_events(
        self, stream_id: str, from_version: int = 1, limit: int = 100
    ) -> list[StoredEvent]:
        """The events of one stream (operators)."""
        return await self._list(
            StoredEvent,
            f"/v1/admin/streams/{stream_id}",
            from_version=from_version,
            limit=limit,
        )

    async def trade_report(
        self,
        *,
        account_id: str | None = None,
        symbol: str | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        limit: int = 500,
    ) -> list[ReportTrade]:
        """Settled trades with counterparties (operators and programme administrators)."""
        return await self._list(
            ReportTrade,
            "/v1/reports/trades",
            account_id=account_id,
            symbol=symbol,
            since_ts=since_ts,
            until_ts=until_ts,
            limit=limit,
        )

    def stream(
        self,
        symbols: Sequence[str] = (),
        channels: Sequence[str] = ("quote", "trades"),
        private: Sequence[str] = (),
        **options: Any,
    ) -> MarketStream:
        """A reconnecting WebSocket stream with this client's key (see `MarketStream`)."""
        url = self.base_url.replace("http", "ws", 1) + "/v1/stream"
        return MarketStream(
            url, self.api_key, symbols=symbols, channels=channels, private=private, **options
        )


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _present(body: dict[str, Any]) -> dict[str, Any]:
    """The fields that were given (None: left to the exchange's default)."""
    return {k: v for k, v in body.items() if v is not None}

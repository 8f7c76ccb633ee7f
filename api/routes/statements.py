"""Statements per account and month or per buy order, and their VAT invoice data (JSON, CSV,
PDF)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.responses import Response

from api.auth import Reader, account_of
from api.deps import LedgerDep
from api.keys import Principal, Role
from api.ports import Ledger
from api.problems import Problem, problems
from api.routes.orders import own_order
from exchange.domain.messages import Identifier
from settlement import documents, statements

router = APIRouter(prefix="/v1", tags=["statements"], responses=problems(401, 403, 429))

InvoiceFormat = Literal["json", "csv", "pdf"]
MEDIA: dict[InvoiceFormat, str] = {
    "json": "application/json",
    "csv": "text/csv",
    "pdf": "application/pdf",
}
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"


@router.get(
    "/statements",
    summary="The account's statement for a calendar month in China Standard Time",
    description="Every fen by which the account's money (cash, held, bonds) moved in the "
    "month, by line, with the journal entries behind them and the cost of the compute "
    "bought split between the government (vouchers net of clawbacks), the platform "
    "(concessions, rebates, discounts) and the firm; `cascades` lists the strips it held or "
    "sold that became positions in their hourly contracts that month. Another account's "
    "statement is refused "
    "`account-mismatch`; an operator naming an account with no settled history gets 404 "
    "`unknown-account`, as the account's own page does. `format=pdf` answers the statement as "
    "a PDF to file.",
    responses={**problems(404, 422), 200: {"content": {"application/pdf": {}}}},
)
async def month_statement(
    principal: Reader,
    ledger: LedgerDep,
    month: Annotated[str, Query(pattern=MONTH, description="YYYY-MM, China Standard Time")],
    account_id: Annotated[Identifier | None, Query()] = None,
    format: Annotated[Literal["json", "pdf"], Query()] = "json",
) -> Any:
    account = account_of(principal, account_id)
    try:
        statements.month_bounds(month)
    except statements.StatementError as error:
        raise Problem(422, "invalid-month", str(error)) from None
    # A participant's own statement may be empty; an operator's typo must not read as one.
    if principal.role is Role.OPERATOR and await ledger.account_summary(account) is None:
        raise Problem(
            404,
            "unknown-account",
            f"账户 {account!r} 没有已结算的记录 / account {account!r} has no settled history",
        )
    found = await ledger.statement(account, month)
    if format == "pdf":
        pdf = await asyncio.to_thread(documents.statement_pdf, found)
        return Response(pdf, media_type="application/pdf")
    return found


@router.get(
    "/orders/{order_id}/statement",
    summary="A buy order's statement: its fills and what later settled them",
    description="Another account's order answers 404 `unknown_order`, as one that does not "
    "exist; a sell order 422 `not-a-buy-order`.",
    responses=problems(404, 422),
)
async def order_statement(
    order_id: Identifier, principal: Reader, ledger: LedgerDep
) -> dict[str, Any]:
    await own_order(ledger, principal, order_id)
    return await _statement_of(ledger, order_id)


async def _statement_of(ledger: Ledger, order_id: str) -> dict[str, Any]:
    try:
        found = await ledger.order_statement(order_id)
    except statements.StatementError as error:
        raise Problem(422, "not-a-buy-order", str(error)) from None
    if found is None:
        raise Problem(404, "unknown_order", f"order {order_id!r} is not settled")
    return found


@router.get(
    "/orders/{order_id}/invoice",
    summary="A buy order's VAT invoice data (增值税发票) as JSON, CSV or PDF",
    description="`format=json|csv|pdf`, or without it the `Accept` header "
    "(application/json, text/csv, application/pdf); also `/invoice.json`, `/invoice.csv`, "
    "`/invoice.pdf`.",
    responses={**problems(404, 422), 200: {"content": {"text/csv": {}, "application/pdf": {}}}},
)
async def order_invoice(
    order_id: Identifier,
    principal: Reader,
    ledger: LedgerDep,
    format: Annotated[InvoiceFormat | None, Query()] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    return await _invoice(ledger, principal, order_id, format or _accepted(accept))


@router.get(
    "/orders/{order_id}/invoice.{extension}",
    summary="A buy order's VAT invoice data in the format its extension names",
    responses={**problems(404, 422), 200: {"content": {"text/csv": {}, "application/pdf": {}}}},
)
async def order_invoice_file(
    order_id: Identifier, extension: InvoiceFormat, principal: Reader, ledger: LedgerDep
) -> Response:
    return await _invoice(ledger, principal, order_id, extension)


def _accepted(accept: str | None) -> InvoiceFormat:
    """The first format the `Accept` header names (JSON when it names none of them)."""
    for media in (accept or "").split(","):
        for name, known in MEDIA.items():
            if media.split(";")[0].strip() == known:
                return name
    return "json"


async def _invoice(
    ledger: Ledger, principal: Principal, order_id: str, kind: InvoiceFormat
) -> Response:
    await own_order(ledger, principal, order_id)
    await _statement_of(ledger, order_id)
    invoice = await ledger.order_invoice(order_id)
    if invoice is None:
        raise Problem(404, "unknown_order", f"order {order_id!r} is not settled")
    if kind == "csv":
        body: str | bytes = statements.invoice_csv(invoice)
    elif kind == "pdf":
        body = await asyncio.to_thread(documents.invoice_pdf, invoice)
    else:
        body = orjson.dumps(invoice)
    disposition = f'inline; filename="invoice-{order_id}.{kind}"'
    return Response(body, media_type=MEDIA[kind], headers={"content-disposition": disposition})

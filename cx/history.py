"""`cx replay`, `cx audit` and `cx history`: the event store's history rebuilt, checked and
exported, for a terminal (the documents themselves are `settlement.history`'s)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import func, select

from cx.migrations import upgrade_to_head
from cx.settings import Settings, rules_differ_message
from exchange.domain.catalogue import Catalogue, cst_iso
from settlement.audit import (
    AuditReport,
    Discrepancy,
    audit,
    audit_ledger_shards,
    audit_shard,
    audit_shards,
    recorded_hashes,
)
from settlement.history import (
    export_header,
    export_line,
    history_condition,
    history_query,
    replay_document,
    verification,
)
from settlement.replay import PartitionsDiffer, ReplayResult, parse_time, parse_until
from settlement.restart import MergedReplay, replay_merged_stored, replay_stored
from settlement.rules import RulesDiffer, check_rules, recorded_rules
from settlement.schema import events
from settlement.shards import read_merged, viewing
from settlement.sql_store import SqlEventStore, open_event_store
from settlement.statements import in_yuan, yuan


async def _open(settings: Settings, url: str | None = None) -> SqlEventStore:
    store = open_event_store(url or settings.event_store_url())
    await store.initialise(upgrade_to_head)
    return store


async def _open_shards(settings: Settings, shard: int | None) -> list[SqlEventStore]:
    """The stores of every settlement shard, or of `shard` alone (UsageError-free: a bad
    number raises ValueError saying which shards there are)."""
    urls = settings.shard_urls()
    if shard is not None and not 0 <= shard < len(urls):
        raise ValueError(
            f"there is no settlement shard {shard}: CX_SETTLEMENT_SHARDS gives {len(urls)} "
            f"(0 to {len(urls) - 1}, 0 the home database)"
        )
    chosen = urls if shard is None else [urls[shard]]
    return [await _open(settings, url) for url in chosen]


async def rules_refused(command: str, stores: list[SqlEventStore], catalogue: Catalogue) -> bool:
    """Whether the rules `catalogue` has differ from those recorded with the history in any
    of `stores` (then say which, on stderr): folded under other rules, a history shows
    checkpoint mismatches and discrepancies that are not in it. A history recorded before the
    rules were has none to compare, and is folded under the rules set now (said too)."""
    rules = catalogue.rules_record()
    unrecorded = False
    for store in stores:
        async with store.engine.connect() as connection:
            try:
                await check_rules(connection, rules)
            except RulesDiffer as error:
                message = rules_differ_message(error.changes)
                print(f"{command}: 规则不符 rules differ: {message}", file=sys.stderr)
                return True
            if not await recorded_rules(connection):
                unrecorded = True
    if unrecorded:
        print(
            f"{command}: 此历史没有记录市场规则, 按现在的规则重放 this history has no recorded "
            "market rules (it was made before they were recorded): folded under the rules set "
            "now",
            file=sys.stderr,
        )
    return False


async def run_replay(
    settings: Settings,
    until: str | None,
    contract: str | None,
    account: str | None,
    as_json: bool,
    verify: bool,
    catalogue: Catalogue | None = None,
    full: bool = False,
    shard: int | None = None,
) -> int:
    """Rebuild the state at `until` (a position or an ISO time), from settlement's latest
    stored snapshot at or before it (from position 0 if `full`, or if there is none or it is
    refused), and print it; 1 if unverified.

    With settlement in shards: one shard's history, or (by default) every shard's merged
    (`settlement.shards.MergedView`; positions are the merged order's), from every shard's
    latest stored snapshot put together (`settlement.restart.replay_merged_stored`), and
    `--verify` checks each shard's recorded hashes by replaying it on its own."""
    catalogue = catalogue or settings.catalogue()
    partitions = settings.market_partitions
    until_position, until_ts = parse_until(until) if until else (None, None)
    if contract is not None and contract not in catalogue:
        print(f"cx replay: contract {contract!r} is not listed", file=sys.stderr)
        return 2
    try:
        stores = await _open_shards(settings, shard)
    except ValueError as error:
        print(f"cx replay: {error}", file=sys.stderr)
        return 2
    merged: MergedReplay | None = None
    try:
        if await rules_refused("cx replay", stores, catalogue):
            return 2
        if len(stores) == 1:
            result = await _replay_one(
                stores[0], catalogue, until_position, until_ts, verify, full, partitions
            )
        else:
            merged = await _replay_merged(
                stores, catalogue, until_position, until_ts, verify, full, partitions
            )
            result = merged.result
    except PartitionsDiffer as error:
        print(f"cx replay: 分区数不符 partitions differ: {error}", file=sys.stderr)
        return 2
    finally:
        for store in stores:
            await store.close()
    if result.refused is not None:
        print(
            f"cx replay: 已拒绝存储的快照 stored snapshot refused: {result.refused}; "
            "从头重放 replayed from position 0",
            file=sys.stderr,
        )
    document = replay_document(result, contract, account)
    if merged is not None:
        document["shard_snapshots"] = merged.snapshots
        document["events_read"] = merged.read
    if verify:
        document["verified"] = verification(result)
    if as_json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_replay(document)
    return 1 if verify and result.mismatches else 0


async def _replay_one(
    store: SqlEventStore,
    catalogue: Catalogue,
    until_position: int | None,
    until_ts: int | None,
    verify: bool,
    full: bool,
    partitions: int,
) -> ReplayResult:
    console = Console(stderr=True)
    # One consistent point of the history, so a live store's writes meanwhile change
    # neither the events replayed nor the hashes they are checked against.
    async with store.view() as view:
        recorded: dict[int, str] = {}
        if verify:
            recorded = {
                position: state_hash
                for position, state_hash in (await recorded_hashes(view.connection)).items()
                if until_position is None or position <= until_position
            }
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("replay", total=None)

            async def starting(after: int) -> None:
                query = select(func.count()).select_from(events).where(events.c.position > after)
                if until_position is not None:
                    query = query.where(events.c.position <= until_position)
                total = (await view.connection.execute(query)).scalar_one()
                progress.reset(task, total=total)

            return await replay_stored(
                view,
                view.connection,
                catalogue,
                until_position,
                until_ts,
                recorded,
                full=full,
                starting=starting,
                progress=lambda n: progress.advance(task, n),
                partitions=partitions,
            )


async def _replay_merged(
    stores: list[SqlEventStore],
    catalogue: Catalogue,
    until_position: int | None,
    until_ts: int | None,
    verify: bool,
    full: bool,
    partitions: int,
) -> MergedReplay:
    """Every shard's history merged, replayed from every shard's latest checked snapshot put
    together (from position 0 if `full`, with a position cut, or if one is refused); with
    `verify`, each shard replayed on its own against its recorded hashes too (from its
    snapshot unless `full`), their findings added to the merged one's."""
    checks = []
    if verify:
        # A shard's hashes are of its own state; the merged state has none recorded.
        for store in stores:
            checks.append(
                await _replay_one(store, catalogue, None, until_ts, True, full, partitions)
            )
    async with viewing(stores) as views:
        merged = await replay_merged_stored(
            views, catalogue, partitions, until_position, until_ts, full=full
        )
    result = merged.result
    for check in checks:
        result.checked += check.checked
        result.mismatches += check.mismatches
        result.not_comparable += check.not_comparable
    return merged


def _print_replay(document: dict[str, Any]) -> None:
    console = Console()
    books = Table(
        title=f"位置 {document['position']} 的订单簿 books at position {document['position']}"
    )
    for column in ("合约 contract", "买单 bids (元 x 数量 qty)", "卖单 asks (元 x 数量 qty)"):
        books.add_column(column)
    for symbol, book in document["books"].items():
        books.add_row(
            symbol,
            ", ".join(f"{yuan(p)} x {q}" for p, q in book["bids"][:5]) or "-",
            ", ".join(f"{yuan(p)} x {q}" for p, q in book["asks"][:5]) or "-",
        )
    console.print(books)
    accounts = Table(
        title="账户 accounts (资金单位 元; 算力与持仓单位 卡时/核时 capacity and positions in "
        "card-hours, core-hours)"
    )
    for column in (
        "账户 account",
        "可用 available",
        "冻结 held",
        "算力 可用/冻结 capacity avail/held",
        "持仓 positions",
        "挂单 open",
    ):
        accounts.add_column(column)
    for name, entry in document["accounts"].items():
        accounts.add_row(
            name,
            yuan(entry["cash"]["available"]),
            yuan(entry["cash"]["held"]),
            ", ".join(f"{s} {c['available']}/{c['held']}" for s, c in entry["capacity"].items())
            or "-",
            ", ".join(f"{s} {q}" for s, q in entry["positions"].items()) or "-",
            str(len(entry["open_orders"])),
        )
    console.print(accounts)
    if document["programmes"] or document["grants"]:
        vouchers = Table(title="算力券预算 voucher budgets (元)")
        for column in (
            "项目 programme",
            "账户 account",
            "预算/额度 budget/granted",
            "剩余 left",
            "预留 reserved",
            "已付 paid",
        ):
            vouchers.add_column(column)
        for programme_id, programme in document["programmes"].items():
            vouchers.add_row(
                programme_id,
                "-",
                yuan(programme["budget"]),
                yuan(programme["unallocated"]),
                "-",
                "-",
            )
        for grant in document["grants"].values():
            vouchers.add_row(
                grant["programme_id"],
                grant["account_id"],
                yuan(grant["limit"]),
                yuan(grant["unreserved"]),
                yuan(grant["reserved"]),
                yuan(grant["paid"]),
            )
        console.print(vouchers)
    console.print(
        f"已重放 events replayed: {document['events']}   日志时间 log time: "
        f"{cst_iso(document['ts'])} (中国标准时间 China Standard Time)"
    )
    if document.get("shard_snapshots"):
        positions = ", ".join(map(str, document["shard_snapshots"]))
        console.print(
            f"从各分片存储的快照重启 restarted from each shard's stored snapshot (at positions "
            f"{positions}), {document['events_read']} events read (--full replays from position 0)"
        )
    elif document["started_from"]:
        console.print(
            f"从存储的快照重启 restarted from the stored snapshot at position "
            f"{document['started_from']} (--full replays from position 0)"
        )
    console.print(f"状态哈希 state hash: {document['state_hash']}")
    console.print(
        f"历史哈希 (各分片相同) history hash (the same over shards): {document['history_hash']}"
    )
    verified = document.get("verified")
    if verified is not None:
        for mismatch in verified["mismatches"]:
            console.print(
                f"不一致 MISMATCH at {mismatch['position']}: recorded {mismatch['recorded']}, "
                f"replayed {mismatch['replayed']}"
            )
        console.print(f"核对 verified: {verified['summary']}")


async def run_audit(
    settings: Settings,
    as_json: bool,
    catalogue: Catalogue | None = None,
    scope: str = "all",
    shard: int | None = None,
) -> int:
    """Audit the whole history (or, with scope "ledger", the journal); exit status 1 if
    anything is unaccounted for. With settlement in shards: one shard (`shard`), or each
    shard and then every shard's history merged, the last report the whole history's."""
    try:
        stores = await _open_shards(settings, shard)
    except ValueError as error:
        print(f"cx audit: {error}", file=sys.stderr)
        return 2
    catalogue = catalogue or settings.catalogue()
    partitions = settings.market_partitions
    sharded = len(settings.shard_urls()) > 1
    reports: list[tuple[str, AuditReport]] = []
    try:
        if await rules_refused("cx audit", stores, catalogue):
            return 2
        if scope == "ledger":
            ledgers = await audit_ledger_shards(stores, catalogue, partitions)
            for k, report in enumerate(ledgers):
                reports.append((_shard_name(shard if shard is not None else k, sharded), report))
        elif not sharded:
            reports.append(("", await audit(stores[0], catalogue, partitions)))
        elif shard is not None:
            report = await audit_shard(stores[0], catalogue, partitions)
            reports.append((_shard_name(shard, sharded), report))
        else:
            each, whole = await audit_shards(stores, catalogue, partitions)
            reports += [(_shard_name(k, sharded), report) for k, report in enumerate(each)]
            reports.append(("all shards", whole))
    except PartitionsDiffer as error:
        print(f"cx audit: 分区数不符 partitions differ: {error}", file=sys.stderr)
        return 2
    finally:
        for store in stores:
            await store.close()
    if as_json:
        documents = [_audit_document(name, report) for name, report in reports]
        document = documents[-1] if not sharded else {"shards": documents}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for name, report in reports:
            _print_audit(name, report, scope)
    return 1 if any(report.discrepancies for _, report in reports) else 0


def _shard_name(shard: int, sharded: bool) -> str:
    return f"shard {shard}" if sharded else ""


def _audit_document(name: str, report: AuditReport) -> dict[str, Any]:
    document: dict[str, Any] = {"shard": name} if name else {}
    return document | {
        "position": report.position,
        "events": report.events,
        "trades": report.trades,
        "orders": report.orders,
        "checkpoints": report.checkpoints,
        "state_hash": report.state_hash,
        "history_hash": report.history_hash,
        "discrepancies": [
            {"kind": d.kind, "message": d.message, "positions": list(d.positions)}
            for d in report.discrepancies
        ],
    }


def _print_audit(name: str, report: AuditReport, scope: str) -> None:
    """An audit's report for people, Chinese first (`--json` keeps the English keys)."""
    prefix = f"{_shard_words(name)}: " if name else ""
    for discrepancy in report.discrepancies:
        print(f"{prefix}差异 discrepancy {_discrepancy_words(discrepancy)}")
    verdict = (
        "无差异 no discrepancies"
        if not report.discrepancies
        else f"{len(report.discrepancies)} 处差异 discrepancies"
    )
    if scope == "ledger":
        print(
            f"{prefix}已审计 audited {report.events} 条分录 journal entries, 至位置 up to "
            f"position {report.position}: {verdict}"
        )
    else:
        print(
            f"{prefix}已审计 audited {report.events} 个事件 events, 至位置 up to position "
            f"{report.position}, {report.orders} 笔订单 orders, {report.trades} 笔成交 trades, "
            f"{report.checkpoints} 个检查点 checkpoints: {verdict}"
        )


DISCREPANCY_WORDS = {
    "voucher-overgranted": "算力券发放超出预算",
    "voucher-reservation": "算力券预留超出补贴比例",
    "voucher-overdrawn": "算力券预留超出额度",
    "voucher-budget": "算力券预算不符",
    "voucher-grant": "算力券额度不符",
    "checkpoint": "状态哈希不符",
    "trade-settled-twice": "成交重复记录",
    "strip-cascaded-twice": "周期合约重复拆分",
    "trade-without-order": "成交无对应订单",
    "overfilled": "订单超量成交",
    "reduce-mismatch": "自成交减量不符",
    "cancel-mismatch": "撤单余量不符",
    "order-unaccounted": "订单余量不符",
    "resale-beyond-holding": "转售超出持有",
    "position-uncovered": "持仓无交付对应",
    "hold-outlives-order": "冻结超出挂单",
    "held-entitlement": "转售冻结不符",
    "held-cash": "冻结资金不符",
    "held-capacity": "冻结算力不符",
    "cash-not-conserved": "资金不守恒",
    "capacity-not-conserved": "算力不守恒",
    "projection": "投影表不符",
    "unbalanced-entry": "分录借贷不平",
    "trial-balance": "试算不平衡",
    "journal-incomplete": "分录不全",
}
"""Each kind of discrepancy an audit finds (settlement/audit.py), in Chinese."""


def _discrepancy_words(discrepancy: Discrepancy) -> str:
    """A discrepancy for people: its kind in Chinese, then the kind and what was found, its
    amounts in 元 (`--json` keeps the message in fen)."""
    zh = DISCREPANCY_WORDS.get(discrepancy.kind)
    where = ", ".join(map(str, discrepancy.positions))
    return (
        (f"{zh} " if zh else "")
        + f"[{discrepancy.kind}] {in_yuan(discrepancy.message)}"
        + (f" (事件位置 events at {where})" if where else "")
    )


def _shard_words(name: str) -> str:
    """A report's shard name (`shard K`, `all shards`, as the JSON keeps it) in words."""
    if name == "all shards":
        return "全部分片 all shards"
    return f"分片 {name.removeprefix('shard ')} {name}"


async def run_history(
    settings: Settings,
    contract: str | None,
    account: str | None,
    order: str | None,
    since: str | None,
    until: str | None,
    output_format: str,
    out: TextIO,
) -> int:
    """Write the matching events as JSON lines or CSV; returns how many were written. With
    settlement in shards: every shard's, in the merged history's order (`cx replay`'s), each
    labelled with its shard."""
    since_ts = None if since is None else _time_ms(since)
    until_ts = None if until is None else _time_ms(until)
    stores = await _open_shards(settings, None)
    sharded = len(stores) > 1
    written = 0
    try:
        if output_format == "csv":
            out.write(export_header(sharded))
        if sharded:
            condition = history_condition(contract, account, order, since_ts, until_ts)
            engines = [store.engine for store in stores]
            async for found in read_merged(engines, [0] * len(engines), condition):
                out.write(export_line(found.event, output_format, found.shard))
                written += 1
            return written
        query = history_query(contract, account, order, since_ts, until_ts)
        async with stores[0].engine.connect() as connection:
            result = await connection.stream(query.execution_options(yield_per=2000))
            async for row in result:
                out.write(export_line(row, output_format))
                written += 1
    finally:
        for store in stores:
            await store.close()
    return written


def _time_ms(value: str) -> int:
    """Milliseconds since the epoch of an ISO time with offset (or a number of ms)."""
    if value.isdigit():
        return int(value)
    return parse_time(value)


async def run_auction_audit(settings: Settings, day: str, as_json: bool) -> int:
    """Re-solve the stored day-ahead auction of `day` and check it; exit status 1 if anything
    is amiss."""
    from settlement.auction_audit import audit_auction

    store = await _open(settings)
    catalogue = settings.catalogue()
    try:
        if await rules_refused("cx audit", [store], catalogue):
            return 2
        report = await audit_auction(store, catalogue, day, settings.market_partitions)
    finally:
        await store.close()
    if as_json:
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for discrepancy in report.discrepancies:
            print(f"差异 discrepancy {in_yuan(discrepancy)}")
        verdict = (
            "无差异 no discrepancies"
            if not report.discrepancies
            else f"{len(report.discrepancies)} 处差异 discrepancies"
        )
        print(
            f"日前竞价 day-ahead auction {day}: {report.orders} 笔申报 orders, 社会福利 welfare "
            f"{yuan(report.welfare)} 元 ({report.status}), 重解 re-solved "
            f"{yuan(report.resolved_welfare)} 元, LP 上界 bound "
            f"{yuan(round(report.lp_bound))} 元: {verdict}"
        )
    return 1 if report.discrepancies else 0

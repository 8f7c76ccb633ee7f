"""`cx`: the exchange's command line.

Each command imports what it runs when it runs: a stage, `cx init` or `cx keys` load neither
the simulations, the packages of the `sim` extra (numpy, scipy) nor matplotlib.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import getpass
import importlib.util
import json
import logging
import os
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.keys import Role
from cx.runtime import STAGES, RulesChanged, Stage
from cx.settings import Settings
from exchange.domain.catalogue import CHINA_STANDARD_TIME, MarketRules

if TYPE_CHECKING:
    from api.marketdata import MarketData
    from cx.runtime import ExchangeRuntime
    from settlement.pipeline_status import PipelineStatus
    from settlement.sql_store import SqlEventStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cx", description="An exchange for standardized compute contracts."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run every stage, the API and a simulated market in one process, with a live board",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the simulated market")
    demo.add_argument(
        "--rate", type=float, default=8.0, help="orders per second the simulated market sends"
    )
    commands.add_parser("serve", help="run every stage and the API in one process")
    run = commands.add_parser("run", help="run one stage (scale out by running several)")
    run.add_argument("stage", choices=STAGES)
    run.add_argument(
        "--shard",
        type=int,
        help="settlement: settle only this shard (0 the home database; CX_SETTLEMENT_SHARDS "
        "names the others); default: every shard",
    )
    commands.add_parser(
        "init",
        help="create the topics and migrate the database to this release's schema, then exit",
    )
    shards = commands.add_parser(
        "shards", help="settlement shards: which partitions and families each settles"
    )
    shard_commands = shards.add_subparsers(dest="shards_command", required=True)
    shard_commands.add_parser("list", help="each shard's partitions, families and events")
    move = shard_commands.add_parser(
        "move",
        help="move partitions (and their families) to the shards of a new CX_SETTLEMENT_SHARDS "
        "(offline: settlement must not be running; run it again if it was cut short)",
    )
    move.add_argument(
        "--to",
        required=True,
        metavar="URLS",
        help="the new CX_SETTLEMENT_SHARDS: space-separated database URLs of the shards after "
        "the home shard ('' for the home shard alone)",
    )
    projections = commands.add_parser(
        "projections", help="the tables settlement projects from the events"
    )
    projection_commands = projections.add_subparsers(dest="projections_command", required=True)
    projection_commands.add_parser(
        "rebuild",
        help="empty every projection table and fold all the events into it again "
        "(offline: settlement must not be running)",
    )
    replay = commands.add_parser(
        "replay", help="rebuild books, balances, positions and holds at a point from the events"
    )
    replay.add_argument(
        "--until", help="a position (e.g. 1200) or an ISO time with offset (default: the end)"
    )
    replay.add_argument("--contract", help="show only this contract")
    replay.add_argument("--account", help="show only this account")
    replay.add_argument("--json", action="store_true", help="print JSON instead of tables")
    replay.add_argument(
        "--verify", action="store_true", help="check the hashes the live system recorded"
    )
    replay.add_argument(
        "--full",
        action="store_true",
        help="replay from position 0, not from settlement's latest stored snapshot",
    )
    replay.add_argument(
        "--shard",
        type=int,
        help="replay only this settlement shard's history (default: every shard's, merged)",
    )
    audit = commands.add_parser(
        "audit", help="check the whole history from the event store; exit 1 on a discrepancy"
    )
    audit.add_argument(
        "scope",
        nargs="?",
        choices=["all", "ledger", "auction"],
        default="all",
        help="ledger: recompute every balance from the journal's entries and check it; "
        "auction NAME: re-solve the day-ahead auction of a delivery date (YYYY-MM-DD, CST), or "
        "the intraday auction at a CST time (YYYY-MM-DDTHH:MM), and check it",
    )
    audit.add_argument(
        "date",
        nargs="?",
        help="auction: the delivery date (YYYY-MM-DD, CST) or the intraday auction's time "
        "(YYYY-MM-DDTHH:MM, CST)",
    )
    audit.add_argument("--json", action="store_true", help="print JSON")
    audit.add_argument(
        "--shard",
        type=int,
        help="audit only this settlement shard (default: each shard, then all of them merged)",
    )
    exported = commands.add_parser(
        "history", help="export stored events as JSON lines or CSV, filtered"
    )
    exported.add_argument("--contract", help="events of this contract")
    exported.add_argument("--account", help="events of this account (either side of a trade)")
    exported.add_argument("--order", help="events of this order")
    exported.add_argument("--since", help="from this log time (ISO with offset, or ms)")
    exported.add_argument("--until", help="up to this log time (ISO with offset, or ms)")
    exported.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    dead = commands.add_parser(
        "deadletters", help="list records a stage set aside, or append one again to its source"
    )
    dead_commands = dead.add_subparsers(dest="deadletters_command", required=True)
    dead_list = dead_commands.add_parser("list", help="every dead letter with its reason")
    dead_list.add_argument("--json", action="store_true", help="print JSON lines")
    dead_replay = dead_commands.add_parser("replay", help="append a dead letter to its source")
    dead_replay.add_argument("source", help="topic:partition:offset, as `list` shows it")
    dead_aside = dead_commands.add_parser(
        "set-aside",
        help="set aside the event a stalled partition stopped at: settlement sends it to the "
        "dead-letter topic and goes on after it",
    )
    dead_aside.add_argument("source", help="topic:partition:offset, as `cx status` shows it")
    dead_aside.add_argument("--reason", required=True, help="why, recorded with the stall")
    status = commands.add_parser(
        "status",
        help="every stage's progress per partition and every stalled partition; exit 1 if "
        "any is stalled",
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--observe",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="read again after this long and count as stalled a partition whose lag has not "
        "moved meanwhile (without it: read twice a second apart, and a partition is stalled "
        "whose lag has not moved for CX_STALL_SECONDS since its next record was logged)",
    )
    keys_parser = commands.add_parser(
        "keys", help="API keys in the configured event store (DATABASE_URL or the embedded one)"
    )
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("--account", required=True, help="the participant account id")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--label", help="a note to tell keys apart")
    listing = key_commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--account", help="only this account's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    report = commands.add_parser("report", help="reports from the ledger")
    report_commands = report.add_subparsers(dest="report", required=True)
    programme = report_commands.add_parser(
        "programme",
        help="a voucher programme's budget, usage and burn-down (CSV and PNG) and its report "
        "for the city (PDF)",
    )
    programme.add_argument("programme_id")
    programme.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="folder for PROGRAMME.csv, PROGRAMME.png and PROGRAMME.pdf",
    )
    statement = report_commands.add_parser(
        "statement", help="an account's statement for a month in China Standard Time (JSON)"
    )
    statement.add_argument("account_id")
    statement.add_argument("--month", required=True, help="YYYY-MM, China Standard Time")
    invoice = report_commands.add_parser(
        "invoice", help="a buy order's statement and VAT invoice data (JSON, CSV or PDF)"
    )
    invoice.add_argument("order_id")
    invoice.add_argument("--format", choices=["json", "csv", "pdf"], default="json")
    invoice.add_argument("--out", type=Path, help="file to write (default: stdout; PDF needs it)")
    from cx import dayahead, metering, vouchers

    vouchers.add_parser(commands)
    dayahead.add_parser(commands)
    metering.add_parser(commands)
    bench = commands.add_parser(
        "bench",
        help="run a benchmark and print its figures as one JSON line (e2e and replay need "
        "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL)",
    )
    bench.add_argument(
        "name",
        choices=[
            "matching",
            "stages",
            "e2e",
            "replay",
            "settle",
            "api",
            "fanout",
            "auction",
            "horizon",
        ],
    )
    bench.add_argument(
        "--commands",
        type=int,
        help="commands (matching: 1,000,000; e2e and stages: 20,000) or events (replay: 200,000; "
        "settle: 40,000)",
    )
    bench.add_argument("--seed", type=int, default=1, help="seed of the generated flow")
    bench.add_argument(
        "--messages",
        type=int,
        default=1_000_000,
        help="matching: messages of each flow against the plain book",
    )
    bench.add_argument(
        "--resting",
        type=int,
        default=5_000,
        help="matching: orders resting in the plain-book touch flow",
    )
    bench.add_argument(
        "--deep-resting",
        type=int,
        default=200_000,
        help="matching: orders resting in the plain-book deep flow",
    )
    bench.add_argument("--rate", type=int, default=200, help="e2e: offered load below saturation")
    bench.add_argument("--matching-processes", type=int, default=1, help="e2e: matching processes")
    bench.add_argument(
        "--shards",
        type=int,
        help="e2e: settle one family-spread history into 1 and into this many settlement "
        "shards, one line each (shards after the first on the servers CX_SETTLEMENT_SHARDS "
        "names; default 4,000 commands)",
    )
    bench.add_argument("--clients", type=int, default=8, help="api: concurrent clients")
    bench.add_argument("--seconds", type=float, default=10.0, help="api: seconds of load")
    bench.add_argument("--subscribers", type=int, default=1000, help="fanout: subscribers")
    bench.add_argument("--updates", type=int, default=50, help="fanout: book updates")
    bench.add_argument("--updates-per-s", type=float, default=10.0, help="fanout: update rate")
    bench.add_argument("--orders", type=int, default=10_000, help="auction: orders of the day")
    bench.add_argument(
        "--node-limit", type=int, help="auction: branch-and-bound nodes a programme (2,000)"
    )
    bench.add_argument(
        "--families",
        choices=["simulation", "catalogue"],
        default="simulation",
        help="horizon: the simulation's 14 rolled families, or every family of the catalogue",
    )
    bench.add_argument(
        "--replay-days", type=int, default=2, help="horizon: days of the replayed history"
    )
    simulation = commands.add_parser(
        "simulate",
        help="run an agent-based market through the exchange on a simulated clock and write a "
        "report folder (Markdown and plots)",
    )
    simulation.add_argument(
        "--scenario",
        default="baseline",
        help=f"a shipped scenario ({', '.join(_shipped_scenarios())}) or a .toml file",
    )
    simulation.add_argument("--days", type=int, help="days to simulate (default: the scenario's)")
    simulation.add_argument("--seed", type=int, default=1, help="seed of every random draw")
    simulation.add_argument(
        "--out", type=Path, help="report folder (default: simulation-reports/SCENARIO)"
    )
    market = simulation.add_mutually_exclusive_group()
    market.add_argument(
        "--day-ahead",
        action="store_true",
        help="run the exchange with a day-ahead auction (gate 12:00 CST the day before "
        "delivery) that providers and buyers use before continuous trading",
    )
    market.add_argument(
        "--intraday",
        action="store_true",
        help="run the exchange with the day-ahead auction and an intraday auction every hour "
        "(CX_INTRADAY_AUCTION_HOURS=1), both used by providers and buyers",
    )
    market.add_argument(
        "--compare",
        action="store_true",
        help="run the scenario three times with the same seed, continuous trading only, with "
        "the day-ahead auction, and with intraday auctions too, and write every report and "
        "their comparison",
    )
    return parser


def _shipped_scenarios() -> list[str]:
    """The names of the scenarios in `simulations/scenarios/`, found without importing
    simulations (see `simulations.scenario.available`)."""
    found = importlib.util.find_spec("simulations")
    if found is None or not found.submodule_search_locations:
        return []
    folder = Path(next(iter(found.submodule_search_locations))) / "scenarios"
    return sorted(path.stem for path in folder.glob("*.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cx`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.command in {"serve", "run"}:
        # A deployment's operators want the exchange's own notices (partitions taken over,
        # snapshots restored); the libraries' stay at warnings. The demo keeps its board clean.
        for name in ("cx", "exchange", "settlement", "api"):
            logging.getLogger(name).setLevel(logging.INFO)
    settings = Settings()
    try:
        code = _dispatch(args, settings)
        # What is still buffered goes now, so a reader gone away shows here and not as a
        # traceback when the interpreter flushes at exit.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:
        return 130
    except UsageError as error:
        print(f"cx {args.command}: {error}", file=sys.stderr)
        return 2
    except RulesChanged as error:
        print(f"cx {args.command}: 规则不符 rules differ: {error}", file=sys.stderr)
        return 2


CLOSED_PIPE_EXIT = 128 + 13
"""The exit status of a command whose reader closed its output (`cx history | head`): a
shell's for a process SIGPIPE ended (128 + SIGPIPE)."""


def _stdout_closed() -> int:
    """Stop quietly once stdout's reader has gone: point stdout at /dev/null so the
    interpreter's flush at exit has nowhere to fail either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return CLOSED_PIPE_EXIT


MAX_SQL_INT = 2**63 - 1
"""The largest position or log time a query may name (a BIGINT)."""


def _is_auction_name(text: str) -> bool:
    """Whether `text` names an auction: a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM."""
    try:
        MarketRules().auction_gate(text)
    except ValueError:
        return False
    return True


class UsageError(Exception):
    """An argument the command cannot use; `cx` says why and exits with 2."""


SIM_EXTRA = ("numpy", "scipy")
"""The packages of the `sim` extra: only `cx simulate` needs them."""


@contextmanager
def _sim_extra() -> Iterator[None]:
    """Say how to install the `sim` extra when the command needs one of its packages."""
    try:
        yield
    except ModuleNotFoundError as missing:
        package = (missing.name or "").split(".")[0]
        if package not in SIM_EXTRA:
            raise
        raise UsageError(
            f"needs {package}, of the sim extra: pip install 'compute-exchange[sim]'"
        ) from None


# What digits mean in an option of a log time: a position (`cx replay`), or milliseconds
# since the epoch (`cx history`); Chinese, then English.
POSITION = ("一个位置(数字)", "a position (digits)")
MILLISECONDS = ("毫秒数", "milliseconds since the epoch")


def _log_time(value: str | None, option: str, digits: tuple[str, str]) -> None:
    """Refuse a --since/--until that is neither a position, milliseconds nor an ISO time."""
    if value is None:
        return
    from settlement.replay import parse_until

    try:
        position, ts = parse_until(value)
    except ValueError as error:
        raise UsageError(f"参数 {option}: {error}; 或{digits[0]} or {digits[1]}") from None
    if max(position or 0, ts or 0) > MAX_SQL_INT:
        raise UsageError(f"参数 {option} {value[:80]!r} 超出范围 is out of range")


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """Run the chosen command; its exit code."""
    if args.command == "demo":
        asyncio.run(_demo(settings, args.seed, args.rate))
    elif args.command == "serve":
        from cx.node import serve

        asyncio.run(serve(settings, STAGES, quiet_gc=True))
    elif args.command == "run":
        from cx.node import serve

        stage: Stage = args.stage
        if args.shard is not None and stage != "settlement":
            raise UsageError("--shard chooses a settlement shard: cx run settlement --shard K")
        shards = len(settings.shard_urls())
        if args.shard is not None and not 0 <= args.shard < shards:
            raise UsageError(
                f"there is no settlement shard {args.shard}: CX_SETTLEMENT_SHARDS gives {shards} "
                f"(0 to {shards - 1}, 0 the home database)"
            )
        asyncio.run(serve(settings, (stage,), quiet_gc=True, shard=args.shard))
    elif args.command == "init":
        asyncio.run(_init(settings))
    elif args.command == "projections":
        return asyncio.run(_rebuild_projections(settings))
    elif args.command == "shards":
        from cx import shards as shard_commands

        if args.shards_command == "move":
            _refuse_beside_embedded_exchange(settings, "move partitions")
            return asyncio.run(shard_commands.move(settings, args.to.split()))
        return asyncio.run(shard_commands.show(settings))
    elif args.command == "replay":
        from cx import history
        from cx.collector import quiet_collector

        _log_time(args.until, "--until", POSITION)
        quiet_collector()
        return asyncio.run(
            history.run_replay(
                settings,
                args.until,
                args.contract,
                args.account,
                args.json,
                args.verify,
                full=args.full,
                shard=args.shard,
            )
        )
    elif args.command == "keys":
        return asyncio.run(_keys(settings, args))
    elif args.command == "audit":
        from cx import history

        if args.scope == "auction":
            if not args.date or not _is_auction_name(args.date):
                raise UsageError(
                    "cx audit auction needs the auction's date, YYYY-MM-DD (or an intraday "
                    "auction's time, YYYY-MM-DDTHH:MM)"
                )
            return asyncio.run(history.run_auction_audit(settings, args.date, args.json))
        return asyncio.run(
            history.run_audit(settings, args.json, scope=args.scope, shard=args.shard)
        )
    elif args.command == "deadletters":
        if args.deadletters_command == "set-aside":
            return asyncio.run(_set_aside(settings, args.source, args.reason))
        return asyncio.run(_deadletters(settings, args))
    elif args.command == "status":
        if args.observe < 0:
            raise UsageError("--observe must not be negative")
        return asyncio.run(_status(settings, args.json, args.observe))
    elif args.command == "history":
        from cx import history

        _log_time(args.since, "--since", MILLISECONDS)
        _log_time(args.until, "--until", MILLISECONDS)
        asyncio.run(
            history.run_history(
                settings,
                args.contract,
                args.account,
                args.order,
                args.since,
                args.until,
                args.format,
                sys.stdout,
            )
        )
    elif args.command == "report" and args.report == "statement":
        return _statement_report(settings, args.account_id, args.month)
    elif args.command == "report" and args.report == "invoice":
        return _invoice_report(settings, args.order_id, args.format, args.out)
    elif args.command == "report":
        return _programme_report(settings, args.programme_id, args.out)
    elif args.command == "vouchers":
        from cx import vouchers

        return asyncio.run(vouchers.run(settings, args))
    elif args.command == "meter":
        from cx import metering

        return asyncio.run(metering.run(settings, args))
    elif args.command == "day-ahead":
        from cx import dayahead

        return asyncio.run(dayahead.run(settings, args))
    elif args.command == "bench":
        return _bench(settings, args)
    elif args.command == "simulate":
        with _sim_extra():
            from simulations.run import compare, prepare, simulate
        from cx.simulation import open_simulated_exchange
        from simulations.scenario import ScenarioError, load

        try:
            load(args.scenario)
        except ScenarioError as error:
            raise UsageError(str(error)) from None
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"{args.scenario} is not valid TOML: {error}") from None
        out = args.out or Path("simulation-reports") / (
            Path(args.scenario).stem
            + (
                "-compare"
                if args.compare
                else "-intraday"
                if args.intraday
                else "-dayahead"
                if args.day_ahead
                else ""
            )
        )
        prepare(out)
        if args.compare:
            asyncio.run(compare(args.scenario, args.days, args.seed, out, open_simulated_exchange))
        else:
            asyncio.run(
                simulate(
                    args.scenario,
                    args.days,
                    args.seed,
                    out,
                    open_simulated_exchange,
                    day_ahead=args.day_ahead,
                    intraday=args.intraday,
                )
            )
    return 0


async def _demo(settings: Settings, seed: int, rate: float) -> None:
    from cx.board import show_board
    from cx.node import serve
    from simulations.demo_market import DemoMarket

    where = (
        "embedded log and SQLite under " + str(settings.data_dir.resolve())
        if settings.embedded_log and not settings.database_url
        else "configured Kafka / PostgreSQL"
    )
    print(f"cx demo: {where}; API on http://{settings.api_host}:{settings.api_port}", flush=True)
    await _demo_keys(settings)

    async def market(runtime: ExchangeRuntime, _: MarketData | None, stop: asyncio.Event) -> None:
        await DemoMarket(runtime, seed, rate).run(stop)

    await serve(settings, STAGES, extras=(market, show_board))
    print("cx demo: stopped cleanly; run it again to resume from the stored history", flush=True)


def _programme_report(settings: Settings, programme_id: str, out: Path) -> int:
    from settlement import documents, reports

    found = asyncio.run(_read_programme(settings, programme_id))
    if found is None:
        print(f"cx report: no programme {programme_id!r}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    table = reports.report_csv(found)
    (out / f"{programme_id}.csv").write_text(table)
    reports.burn_down_png(found, out / f"{programme_id}.png")
    (out / f"{programme_id}.pdf").write_bytes(documents.programme_pdf(found))
    sys.stdout.write(table)
    print(f"cx report: wrote {out / programme_id}.csv, .png and .pdf", file=sys.stderr)
    return 0


def _statement_report(settings: Settings, account_id: str, month: str) -> int:
    from api import queries
    from settlement import statements

    try:
        statements.month_bounds(month)
    except statements.StatementError as error:
        print(f"cx report: {error}", file=sys.stderr)
        return 2

    async def read(engines: list[Any]) -> dict[str, Any] | None:
        # An account no shard settled anything for: a typo, not a zero statement.
        if all([await queries.account_summary(e, account_id) is None for e in engines]):
            return None
        return await statements.account_statement(engines, account_id, month)

    found = asyncio.run(_read_ledger(settings, read))
    if found is None:
        print(
            f"cx report: 账户 {account_id!r} 无结算记录 account has no settled history",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(found, ensure_ascii=False, indent=2))
    return 0


def _invoice_report(settings: Settings, order_id: str, kind: str, out: Path | None) -> int:
    from settlement import documents, statements

    if kind == "pdf" and out is None:
        print("cx report: a PDF invoice needs --out FILE", file=sys.stderr)
        return 2

    async def read(engines: list[Any]) -> dict[str, Any] | None:
        # The order is in the shard of its family, the enterprises in the registry's.
        return await statements.order_invoice(engines, order_id)

    try:
        invoice = asyncio.run(_read_ledger(settings, read))
    except statements.StatementError as error:
        print(f"cx report: {error}", file=sys.stderr)
        return 1
    if invoice is None:
        print(f"cx report: no settled order {order_id!r}", file=sys.stderr)
        return 1
    if kind == "pdf":
        body: bytes = documents.invoice_pdf(invoice)
    elif kind == "csv":
        body = statements.invoice_csv(invoice).encode()
    else:
        body = (json.dumps(invoice, ensure_ascii=False, indent=2) + "\n").encode()
    if out is None:
        sys.stdout.buffer.write(body)
    else:
        out.write_bytes(body)
        print(f"cx report: wrote {out}", file=sys.stderr)
    return 0


async def _read_ledger(settings: Settings, read: Any) -> Any:
    """What `read` finds given the engines of every settlement shard (the home shard's first)."""
    from settlement.sql_store import open_event_store

    stores = [_open_store(settings), *map(open_event_store, settings.shard_urls()[1:])]
    try:
        for store in stores:
            await _migrate(store)
        return await read([store.engine for store in stores])
    finally:
        for store in stores:
            await store.close()


async def _read_programme(settings: Settings, programme_id: str) -> dict[str, Any] | None:
    from settlement import reports

    async def read(engines: list[Any]) -> dict[str, Any] | None:
        return await reports.programme_report(engines, programme_id)

    found: dict[str, Any] | None = await _read_ledger(settings, read)
    return found


DEMO_KEYS = (
    ("sme-hangzhou-1", Role.BUYER),
    ("provider-gz-1", Role.PROVIDER),
    ("operator", Role.OPERATOR),
)


async def _migrate(store: SqlEventStore) -> None:
    """Bring the store's database to this release's schema through the migrations."""
    from cx.migrations import upgrade_to_head

    await store.initialise(upgrade_to_head)


def _open_store(settings: Settings) -> SqlEventStore:
    from settlement.sql_store import open_event_store

    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_event_store(settings.event_store_url())


async def _demo_keys(settings: Settings) -> None:
    """On the first start, make and print API keys for demo participants (shown this once)."""
    from api import keys

    store = _open_store(settings)
    try:
        await _migrate(store)
        if await keys.list_keys(store.engine, include_revoked=True):
            print(
                "cx demo: API keys were printed on the first start; make another with "
                "`cx keys create --account sme-hangzhou-1 --role buyer`",
                flush=True,
            )
            return
        print("cx demo: API keys (shown only now; keep them):", flush=True)
        for account, role in DEMO_KEYS:
            created = await keys.create_key(store.engine, account, role, label="cx demo")
            print(f"  {role.value:<9} {account:<15} {created.key}", flush=True)
        print(
            f"  the supermarket page: http://{settings.api_host}:{settings.api_port}/",
            flush=True,
        )
    finally:
        await store.close()


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter, ValidationError

    from api import keys
    from exchange.domain.messages import Identifier

    store = _open_store(settings)
    try:
        await _migrate(store)
        if args.keys_command == "create":
            try:
                TypeAdapter(Identifier).validate_python(args.account)
            except ValidationError:
                raise UsageError(
                    f"--account {args.account[:80]!r}: an account id is 1 to 64 of "
                    "A-Z a-z 0-9 _ . : -"
                ) from None
            try:
                created = await keys.create_key(
                    store.engine, args.account, Role(args.role), args.label
                )
            except (keys.RoleConflict, keys.ReservedAccount) as refused:
                print(f"cx keys: {refused}", file=sys.stderr)
                return 1
            print(created.key)
            print(
                f"key id {created.info.key_id} for {args.account} ({args.role}): "
                "shown only now; send it as `Authorization: Bearer <key>`",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            from api.services import cst

            # China Standard Time, as the operator API shows keys; the store keeps UTC.
            for info in await keys.list_keys(store.engine, args.account, args.all):
                revoked = (
                    f" 已吊销 revoked {cst(info.revoked_at, 'minutes')}" if info.revoked_at else ""
                )
                print(
                    f"{info.key_id}  {info.role.value:<15} {info.account_id:<20} "
                    f"{cst(info.created_at, 'minutes')} {info.label or ''}{revoked}"
                )
        else:
            revoked_key = await keys.revoke_key(store.engine, args.key_id)
            if revoked_key is None:
                print(f"cx keys: there is no key {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {revoked_key.key_id} of {revoked_key.account_id}")
        return 0
    finally:
        await store.close()


async def _deadletters(settings: Settings, args: argparse.Namespace) -> int:
    from cx.runtime import ExchangeRuntime
    from exchange.deadletters import read_dead_letters, replay_dead_letter

    runtime = await ExchangeRuntime.open(settings, market_rules=False)
    try:
        letters = await read_dead_letters(runtime.log, runtime.topics.deadletters)
        if args.deadletters_command == "list":
            for letter in letters:
                if args.json:
                    print(
                        json.dumps(
                            {
                                "source": letter.source,
                                "stage": letter.stage,
                                "reason": letter.reason,
                                "ts": letter.ts,
                                "value": letter.value.decode(errors="replace"),
                            }
                        )
                    )
                else:
                    print(f"{letter.source}  {letter.stage}  {letter.reason.splitlines()[0]}")
            return 0
        chosen = [letter for letter in letters if letter.source == args.source]
        if not chosen:
            print(f"cx deadletters: no dead letter from {args.source}", file=sys.stderr)
            return 1
        record = await replay_dead_letter(runtime.log, chosen[0])
        print(f"appended again as {record.topic}:{record.partition}:{record.offset}")
        return 0
    finally:
        await runtime.close()


def _refuse_beside_embedded_exchange(settings: Settings, what: str) -> None:
    asyncio.run(_refuse_beside_embedded(settings, what))


async def _refuse_beside_embedded(settings: Settings, what: str) -> None:
    """The embedded exchange holds its log's lock while it runs: refuse to change its store
    beside it."""
    from exchange.adapters.inprocess_log import InProcessLog
    from exchange.log import LogError

    if settings.kafka_bootstrap_servers:
        return
    try:
        await InProcessLog(settings.data_dir / "log").close()
    except LogError:
        raise UsageError(
            f"an exchange is running on {settings.data_dir}: stop it, then {what}"
        ) from None


async def _rebuild_projections(settings: Settings) -> int:
    """Rebuild every projection table from the events: run with settlement stopped."""
    from cx.history import rules_refused
    from settlement import projections
    from settlement.sql_store import open_event_store

    await _refuse_beside_embedded(settings, "rebuild")
    catalogue = settings.catalogue()
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Each settlement shard's tables from its own events.
    for shard, url in enumerate(settings.shard_urls()):
        store = open_event_store(url)
        try:
            await _migrate(store)
            if await rules_refused("cx projections rebuild", [store], catalogue):
                return 2
            folded = await projections.rebuild(store, catalogue, settings.market_partitions)
        finally:
            await store.close()
        where = "" if len(settings.shard_urls()) == 1 else f" of settlement shard {shard}"
        print(f"rebuilt the projection tables{where} from {folded} events")
    return 0


async def _set_aside(settings: Settings, source: str, reason: str) -> int:
    """Mark a stall's event to be set aside; only the event store is needed (the embedded log
    belongs to the running exchange), and settlement carries it out."""
    from settlement import stalled
    from settlement.sql_store import open_event_store

    stall = None
    # The stall is in the store of the settlement shard that stopped there.
    for url in settings.shard_urls():
        store = (
            _open_store(settings) if url == settings.event_store_url() else open_event_store(url)
        )
        try:
            await _migrate(store)
            try:
                stall = await stalled.set_aside(
                    store.engine, source, f"cx:{getpass.getuser()}", reason
                )
            except ValueError as error:
                raise UsageError(str(error)) from None
        finally:
            await store.close()
        if stall is not None:
            break
    if stall is None:
        print(f"cx deadletters: no stage is stalled at {source}", file=sys.stderr)
        return 1
    print(
        f"{stall.stage} will set {stall.source} ({stall.event_type} {stall.event_id}) aside "
        "to the dead-letter topic and go on after it"
    )
    return 0


MOVE_CHECK_S = 1.0
"""How far apart `cx status` reads twice when not told to observe longer."""


async def _status(settings: Settings, as_json: bool, observe: float) -> int:
    """Print every stage's progress and every stall; 1 if anything is stalled."""
    from exchange.adapters.kafka_log import KafkaLog
    from exchange.pipeline import Topics
    from settlement.pipeline_status import (
        DirectoryOffsets,
        LogOffsets,
        OffsetSource,
        StatusMonitor,
    )

    store = _open_store(settings)
    command_log = (
        KafkaLog(settings.kafka_bootstrap_servers) if settings.kafka_bootstrap_servers else None
    )
    offsets: OffsetSource = (
        DirectoryOffsets(settings.data_dir / "log")
        if command_log is None
        else LogOffsets(command_log)
    )
    topics = Topics.named(
        settings.topic_prefix, settings.command_partitions, settings.market_partitions
    )
    from settlement.sql_store import open_event_store

    shards = [store, *(open_event_store(url) for url in settings.shard_urls()[1:])]
    monitor = StatusMonitor(
        offsets, topics, store, observe or settings.stall_seconds, cache_s=0.0, shards=shards
    )
    try:
        for shard in shards:
            await _migrate(shard)
        status = await monitor.status()
        # A second reading tells a stage that moves from one that stands: the first knows
        # only how long the record at each offset has waited.
        await asyncio.sleep(observe or MOVE_CHECK_S)
        status = await monitor.status()
    finally:
        await monitor.close()
        if command_log is not None:
            await command_log.close()
        for shard in shards:
            await shard.close()
    if as_json:
        print(json.dumps(dataclasses.asdict(status), indent=2))
    else:
        _print_status(status)
    return 1 if status.stalled else 0


def _print_status(status: PipelineStatus) -> None:
    """The pipeline's status for people, Chinese first (`--json` keeps the English keys)."""
    from settlement.pipeline_status import status_sentence

    stalled = {(s.stage, s.partition) for s in status.stalls}
    print(
        f"{'环节 stage':<12} {'分区 partition':<28} {'末端 end':>10} {'偏移 offset':>10} "
        f"{'延迟 lag':>8}  状态 state"
    )
    for p in status.partitions:
        idle_s = f"{p.idle_ms / 1000:.0f}"
        if (p.stage, p.partition) in stalled:
            state = "停滞 STALLED"
        elif not p.lag:
            state = "已追上 caught up"
        elif p.seen_moving:
            state = f"推进中, {idle_s} 秒前推进过 moving ({idle_s}s since it moved)"
        else:
            state = (
                f"未见推进, 已落后至少 {idle_s} 秒 not seen to move (behind for at least {idle_s}s)"
            )
        where = f"{p.topic}:{p.partition}"
        print(f"{p.stage:<12} {where:<28} {p.end_offset:>10} {p.offset:>10} {p.lag:>8}  {state}")
    for problem in status.unreadable:
        print(f"无法读取 unreadable: {problem}")
    for stall in status.stalls:
        since = datetime.fromtimestamp(stall.since_ms / 1000, CHINA_STANDARD_TIME).isoformat(
            timespec="seconds"
        )
        print(f"停滞 STALLED since {since}: {status_sentence(stall)}")
        if stall.kind == "cannot_apply" and stall.set_aside_by is None:
            print(
                "  原因排除后会自行继续; 或将该事件移入死信队列 once the cause is fixed it goes on "
                "by itself; or set the event aside: "
                f"cx deadletters set-aside {stall.topic}:{stall.partition}:{stall.offset} "
                '--reason "..."'
            )
    if not status.stalls:
        print("没有停滞 nothing is stalled")


@contextmanager
def _c_stdout_to_stderr() -> Iterator[None]:
    """Send what native code prints to stdout to stderr meanwhile: the HiGHS in scipy 1.17
    prints a debugging line now and then, which would break a bench's one JSON line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    """Run one benchmark and print its JSON line."""
    if args.name == "matching":
        from matching.bench import run as run_matching_bench

        print(run_matching_bench(time.perf_counter_ns, args.commands or 1_000_000, args.seed))
        sys.stdout.flush()
        # Against the plain book, with the collector as `cx run` sets it for a stage.
        from cx.collector import YOUNG_THRESHOLD
        from matching.plain_bench import run as run_plain_bench

        for line in run_plain_bench(
            time.perf_counter_ns,
            YOUNG_THRESHOLD,
            args.messages,
            args.resting,
            args.deep_resting,
            args.seed,
        ):
            print(line, flush=True)
    elif args.name == "stages":
        from cx.collector import quiet_collector
        from cx.stage_bench import run as run_stage_bench

        # As the stages run in `cx run`.
        quiet_collector()
        print(run_stage_bench(args.commands or 20_000, args.seed))
    elif args.name == "settle":
        if not (settings.database_url or "").startswith("postgresql"):
            print("cx bench settle: needs DATABASE_URL of a PostgreSQL server", file=sys.stderr)
            return 2
        from cx.collector import quiet_collector
        from cx.migrations import upgrade_to_head
        from settlement.settle_bench import run as run_settle_bench

        # As settlement runs in a node.
        quiet_collector()
        print(
            run_settle_bench(
                str(settings.database_url), args.commands or 40_000, args.seed, upgrade_to_head
            )
        )
    elif args.name in {"e2e", "replay"}:
        if not (settings.kafka_bootstrap_servers and settings.database_url):
            print(
                f"cx bench {args.name}: needs KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL "
                "(make bench starts both)",
                file=sys.stderr,
            )
            return 2
        if args.name == "e2e" and args.shards is not None:
            from cx.bench import run_shards

            if args.shards < 1:
                raise UsageError("--shards must be at least 1")
            try:
                line = run_shards(
                    settings.kafka_bootstrap_servers,
                    settings.database_url,
                    settings.settlement_shards.split(),
                    args.commands or 4_000,
                    args.shards,
                )
            except ValueError as error:
                print(f"cx bench e2e: {error}", file=sys.stderr)
                return 2
        elif args.name == "e2e":
            from cx.bench import run as run_e2e_bench

            line = run_e2e_bench(
                settings.kafka_bootstrap_servers,
                settings.database_url,
                args.commands or 20_000,
                args.rate,
                args.matching_processes,
            )
        else:
            from cx.collector import quiet_collector
            from cx.migrations import upgrade_to_head
            from settlement.bench import run as run_replay_bench

            # As `cx replay` and a node (where settlement restarts) run it.
            quiet_collector()

            line = run_replay_bench(
                settings.database_url, args.commands or 200_000, args.seed, upgrade_to_head
            )
        print(line)
    elif args.name == "auction":
        from matching.dayahead_bench import run as run_auction_bench

        with _c_stdout_to_stderr():
            line = run_auction_bench(time.perf_counter_ns, args.orders, args.seed, args.node_limit)
        print(line)
    elif args.name == "horizon":
        from cx.horizon import run as run_horizon_bench

        print(run_horizon_bench(args.families, args.replay_days, args.seed))
    elif args.name == "api":
        from api.bench import run_api

        print(run_api(args.clients, args.seconds))
    else:
        from api.bench import run_fanout

        print(run_fanout(args.subscribers, args.updates, args.updates_per_s))
    return 0


async def _init(settings: Settings) -> None:
    from cx.migrations import head
    from cx.runtime import ExchangeRuntime

    runtime = await ExchangeRuntime.open(settings, market_rules=False)
    await runtime.close()
    print(f"topics are ready; the database is at schema revision {head()}")


if __name__ == "__main__":
    sys.exit(main())

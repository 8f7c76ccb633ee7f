"""`cx`: the exchange's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from api.marketdata import MarketData
from exchange.board import show_board
from exchange.deadletters import read_dead_letters, replay_dead_letter
from exchange.node import serve
from exchange.runtime import STAGES, ExchangeRuntime, Stage
from exchange.settings import Settings
from settlement import history
from simulations.demo_market import DemoMarket


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
    commands.add_parser("init", help="create the topics and the event store schema, then exit")
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
    audit = commands.add_parser(
        "audit", help="check the whole history from the event store; exit 1 on a discrepancy"
    )
    audit.add_argument("--json", action="store_true", help="print JSON")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cx`."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.command in {"serve", "run"}:
        # A deployment's operators want the exchange's own notices (partitions taken over,
        # snapshots restored); the libraries' stay at warnings. The demo keeps its board clean.
        for name in ("exchange", "settlement", "api"):
            logging.getLogger(name).setLevel(logging.INFO)
    settings = Settings()
    try:
        if args.command == "demo":
            asyncio.run(_demo(settings, args.seed, args.rate))
        elif args.command == "serve":
            asyncio.run(serve(settings, STAGES))
        elif args.command == "run":
            stage: Stage = args.stage
            asyncio.run(serve(settings, (stage,)))
        elif args.command == "init":
            asyncio.run(_init(settings))
        elif args.command == "replay":
            return asyncio.run(
                history.run_replay(
                    settings, args.until, args.contract, args.account, args.json, args.verify
                )
            )
        elif args.command == "audit":
            return asyncio.run(history.run_audit(settings, args.json))
        elif args.command == "deadletters":
            return asyncio.run(_deadletters(settings, args))
        elif args.command == "history":
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
    except KeyboardInterrupt:
        return 130
    return 0


async def _demo(settings: Settings, seed: int, rate: float) -> None:
    where = (
        "embedded log and SQLite under " + str(settings.data_dir.resolve())
        if settings.embedded_log and not settings.database_url
        else "configured Kafka / PostgreSQL"
    )
    print(f"cx demo: {where}; API on http://{settings.api_host}:{settings.api_port}", flush=True)

    async def market(runtime: ExchangeRuntime, _: MarketData | None, stop: asyncio.Event) -> None:
        await DemoMarket(runtime, seed, rate).run(stop)

    await serve(settings, STAGES, extras=(market, show_board))
    print("cx demo: stopped cleanly; run it again to resume from the stored history", flush=True)


async def _deadletters(settings: Settings, args: argparse.Namespace) -> int:
    runtime = await ExchangeRuntime.open(settings)
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


async def _init(settings: Settings) -> None:
    runtime = await ExchangeRuntime.open(settings)
    await runtime.close()
    print("topics and event store schema are ready")


if __name__ == "__main__":
    sys.exit(main())

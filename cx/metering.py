"""`cx meter`: a provider's metering report through the API with an API key (`--key` or
`CX_API_KEY`): the units of an hour delivered to one buyer, or the tokens a token bundle's
holder used since the last report (each report drawing the bundle down once, paid at once)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cx_client import ExchangeClient, ProblemError

from cx.settings import Settings


def add_parser(commands: Any) -> None:
    """The `meter` command."""
    meter = commands.add_parser(
        "meter", help="report metering to one buyer: units of an hour, or a bundle's tokens (API)"
    )
    meter.add_argument("--url", help="the API (default: this node's CX_API_HOST:PORT)")
    meter.add_argument("--key", help="a provider's API key (default: $CX_API_KEY)")
    meter.add_argument("symbol", help="the contract, e.g. TOK-QWEN.YRD.M202712 (a bundle)")
    meter.add_argument("buyer_id")
    amount = meter.add_mutually_exclusive_group(required=True)
    amount.add_argument("--units", type=int, help="an hour's units delivered")
    amount.add_argument(
        "--tokens", type=int, help="a token bundle's tokens used since the last report"
    )
    meter.add_argument("--id", dest="report_id", help="the report's id (a retry draws once)")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Send the report and print the answer as JSON; a refusal's problem goes to stderr."""
    url = args.url or f"http://{settings.api_host}:{settings.api_port}"
    async with ExchangeClient(url, args.key or os.environ.get("CX_API_KEY")) as client:
        try:
            if args.tokens is not None:
                answer = await client.report_bundle_use(
                    args.symbol, args.buyer_id, args.tokens, report_id=args.report_id
                )
            else:
                answer = await client.report_metering(
                    args.symbol, args.buyer_id, args.units, report_id=args.report_id
                )
        except ProblemError as problem:
            print(f"cx meter: {problem.code}: {problem.detail}", file=sys.stderr)
            return 1
    print(json.dumps(answer.model_dump(), ensure_ascii=False, indent=2))
    return 0

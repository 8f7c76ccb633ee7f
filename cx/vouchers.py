"""`cx vouchers`: enterprises' registrations, applications for grants and their steps, and the
voucher policy, through the API with an API key (`--key` or `CX_API_KEY`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cx_client import ExchangeClient, ProblemError
from pydantic import BaseModel

from cx.settings import Settings

FEN_HELP = "金额, 以分计 (100 分 = 1 元) an amount in fen, 100 to the 元: 15000 is 150.00 元"
"""What an amount argument takes: whole fen, as the API does, so scripts keep working."""


def add_parser(commands: Any) -> None:
    """The `vouchers` command and its subcommands."""
    vouchers = commands.add_parser(
        "vouchers", help="register an enterprise, apply for grants, decide applications (API)"
    )
    vouchers.add_argument("--url", help="the API (default: this node's CX_API_HOST:PORT)")
    vouchers.add_argument("--key", help="an API key (default: $CX_API_KEY)")
    steps = vouchers.add_subparsers(dest="vouchers_command", required=True)
    register = steps.add_parser("register", help="register the key's enterprise (统一社会信用代码)")
    register.add_argument("name")
    register.add_argument("uscc", help="the unified social credit code, 18 characters")
    register.add_argument("--kind", choices=("sme", "opc", "large"), required=True)
    register.add_argument("--city", required=True)
    steps.add_parser("enterprise", help="the enterprise the key's account registered")
    apply = steps.add_parser("apply", help="apply for a grant (算力券申领)")
    apply.add_argument("programme_id")
    apply.add_argument("amount", type=int, help=FEN_HELP)
    apply.add_argument("--use", required=True, help="what the compute is for")
    apply.add_argument("--id", dest="application_id", help="the application's id (default: new)")
    listing = steps.add_parser("applications", help="the key's applications, or a programme's")
    listing.add_argument("--programme", help="a programme's applications (its administrator)")
    for name, field, help_text in (
        ("ask", "question", "ask the applicant a question (administrator)"),
        ("answer", "answer", "answer the administrator's question (applicant)"),
        ("reject", "reason", "reject a pending application (administrator)"),
    ):
        step = steps.add_parser(name, help=help_text)
        step.add_argument("programme_id")
        step.add_argument("application_id")
        step.add_argument(field)
    approve = steps.add_parser("approve", help="approve a pending application (administrator)")
    approve.add_argument("programme_id")
    approve.add_argument("application_id")
    approve.add_argument("limit", type=int, help=FEN_HELP)
    approve.add_argument("--related", nargs="*", default=[], help="the enterprise's group")
    policy = steps.add_parser("policy", help="set the platform's voucher ceilings (operator)")
    policy.add_argument("--max-rate-bps", type=int, required=True)
    policy.add_argument("--max-cap-per-enterprise", type=int, required=True, help=FEN_HELP)
    policy.add_argument("--kinds", nargs="+", choices=("sme", "opc", "large"), required=True)
    policy.add_argument("--cities", nargs="*", default=[])
    policy.add_argument("--reason", default="")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Send one step and print its answer as JSON; a refusal's problem goes to stderr."""
    url = args.url or f"http://{settings.api_host}:{settings.api_port}"
    async with ExchangeClient(url, args.key or os.environ.get("CX_API_KEY")) as client:
        try:
            answer = await _step(client, args)
        except ProblemError as problem:
            print(f"cx vouchers: {problem.code}: {problem.detail}", file=sys.stderr)
            return 1
    print(json.dumps(answer, ensure_ascii=False, indent=2))
    return 0


async def _step(client: ExchangeClient, args: argparse.Namespace) -> Any:
    command = args.vouchers_command
    done: BaseModel
    if command == "register":
        done = await client.register_enterprise(args.name, args.uscc, args.kind, args.city)
    elif command == "enterprise":
        done = await client.enterprise()
    elif command == "apply":
        done = await client.apply_for_grant(
            args.programme_id, args.amount, args.use, application_id=args.application_id
        )
    elif command == "applications":
        found = await (
            client.programme_applications(args.programme)
            if args.programme
            else client.applications()
        )
        return [application.model_dump() for application in found]
    elif command == "ask":
        done = await client.request_application_info(
            args.programme_id, args.application_id, args.question
        )
    elif command == "answer":
        done = await client.supplement_application(
            args.programme_id, args.application_id, args.answer
        )
    elif command == "reject":
        done = await client.reject_application(args.programme_id, args.application_id, args.reason)
    elif command == "approve":
        done = await client.approve_grant(
            args.programme_id, args.application_id, args.limit, related_accounts=args.related
        )
    else:
        done = await client.set_voucher_policy(
            args.max_rate_bps, args.max_cap_per_enterprise, args.kinds, args.cities, args.reason
        )
    return done.model_dump()

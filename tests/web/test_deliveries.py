"""Which deliveries the page offers a buyer a dispute for (api/web/deliveries.js), run in
Node.js as the page runs it: an hour's once metered, a token bundle's while owed or drawn down
(the API accepts both; found by the outside trial, the page offered bundles none), neither once
disputed or settled."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import missing

DELIVERIES = Path(__file__).resolve().parents[2] / "api" / "web" / "deliveries.js"
HOUR = "H100-80G.GZ.20261205T10"
BUNDLE = "TOK-QWEN.YRD.M202612"


def _disputable(symbol: str, status: str) -> bool:
    node = shutil.which("node")
    if node is None:
        missing("Node.js is required (make web needs it too)")
    delivery = json.dumps({"symbol": symbol, "status": status})
    script = (
        f"const D = require({json.dumps(str(DELIVERIES))});"
        f"process.stdout.write(JSON.stringify(D.disputable({delivery})));"
    )
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True)
    answer: bool = json.loads(done.stdout)
    return answer


@pytest.mark.parametrize(
    ("symbol", "status", "offered"),
    [
        (BUNDLE, "owed", True),
        (BUNDLE, "drawing", True),
        (BUNDLE, "disputed", False),
        (BUNDLE, "settled", False),
        (HOUR, "metered", True),
        (HOUR, "owed", False),
        (HOUR, "disputed", False),
        (HOUR, "settled", False),
    ],
)
def test_a_dispute_is_offered_where_the_api_accepts_one(
    symbol: str, status: str, offered: bool
) -> None:
    assert _disputable(symbol, status) is offered


def test_the_page_asks_the_rule_for_its_dispute_button() -> None:
    orders = (DELIVERIES.parent / "views" / "orders.js").read_text()
    assert 'me.role === "buyer" && CxDeliveries.disputable(d)' in orders
    page = (DELIVERIES.parent / "index.html").read_text()
    assert page.index("/web/deliveries.js") < page.index("/web/app.js")

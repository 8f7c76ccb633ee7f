"""The domain's folding modules compiled by mypyc and their pure-Python sources.

`make compile` builds `exchange/domain/_mypyc/` (the money rules, the market, the delivery
desk); `exchange.domain` loads it unless `CX_PURE_PYTHON=1` or the build is not of the current
sources (`matching.native`, tested with the engine in tests/matching/test_compiled.py). The
suite runs on whichever loaded; when that is the compiled build, the domain's tests run once
more on pure Python in a child pytest, and a seeded market must make the same events, byte for
byte, and fold to the same state hashes both ways.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

import exchange.domain
from exchange.domain.catalogue import default_catalogue
from exchange.domain.messages import decode_event, encode
from settlement.bench import HISTORY_PARTITIONS, make_history
from settlement.replay import ExchangeState
from tests.compiled import ROOT, assert_loaded_where_built, assert_pass_on_pure_python, child

# The tests of the compiled modules' rules the child pytest runs on pure Python.
PURE_PYTHON_TESTS = [
    "tests/test_accounts.py",
    "tests/test_vouchers.py",
    "tests/test_token_bundles.py",
    "tests/test_strips.py",
    "tests/test_resale_shrunk.py",
    "tests/test_resale_after_settlement.py",
    "tests/test_market_stage.py",
    "tests/test_risk.py",
    "tests/test_ceilings.py",
    "tests/history/test_replay_fold.py",
]

requires_compiled = pytest.mark.skipif(
    not exchange.domain.COMPILED, reason="the domain runs as pure Python here: nothing to compare"
)


WHICH = """
import json, exchange.domain as d
print(json.dumps([d.COMPILED, [__import__(f"exchange.domain.{m}", fromlist=["x"]).__file__
                               for m in d.NATIVE.modules]]))
"""


def test_the_domain_runs_compiled_where_it_can_be_built() -> None:
    assert_loaded_where_built(exchange.domain.NATIVE, exchange.domain.COMPILED)


def test_pure_python_is_forced_by_the_environment() -> None:
    compiled, files = json.loads(child(WHICH, pure=True))

    assert compiled is False
    assert files == [
        str(ROOT / "exchange" / "domain" / f"{name}.py") for name in exchange.domain.NATIVE.modules
    ]


def run_seeded_market() -> None:
    """Print, as JSON, whether the domain ran compiled, the digest of a seeded market's events
    (risk and the market deciding them) and the state hashes of folding them, every 2,000
    events as a replay reads them, with the journal kept."""
    history = make_history(12_000, seed=11)
    out: list[Any] = [exchange.domain.COMPILED, len(history)]
    records = [encode(event) for event in history]
    out.append(hashlib.sha256(b"\n".join(records)).hexdigest())
    state = ExchangeState(default_catalogue(), partitions=HISTORY_PARTITIONS, journal=True)
    for position, record in enumerate(records, start=1):
        state.apply_event(decode_event(record), position)
        if position % 2_000 == 0:
            out.append(state.state_hash())
    out.append(state.state_hash())
    print(json.dumps(out))


@requires_compiled
def test_compiled_and_pure_make_the_same_events_and_state_hashes() -> None:
    code = "from tests.test_compiled_domain import run_seeded_market; run_seeded_market()"

    compiled = json.loads(child(code, pure=False))
    pure = json.loads(child(code, pure=True))

    assert compiled[0] is True
    assert pure[0] is False
    assert compiled[1:] == pure[1:]
    assert pure[1] >= 12_000
    assert len(pure) == 3 + pure[1] // 2_000 + 1


@requires_compiled
def test_the_domain_tests_pass_on_pure_python() -> None:
    assert_pass_on_pure_python(PURE_PYTHON_TESTS, timeout_s=400)

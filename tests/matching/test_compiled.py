"""The engine compiled by mypyc and the pure-Python modules: which one runs, and that they agree.

`make compile` (part of `make venv`) builds `matching/_mypyc/`; `matching` loads it unless
`CX_PURE_PYTHON=1` or the build is not of the current sources. The suite runs on whichever
loaded; when that is the compiled engine, the engine's tests also run once more on pure Python
in a child pytest, and a seeded flow must give the same events, byte for byte, and the same
state hashes both ways.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import matching
from matching import book as B
from matching.bench import AMEND, CANCEL, CANCEL_ALL, SUBMIT, make_flow
from matching.engine import MatchingEngine
from tests.compiled import ROOT, assert_loaded_where_built, assert_pass_on_pure_python, child
from tests.matching.test_determinism import commands, replay

H = B.HOUR_MS
SEGMENT = 5_000

# The engine's tests the child pytest runs on pure Python: tests/matching but for the
# day-ahead solver's (scipy, no engine) and this file, and the replays of snapshots.
PURE_PYTHON_TESTS = [
    *sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests" / "matching").glob("test_*.py")
        if not path.name.startswith(("test_dayahead", "test_compiled"))
    ),
    "tests/pipeline/test_snapshots.py",
]

requires_compiled = pytest.mark.skipif(
    not matching.COMPILED, reason="the engine runs as pure Python here: nothing to compare"
)


WHICH = """
import json, matching, matching.engine
print(json.dumps([matching.__file__, matching.COMPILED,
                  [__import__(f"matching.{m}", fromlist=["x"]).__file__
                   for m in matching.NATIVE.modules]]))
"""


def test_the_engine_runs_compiled_where_it_can_be_built() -> None:
    assert_loaded_where_built(matching.NATIVE, matching.COMPILED)
    if not matching.COMPILED:
        assert Path(MatchingEngine.submit.__code__.co_filename) == ROOT / "matching" / "engine.py"


def test_pure_python_is_forced_by_the_environment() -> None:
    package, compiled, files = json.loads(child(WHICH, pure=True))

    assert compiled is False
    assert Path(package) == ROOT / "matching" / "__init__.py"
    assert files == [str(ROOT / "matching" / f"{name}.py") for name in matching.NATIVE.modules]


@requires_compiled
def test_a_build_of_other_sources_is_not_loaded(tmp_path: Path) -> None:
    copy = tmp_path / "matching"
    shutil.copytree(ROOT / "matching", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert json.loads(child(WHICH, pure=False, cwd=tmp_path))[1] is True
    with (copy / "engine.py").open("a") as source:
        source.write("\n# changed after the build\n")

    package, compiled, files = json.loads(child(WHICH, pure=False, cwd=tmp_path))

    assert Path(package) == copy / "__init__.py"
    assert compiled is False
    assert files == [str(copy / f"{name}.py") for name in matching.NATIVE.modules]


def run_seeded_flows() -> None:
    """Print, as JSON, the digest of each segment's events and the state hash after it, for
    the determinism test's commands (every kind; restored from a snapshot after the first
    segment) and the benchmark's flow (with the gate closure and delivery after it)."""
    out: list[Any] = [matching.COMPILED]
    calls = commands(seed=31, count=3 * SEGMENT)
    engine = MatchingEngine()
    for begin in range(0, len(calls), SEGMENT):
        if begin == SEGMENT:
            engine = MatchingEngine.restore(json.loads(json.dumps(engine.snapshot())))
        events = replay(engine, calls[begin : begin + SEGMENT])
        out.append([hashlib.sha256(events).hexdigest(), engine.state_hash()])
    flow = make_flow(60_000, seed=7)
    engine = MatchingEngine()
    symbols = sorted({args[1] for op, args in flow if op == SUBMIT})
    for hour, symbol in enumerate(symbols):
        engine.list_contract(
            0, symbol, "H100-80G.GZ", 2 * 10**12 + hour * H, 1800, tick=10, band=360,
            protection=90, open_at=0,
        )  # fmt: skip
    handlers = {
        SUBMIT: engine.submit,
        CANCEL: engine.cancel,
        AMEND: engine.amend,
        CANCEL_ALL: engine.cancel_all,
    }
    for begin in range(0, len(flow), SEGMENT):
        for op, args in flow[begin : begin + SEGMENT]:
            handlers[op](*args)
        events = json.dumps(engine.take_events(), separators=(",", ":")).encode()
        out.append([hashlib.sha256(events).hexdigest(), engine.state_hash()])
    engine.advance(2 * 10**12 + len(symbols) * H)
    events = json.dumps(engine.take_events(), separators=(",", ":")).encode()
    out.append([hashlib.sha256(events).hexdigest(), engine.state_hash(), len(engine.orders)])
    print(json.dumps(out))


@requires_compiled
def test_compiled_and_pure_give_the_same_events_and_state_hashes() -> None:
    code = "from tests.matching.test_compiled import run_seeded_flows; run_seeded_flows()"

    compiled = json.loads(child(code, pure=False))
    pure = json.loads(child(code, pure=True))

    assert compiled[0] is True
    assert pure[0] is False
    assert compiled[1:] == pure[1:]
    # The determinism test's commands list four contracts first: one more, short segment.
    assert len(pure) == 1 + 4 + 60_000 // SEGMENT + 1
    assert pure[-1][2] == 0, "every order expired at the gate closure"


@requires_compiled
def test_the_engine_tests_pass_on_pure_python() -> None:
    assert_pass_on_pure_python(PURE_PYTHON_TESTS, timeout_s=280)

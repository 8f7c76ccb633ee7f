"""The exchange's domain: messages, the money rules, the books' stage and the delivery desk.

The modules that fold every event (`NATIVE.modules`: the accounts' money rules, the market
that drives the engine, the delivery desk) run compiled by mypyc where `make compile` built
them from these sources, as the matching engine does (`matching.native`); otherwise, and
whenever `CX_PURE_PYTHON=1`, they run as their pure-Python sources, with the same behaviour.
`COMPILED` says which one was chosen.
"""

from __future__ import annotations

from pathlib import Path

from matching.native import NativeBuild, python_files

_HERE = Path(__file__).parent

NATIVE = NativeBuild(
    package="exchange.domain",
    source_dir=_HERE,
    modules=("accounts", "market", "delivery"),
    library="exchange_domain__mypyc",
    # Every module of the domain and of the engine: the compiled code may hold any constant it
    # imports as a literal, so a change anywhere there makes the build stale.
    digested=python_files(_HERE) + python_files(_HERE.parents[1] / "matching"),
)

COMPILED = NATIVE.load(__path__)
"""Whether the modules above load compiled: built, current, and pure Python not forced."""

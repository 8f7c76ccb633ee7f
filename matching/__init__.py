"""The matching engine and its books; the engine's modules run compiled by mypyc where built.

`make compile` (part of `make venv`, so of `make demo` and `make test`) compiles the modules
of `NATIVE.modules` with mypyc into `matching/_mypyc/` (`infra/compile_engine.py`); the sources
stay where they are. This package loads that build, as `matching.native` says, only when it is
of these sources; otherwise, and whenever `CX_PURE_PYTHON=1`, the engine runs as the
pure-Python modules, with the same behaviour. Every other module (outputs, the day-ahead
solver, the benchmark) is always its source. `COMPILED` says which one was chosen.
"""

from __future__ import annotations

from pathlib import Path

from matching.native import NativeBuild, python_files

_HERE = Path(__file__).parent
_COMPILED_MODULES = ("book", "state", "snapshot", "continuous", "auction", "lifecycle", "engine")

NATIVE = NativeBuild(
    package="matching",
    source_dir=_HERE,
    # The engine and every class it derives from or holds (a compiled class can derive only
    # from compiled classes).
    modules=_COMPILED_MODULES,
    library="matching_engine__mypyc",
    # `outputs.py` too: the compiled code holds its constants as literals.
    digested=python_files(_HERE, (*_COMPILED_MODULES, "outputs")),
)

COMPILED = NATIVE.load(__path__)
"""Whether the engine's modules load compiled: built, current, and pure Python not forced."""

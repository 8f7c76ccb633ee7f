"""The matching engine and its books; the engine's modules run compiled by mypyc where built.

`make compile` (part of `make venv`, so of `make demo` and `make test`) compiles the modules
of `COMPILED_MODULES` with mypyc into `matching/_mypyc/` (`infra/compile_engine.py`): their
extension modules in `_mypyc/matching/`, the shared library of their code in `_mypyc/`; the
sources stay where they are. This package then puts `_mypyc/matching/` first on its
`__path__`, so `import matching.engine` and the others load the extension modules and every
other module (outputs, the day-ahead solver, the benchmark) its source, and `_mypyc/` last on
`sys.path`, where the extension modules import the shared library from. It does so only when
the build is of these sources (the digest it recorded, `source_digest`) and every file of it
is there for this interpreter; otherwise, and whenever `CX_PURE_PYTHON=1`, the engine runs as
the pure-Python modules, with the same behaviour. `COMPILED` says which one was chosen.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

COMPILED_MODULES = ("book", "state", "snapshot", "continuous", "auction", "lifecycle", "engine")
"""The modules mypyc compiles: the engine and every class it derives from or holds (a compiled
class can derive only from compiled classes)."""

NATIVE_LIBRARY = "matching_engine__mypyc"
"""The shared library holding the compiled code of every module above (mypyc's group), a
top-level module: the extension modules find it by that name."""

NATIVE_DIR = Path(__file__).with_name("_mypyc")
"""Where `make compile` puts the build (ignored by git)."""

NATIVE_PACKAGE_DIR = NATIVE_DIR / "matching"
"""The extension modules of `COMPILED_MODULES`."""

DIGEST_FILE = NATIVE_DIR / "sources.sha256"

PURE_PYTHON_VARIABLE = "CX_PURE_PYTHON"


def source_digest() -> str:
    """SHA-256 of the sources a build compiles, and of `outputs.py`, whose constants the
    compiled code holds as literals."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in (*COMPILED_MODULES, "outputs"):
        digest.update(name.encode() + b"\0")
        digest.update((here / f"{name}.py").read_bytes())
    return digest.hexdigest()


def _native_build_is_current() -> bool:
    suffix = EXTENSION_SUFFIXES[0]
    files = [NATIVE_PACKAGE_DIR / f"{name}{suffix}" for name in COMPILED_MODULES]
    files.append(NATIVE_DIR / f"{NATIVE_LIBRARY}{suffix}")
    if not DIGEST_FILE.is_file() or not all(f.is_file() for f in files):
        return False
    return DIGEST_FILE.read_text().strip() == source_digest()


COMPILED = os.environ.get(PURE_PYTHON_VARIABLE, "") != "1" and _native_build_is_current()
"""Whether the engine's modules load compiled: built, current, and pure Python not forced."""

if COMPILED:
    __path__.insert(0, str(NATIVE_PACKAGE_DIR))
    sys.path.append(str(NATIVE_DIR))

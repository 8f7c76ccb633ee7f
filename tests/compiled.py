"""What the tests of a compiled build share (`matching.native`): running code or tests in a
child interpreter, compiled or forced to pure Python, and checking a package loaded its build."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from matching.native import PURE_PYTHON_VARIABLE, NativeBuild

ROOT = Path(__file__).resolve().parents[1]


def child(code: str, pure: bool, cwd: Path = ROOT) -> str:
    """What `code` prints in a fresh interpreter started in `cwd` (first on its path)."""
    environment = dict(os.environ)
    environment.pop(PURE_PYTHON_VARIABLE, None)
    if pure:
        environment[PURE_PYTHON_VARIABLE] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_loaded_where_built(native: NativeBuild, compiled: bool) -> None:
    """A compiled package loaded every module of its build; one running as Python under CI
    was forced to, or this machine lacks the tools: `make test` builds first, so otherwise a
    build failed or is stale, and the compiled modules would go untested."""
    if compiled:
        for name in native.modules:
            loaded = Path(sys.modules[f"{native.package}.{name}"].__file__ or "")
            assert loaded.parent == native.package_dir, loaded
            assert loaded.name.endswith(EXTENSION_SUFFIXES[0]), loaded
        return
    script = ROOT / "infra" / "compile_engine.py"
    spec = importlib.util.spec_from_file_location("compile_engine", script)
    assert spec is not None
    assert spec.loader is not None
    compile_engine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compile_engine)
    forced = os.environ.get(PURE_PYTHON_VARIABLE) == "1"
    if os.environ.get("CI") == "true" and not forced and not compile_engine.missing_tools():
        pytest.fail(f"a C compiler and mypyc are here but {native.package} is not compiled")


def assert_pass_on_pure_python(tests: list[str], timeout_s: float) -> None:
    """The tests pass in a child pytest on pure Python."""
    environment = {**os.environ, PURE_PYTHON_VARIABLE: "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-5_000:]
    assert " passed" in done.stdout, done.stdout[-2_000:]


def planted_on_pure_python(test: str) -> bool:
    """For a test that plants a defect by patching the domain, which compiled code calls
    directly and so never sees: where the domain runs compiled, run the test (`path::name`)
    in a pure-Python child pytest and say so (the caller then returns); False where this
    process runs the pure modules and the test plants its defect here."""
    import exchange.domain

    if not exchange.domain.COMPILED:
        return False
    assert_pass_on_pure_python([test], timeout_s=240)
    return True

"""`make compile`: build the matching engine's and the domain's folding modules with mypyc.

Two builds, each one mypyc group (`matching.native` says how a package chooses its build):
- the matching engine, `matching.NATIVE.modules`, into `matching/_mypyc/`;
- the modules of the domain that fold every event (the money rules, the market, the delivery
  desk), `exchange.domain.NATIVE.modules`, into `exchange/domain/_mypyc/`.

A build's extension modules go to `_mypyc/` under their package's import path, the group's
shared library to the top of `_mypyc/` (mypyc derives each module's `__file__` from where the
shared library is, as if it sat at the top of the import path). Each build runs in
`build/mypyc/<package>/` (its log: `build.log` there) and replaces the package's `_mypyc/` only
once it is complete, imports and works. When one cannot be built (no C compiler, no Python
headers, no mypyc, or the build fails) this says why, removes any earlier build of it and
exits 0: that package then runs its pure-Python modules. Nothing is rebuilt while the recorded
digest matches the sources.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import exchange.domain
import matching
from matching.native import PURE_PYTHON_VARIABLE, NativeBuild

ROOT = Path(__file__).resolve().parent.parent
LOG_LINES_SHOWN = 25

BUILDS: dict[str, tuple[str, NativeBuild]] = {
    "matching": ("the matching engine", matching.NATIVE),
    "exchange.domain": ("the domain's folding modules", exchange.domain.NATIVE),
}
"""Each build by its package: what it is called in messages, and the build."""

# Run in a child interpreter after a build is in place: it must load compiled and work.
SMOKE_TESTS = {
    "matching": """
import matching, matching.engine as e
assert matching.COMPILED, "not chosen"
assert e.__file__.startswith(str(matching.NATIVE.package_dir)), e.__file__
engine = e.MatchingEngine()
engine.list_contract(0, "X.1", "X", 3_600_000, 100, continuous=True)
engine.submit(1, "X.1", "a", "alice", "buy", 100, 2)
engine.submit(2, "X.1", "b", "bob", "sell", 100, 1)
assert [k for k, *_ in engine.take_events()] == ["state", "accepted", "accepted", "trade"]
""",
    "exchange.domain": """
import exchange.domain as d
from exchange.domain import accounts, delivery, market
assert d.COMPILED, "not chosen"
for module in (accounts, delivery, market):
    assert module.__file__.startswith(str(d.NATIVE.package_dir)), module.__file__
from exchange.domain.messages import FundsDeposited
book = accounts.Accounts()
book.apply(
    FundsDeposited(event_id="e", ts=1, deposit_id="d", account_id="a", amount=100, currency="CNY")
)
assert book.cash["a"].available == 100, book.cash
""",
}


def main() -> int:
    """Build each package whose sources changed since its last build; say what happened."""
    for package in BUILDS:
        compile_package(package)
    return 0


def compile_package(package: str) -> None:
    name, native = BUILDS[package]
    work = _work(package)
    log = work / "build.log"
    digest = native.source_digest()
    if _recorded_digest(native.digest_file) == digest and _loads_compiled(package, log):
        print(f"make compile: {name}: compiled, current ({_shown(native)})")
        return
    missing = missing_tools()
    if missing:
        _fall_back(package, missing)
        return
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as output:
        built = subprocess.run(
            [sys.executable, __file__, "--build", package],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if built.returncode:
        _fall_back(package, "the mypyc build failed", show_log=True)
        return
    if native.source_digest() != digest:
        _fall_back(package, "the sources changed during the build; run it again")
        return
    staged = work / "staged"
    shutil.rmtree(staged, ignore_errors=True)
    staged_package = staged.joinpath(*package.split("."))
    staged_package.mkdir(parents=True)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in native.modules:
        built_module = (work / "lib").joinpath(*package.split("."), f"{module}{suffix}")
        shutil.copy2(built_module, staged_package)
    shutil.copy2(work / "lib" / f"{native.library}{suffix}", staged)
    (staged / native.digest_file.name).write_text(digest + "\n")
    shutil.rmtree(native.native_dir, ignore_errors=True)
    staged.rename(native.native_dir)
    if not _loads_compiled(package, log):
        _fall_back(package, "the compiled modules do not load or work", show_log=True)
        return
    seconds = time.monotonic() - started
    print(
        f"make compile: compiled {name} with mypyc in {seconds:.0f} s "
        f"({_shown(native)}; {PURE_PYTHON_VARIABLE}=1 runs the pure-Python modules)"
    )


def build(package: str) -> None:
    """One package's build itself, in a child process whose output goes to its log."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    native = BUILDS[package][1]
    work = _work(package)
    group = native.library.removesuffix("__mypyc")
    # Its own mypy cache: the project's, which `make lint` uses, stays as that left it.
    options = ["--config-file", "pyproject.toml", "--cache-dir", str(work / "mypy-cache")]
    extensions = mypycify(
        [*options, *native.sources()],
        target_dir=str(work / "c"),
        group_name=group,
    )
    # A bare Distribution, not setup(): setup() would read the project's pyproject.toml.
    distribution = Distribution({"name": f"{group}-native", "ext_modules": extensions})
    build_ext = distribution.get_command_obj("build_ext")
    build_ext.build_lib = str(work / "lib")
    build_ext.build_temp = str(work / "temp")
    distribution.run_command("build_ext")


def missing_tools() -> str:
    """What the build needs and this machine lacks ("" if nothing)."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    if shutil.which(shlex.split(compiler)[0]) is None:
        return f"no C compiler ({compiler})"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers} is missing)"
    if importlib.util.find_spec("mypyc") is None:
        return "no mypyc (it comes with mypy, in the dev extra)"
    return ""


def _work(package: str) -> Path:
    return ROOT / "build" / "mypyc" / package


def _recorded_digest(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def _loads_compiled(package: str, log: Path) -> bool:
    """Whether a fresh interpreter loads the package's build and works with it."""
    environment = dict(os.environ)
    environment.pop(PURE_PYTHON_VARIABLE, None)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as output:
        checked = subprocess.run(
            [sys.executable, "-c", SMOKE_TESTS[package]],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return checked.returncode == 0


def _fall_back(package: str, why: str, show_log: bool = False) -> None:
    name, native = BUILDS[package]
    shutil.rmtree(native.native_dir, ignore_errors=True)
    print(f"make compile: could not compile {name}: {why}")
    log = _work(package) / "build.log"
    if show_log and log.is_file():
        lines = log.read_text(errors="replace").splitlines()[-LOG_LINES_SHOWN:]
        print(f"  last lines of {log.relative_to(ROOT)}:")
        for line in lines:
            print(f"  | {line}")
    print(f"make compile: {name} runs as pure Python (the same behaviour, slower)")


def _shown(native: NativeBuild) -> str:
    return str(native.native_dir.relative_to(ROOT))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"] and len(sys.argv) == 3:
        build(sys.argv[2])
    else:
        sys.exit(main())

"""`make compile`: build the matching engine's modules with mypyc into `matching/_mypyc/`.

The modules are `matching.COMPILED_MODULES`, in one mypyc group: their extension modules go to
`matching/_mypyc/matching/`, the group's shared library to `matching/_mypyc/` (mypyc derives
each module's `__file__` from where the shared library is, as if it sat at the top of the
import path). The build runs in `build/mypyc/` (its log: `build/mypyc/build.log`) and replaces
`matching/_mypyc/` only once it is complete, imports and trades. When it cannot be built (no C
compiler, no Python headers, no mypyc, or the build fails) this says why, removes any earlier
build and exits 0: the package then runs the pure-Python modules (`matching/__init__.py` says
how it chooses). Nothing is rebuilt while the recorded digest matches the sources.
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

import matching

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mypyc"
LOG = WORK / "build.log"
LOG_LINES_SHOWN = 25

# Run in a child interpreter after the build is in place: it must load compiled and work.
SMOKE_TEST = """
import matching, matching.engine as e
assert matching.COMPILED, "not chosen"
assert e.__file__.startswith(str(matching.NATIVE_PACKAGE_DIR)), e.__file__
engine = e.MatchingEngine()
engine.list_contract(0, "X.1", "X", 3_600_000, 100, continuous=True)
engine.submit(1, "X.1", "a", "alice", "buy", 100, 2)
engine.submit(2, "X.1", "b", "bob", "sell", 100, 1)
assert [k for k, *_ in engine.take_events()] == ["state", "accepted", "accepted", "trade"]
"""


def main() -> int:
    """Build when the sources changed since the last build; say what happened."""
    digest = matching.source_digest()
    if _recorded_digest(matching.DIGEST_FILE) == digest and _loads_compiled():
        print(f"make compile: the compiled matching engine is current ({_shown()})")
        return 0
    missing = missing_tools()
    if missing:
        return _fall_back(missing)
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with LOG.open("w") as log:
        built = subprocess.run(
            [sys.executable, __file__, "--build"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if built.returncode:
        return _fall_back("the mypyc build failed", show_log=True)
    if matching.source_digest() != digest:
        return _fall_back("the sources changed during the build; run it again")
    staged = WORK / "staged"
    shutil.rmtree(staged, ignore_errors=True)
    (staged / "matching").mkdir(parents=True)
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for name in matching.COMPILED_MODULES:
        shutil.copy2(WORK / "lib" / "matching" / f"{name}{suffix}", staged / "matching")
    shutil.copy2(WORK / "lib" / f"{matching.NATIVE_LIBRARY}{suffix}", staged)
    (staged / matching.DIGEST_FILE.name).write_text(digest + "\n")
    shutil.rmtree(matching.NATIVE_DIR, ignore_errors=True)
    staged.rename(matching.NATIVE_DIR)
    if not _loads_compiled():
        return _fall_back("the compiled engine does not load or work", show_log=True)
    seconds = time.monotonic() - started
    print(
        f"make compile: compiled the matching engine with mypyc in {seconds:.0f} s "
        f"({_shown()}; {matching.PURE_PYTHON_VARIABLE}=1 runs the pure-Python modules)"
    )
    return 0


def build() -> None:
    """The build itself, in a child process whose output goes to the log."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    sources = [f"matching/{name}.py" for name in matching.COMPILED_MODULES]
    group = matching.NATIVE_LIBRARY.removesuffix("__mypyc")
    # Its own mypy cache: the project's, which `make lint` uses, stays as that left it.
    options = ["--config-file", "pyproject.toml", "--cache-dir", str(WORK / "mypy-cache")]
    extensions = mypycify(
        [*options, *sources],
        target_dir=str(WORK / "c"),
        group_name=group,
    )
    # A bare Distribution, not setup(): setup() would read the project's pyproject.toml.
    distribution = Distribution({"name": "matching-engine-native", "ext_modules": extensions})
    build_ext = distribution.get_command_obj("build_ext")
    build_ext.build_lib = str(WORK / "lib")
    build_ext.build_temp = str(WORK / "temp")
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


def _recorded_digest(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def _loads_compiled() -> bool:
    """Whether a fresh interpreter loads the compiled engine and trades with it."""
    environment = dict(os.environ)
    environment.pop(matching.PURE_PYTHON_VARIABLE, None)
    WORK.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as log:
        checked = subprocess.run(
            [sys.executable, "-c", SMOKE_TEST],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return checked.returncode == 0


def _fall_back(why: str, show_log: bool = False) -> int:
    shutil.rmtree(matching.NATIVE_DIR, ignore_errors=True)
    print(f"make compile: could not compile the matching engine: {why}")
    if show_log and LOG.is_file():
        lines = LOG.read_text(errors="replace").splitlines()[-LOG_LINES_SHOWN:]
        print(f"  last lines of {LOG.relative_to(ROOT)}:")
        for line in lines:
            print(f"  | {line}")
    print("make compile: the matching engine runs as pure Python (the same behaviour, slower)")
    return 0


def _shown() -> str:
    return str(matching.NATIVE_DIR.relative_to(ROOT))


if __name__ == "__main__":
    if sys.argv[1:] == ["--build"]:
        build()
    else:
        sys.exit(main())

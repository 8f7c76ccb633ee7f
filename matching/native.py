"""Choosing between a package's modules compiled by mypyc and their pure-Python sources.

`make compile` (`infra/compile_engine.py`) builds each package's `NATIVE.modules` as one
mypyc group into the package's `_mypyc/` (ignored by git): the extension modules under the
package's import path there (`_mypyc/matching/`, `_mypyc/exchange/domain/`), the group's shared
library at its top, with the digest of the sources it was built from. A package loads them, by
putting their folder first on its `__path__` and `_mypyc/` last on `sys.path` (where the
extension modules import the shared library from), only when that digest is of its current
sources and every file of the build is there for this interpreter; otherwise, and whenever
`CX_PURE_PYTHON=1`, it runs its pure-Python modules, with the same behaviour.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PURE_PYTHON_VARIABLE = "CX_PURE_PYTHON"


@dataclass(frozen=True)
class NativeBuild:
    """Where a package's compiled modules are and whether they are of its current sources."""

    package: str
    """The package's dotted name (`matching`, `exchange.domain`)."""
    source_dir: Path
    """The folder of the package's sources."""
    modules: tuple[str, ...]
    """The modules compiled, by their names inside the package."""
    library: str
    """The shared library of the group's code: a top-level module the extension modules import."""
    digested: tuple[Path, ...]
    """The sources whose digest the build records: the compiled modules, and any module whose
    constants the compiled code may hold as literals."""

    @property
    def root(self) -> Path:
        """The folder the package is imported from."""
        return self.source_dir.parents[self.package.count(".")]

    @property
    def native_dir(self) -> Path:
        return self.source_dir / "_mypyc"

    @property
    def package_dir(self) -> Path:
        """Where the build's extension modules are."""
        return self.native_dir.joinpath(*self.package.split("."))

    @property
    def digest_file(self) -> Path:
        return self.native_dir / "sources.sha256"

    def sources(self) -> list[str]:
        """The compiled modules' source files, relative to the import root."""
        return [f"{self.package.replace('.', '/')}/{name}.py" for name in self.modules]

    def source_digest(self) -> str:
        """SHA-256 of the digested sources, each named by its path from the import root."""
        digest = hashlib.sha256()
        for path in self.digested:
            digest.update(path.relative_to(self.root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def is_current(self) -> bool:
        """Whether a complete build of the present sources is there for this interpreter."""
        suffix = EXTENSION_SUFFIXES[0]
        files = [self.package_dir / f"{name}{suffix}" for name in self.modules]
        files.append(self.native_dir / f"{self.library}{suffix}")
        if not self.digest_file.is_file() or not all(f.is_file() for f in files):
            return False
        return self.digest_file.read_text().strip() == self.source_digest()

    def load(self, package_path: list[str]) -> bool:
        """Put the build first on the package's path when it is current and pure Python is not
        forced; whether it did."""
        if os.environ.get(PURE_PYTHON_VARIABLE, "") == "1" or not self.is_current():
            return False
        package_path.insert(0, str(self.package_dir))
        sys.path.append(str(self.native_dir))
        return True


def python_files(folder: Path, names: Iterable[str] | None = None) -> tuple[Path, ...]:
    """The folder's Python sources, sorted: those named (without `.py`), or every one below it
    when no names are given (a build's own `_mypyc/` and caches excluded)."""
    if names is not None:
        return tuple(folder / f"{name}.py" for name in names)
    return tuple(
        sorted(
            path
            for path in folder.rglob("*.py")
            if "_mypyc" not in path.parts and "__pycache__" not in path.parts
        )
    )

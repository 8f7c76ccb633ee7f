"""Contract test suites: one per port, subclassed once per adapter."""

import pkgutil

import pytest

# These modules are not test_*.py files, so pytest would not explain their failing asserts.
pytest.register_assert_rewrite(*(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)))
